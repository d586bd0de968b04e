"""mobilenet-serve: an inference microservice for the MobileNet family."""

__version__ = "0.1.0"
