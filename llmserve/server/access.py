"""What the request's key may do (`Access`, put on every request's scope by server/tenants.py), and the
checks routes make with it: admin rights, a model's scope, the models a listing shows."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from llmserve.config.keys import KeyEntry, Tenant
from llmserve.errors import AdminRequired, ModelNotAllowed
from llmserve.models.status import ModelStatus
from llmserve.models.usage import ANONYMOUS


@dataclass(frozen=True)
class Access:
    """What the request's key may do. `tenant` None: a server without keys (everyone may do all)."""

    tenant: Tenant | None
    admin: bool
    entry: KeyEntry | None = None  # the keys file's entry, with its limits

    @property
    def name(self) -> str:
        return ANONYMOUS if self.tenant is None else self.tenant.name

    def may_use(self, status: ModelStatus) -> bool:
        return self.tenant is None or self.tenant.may_use(status.api_id, status.unit_id)


OPEN = Access(None, admin=True)  # a server without keys
NOBODY = Access(None, admin=False)  # an open path (health) on a server with keys


def access_of(request: Request) -> Access:
    """The request's access (TenantMiddleware sets it on every request of an app)."""
    access: Access = request.scope.get("state", {}).get("access", NOBODY)
    return access


def require_admin(request: Request) -> None:
    """Raises `AdminRequired` (403) unless the request's key has admin rights."""
    access = access_of(request)
    if not access.admin:
        raise AdminRequired(
            f"{request.method} {request.url.path} needs a key with admin rights; the key of "
            f"'{access.name}' has none (\"admin\": true in the keys file)"
        )


def check_model(request: Request, status: ModelStatus, name: str | None = None) -> ModelStatus:
    """`status`, when the request's key may use that model; else `ModelNotAllowed` (403)."""
    access = access_of(request)
    if not access.may_use(status):
        raise ModelNotAllowed(name or status.unit_id, access.name)
    return status


def check_name(request: Request, api_id: str) -> None:
    """The request's key may use a model of this API id (one that may not exist yet); else 403."""
    tenant = access_of(request).tenant
    if tenant is not None and not tenant.may_use(api_id, api_id):
        raise ModelNotAllowed(api_id, tenant.name)
