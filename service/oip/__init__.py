"""The Open Inference Protocol without its transport: tensors, model lookups, metadata and inference through the
core. V2 over HTTP (service/v2) and over gRPC (service/grpc) are thin layers over it and never import each other.
"""
