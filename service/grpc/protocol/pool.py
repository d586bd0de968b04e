"""The descriptor pool of this package's generated modules (regenerate.py says why it is not the default one)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
