"""The web page at `/` and the API docs at `/docs` and `/redoc`, all served from files in the package."""

from .routes import install

__all__ = ["install"]
