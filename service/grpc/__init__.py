"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, Triton's service) on --grpc-port.

A thin layer over service/oip, as service/v2 is for HTTP; the two never import each other.
"""

from .server import GrpcServer

__all__ = ["GrpcServer"]
