"""The HTTP layer: the only package that imports Starlette."""

from llmserve.server.app import create_app
from llmserve.server.options import ServerOptions

__all__ = ["ServerOptions", "create_app"]
