"""What the app holds for its routes (`app.state`, set by create_app) and what the middleware holds for
one request (`request.state`), read through typed accessors: the one place that knows the names."""

from __future__ import annotations

from starlette.requests import Request

from llmserve.models.registry import ModelRegistry
from llmserve.server.options import ServerOptions
from llmserve.service.anthropic import MessagesService
from llmserve.service.chat import ChatService
from llmserve.service.completions import CompletionService
from llmserve.service.ollama import OllamaService
from llmserve.service.responses import ResponsesService
from llmserve.service.streams import RequestStats
from llmserve.service.v2 import V2Service


def registry_of(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def options_of(request: Request) -> ServerOptions:
    options: ServerOptions = request.app.state.options
    return options


def chat_of(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


def completions_of(request: Request) -> CompletionService:
    service: CompletionService = request.app.state.completions
    return service


def responses_of(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.responses
    return service


def v2_of(request: Request) -> V2Service:
    service: V2Service = request.app.state.v2
    return service


def messages_of(request: Request) -> MessagesService:
    service: MessagesService = request.app.state.messages
    return service


def ollama_of(request: Request) -> OllamaService:
    service: OllamaService = request.app.state.ollama
    return service


def stats_of(request: Request) -> RequestStats:
    """The request's stats for the access log (set by RequestLogMiddleware, which every app has)."""
    stats: RequestStats = request.state.stats
    return stats
