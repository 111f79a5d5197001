"""The HTTP layer: the only package that imports Starlette."""

from llmserve.server.app import create_app

__all__ = ["create_app"]
