"""Wire types of `GET /v1/usage`, `GET /admin/usage` and `POST /admin/keys/reload` (server/admin.py):
what each tenant used over the last minute, the last hour and since start, in total and per model, with
its key's limits. They shape the responses and describe them in /openapi.json. Imports nothing heavy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Counts(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int  # prompt + completion


class Spans(BaseModel):
    last_minute: Counts
    last_hour: Counts  # in one-minute buckets
    since_start: Counts


class TenantLimits(BaseModel):
    """The keys file's entry; None: no limit."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    in_flight: int  # requests running now


class TenantUsage(Spans):
    """`requests`: every request of the tenant (what requests_per_minute counts); per model, the requests
    that reached the model (by unit id, `ID@VERSION` for versioned models)."""

    rate_limited: int  # 429s since start
    forbidden: int  # 403s since start
    limits: TenantLimits | None  # None: no keys file entry (an --api-key key, or a server without keys)
    models: dict[str, Spans]


class UsageReport(BaseModel):
    object: Literal["usage"]
    started_at: int  # unix seconds
    tenants: dict[str, TenantUsage]


class KeysReloaded(BaseModel):
    object: Literal["keys"]
    source: str  # the keys file
    tenants: list[str]  # the tenants now in force
