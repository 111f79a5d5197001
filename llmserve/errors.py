"""The one exception hierarchy of llmserve.

Every layer raises these; `server/app.py` holds the single handler that turns them into OpenAI's error
JSON (`{"error": {"message", "type", "param", "code"}}`). Nothing here imports anything heavy.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LLMServeError(Exception):
    """Base of every error llmserve reports to a client. Subclasses fix status, type and code."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI `ErrorResponse` body, all four keys present."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(LLMServeError):
    """A malformed body, a missing or mistyped field, an out-of-range or unsupported value."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    """The prompt leaves no room to generate in the model's context (or KV cache budget). OpenAI's code
    for it, which clients such as Codex read to compact a conversation and try again."""

    code = "context_length_exceeded"


class ModelNotFound(LLMServeError):
    """The request names a model this server does not have."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model_id: str, available: list[str]) -> None:
        listing = ", ".join(available) if available else "none"
        super().__init__(
            f"The model '{model_id}' does not exist. Available models: default, {listing}.", param="model"
        )
        self.model_id = model_id


class StatusOfUnknownModel(ModelNotFound):
    """`POST /v1/models/status` of an unknown id: the 404 `model_not_found` error, with the seed's own
    answer (`"model_id"`, `"status": "not_found"`) beside it, so that both kinds of client read it."""

    def __init__(self, model_id: str, missing: ModelNotFound) -> None:
        LLMServeError.__init__(self, missing.message, param=missing.param)
        self.model_id = model_id

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "status": "not_found", **super().to_dict()}


class RouteNotFound(LLMServeError):
    """No endpoint at this path (or not with this method)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ResponseNotFound(LLMServeError):
    """A stored response (Responses API) that is not there: never stored, deleted, expired, or forgotten
    by a restart."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"

    def __init__(self, response_id: str, *, param: str | None = None) -> None:
        super().__init__(f"Response with id '{response_id}' not found.", param=param)


class InvalidAPIKey(LLMServeError):
    """No API key, or a wrong one, on a server started with --api-key."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(LLMServeError):
    """The server's options do not allow this (e.g. registering models without --allow-runtime-models)."""

    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class ModelNotAllowed(LLMServeError):
    """The request's key may not use this model (its entry's `models` in the keys file)."""

    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"

    def __init__(self, model_id: str, tenant: str) -> None:
        super().__init__(f"the key of '{tenant}' may not use the model '{model_id}'", param="model")
        self.model_id = model_id


class AdminRequired(Forbidden):
    """Loading, unloading, promoting and registering models, usage of every tenant, metrics and
    reloading the keys need a key with admin rights."""

    code = "admin_required"


class RateLimited(LLMServeError):
    """A key's quota is used up (requests per minute); retry after `retry_after` seconds."""

    status = 429
    type = "requests"  # as OpenAI's 429s say which limit it was: "requests" or "tokens"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokensRateLimited(RateLimited):
    """The key's tokens per minute are used up."""

    type = "tokens"


class ConcurrencyLimited(RateLimited):
    """The key has `max_concurrent` requests in flight already."""

    code = "concurrency_limit_exceeded"


class RequestTooLarge(LLMServeError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class MethodNotAllowed(LLMServeError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class ModelLoadFailed(LLMServeError):
    """Loading the model's weights or tokenizer failed; the next request tries again."""

    status = 500
    type = "server_error"
    code = "model_load_failed"


class ModelTooLarge(LLMServeError):
    """The model needs more memory on a device than the whole `--memory-budget` allows there."""

    status = 400
    type = "invalid_request_error"
    code = "model_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class InternalError(LLMServeError):
    """The model code failed while generating, or an unexpected fault in llmserve itself."""


class Overloaded(LLMServeError):
    """The server cannot take the request now; the client should retry after `retry_after` seconds."""

    status = 503
    type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(Overloaded):
    """The server is stopping: no new work, and what outlives the drain is stopped."""

    def __init__(self, message: str = "the server is shutting down") -> None:
        super().__init__(message, retry_after=5)


class ReplicaUnavailable(Overloaded):
    """`llmserve ray`: no replica could take the request (one died and Ray is replacing it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=2)


class ConfigError(Exception):
    """A bad config file or command line. The CLI prints it as one line and exits with code 2."""
