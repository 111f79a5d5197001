"""The dashboard at `/ui`: static files shipped in the package (llmserve/server/static/), no build step.

The page is plain HTML, CSS and JavaScript modules; everything it shows comes from the API with the
user's key (`/v1/figures/events`, `/v1/models/*`, `/v1/chat/completions`), so the files themselves are
open (no key needed to fetch them) and hold nothing secret. A Content-Security-Policy keeps every
request the page makes on its own origin: no CDN, no external font, nothing leaves the server.
`--no-ui` leaves these routes out.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

PREFIX = "/ui"
AUTH = f"{PREFIX}/auth.json"  # {"key_required": bool}: whether the page must ask for a key first
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so that an upgraded server serves its own page
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the dashboard: name -> (content, media type)."""
    found: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("llmserve.server").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            found[entry.name] = (entry.read_bytes(), TYPES[suffix])
    return found


def open_paths(files: dict[str, tuple[bytes, str]]) -> frozenset[str]:
    """The paths served without an API key: the page asks for the key itself."""
    if not files:
        return frozenset()
    return frozenset({PREFIX, f"{PREFIX}/", AUTH, *(f"{PREFIX}/{name}" for name in files)})


def _endpoint(content: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return Response(content, media_type=media_type, headers=HEADERS)

    return serve


def routes(files: dict[str, tuple[bytes, str]], key_required: bool) -> list[BaseRoute]:
    """The dashboard's routes; none without files (--no-ui)."""
    if not files:
        return []
    auth = json.dumps({"key_required": key_required}).encode()

    async def to_index(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    index = files["index.html"]
    out: list[BaseRoute] = [
        Route(PREFIX, to_index, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/", _endpoint(*index), methods=["GET", "HEAD"]),
        Route(AUTH, _endpoint(auth, "application/json"), methods=["GET"]),
    ]
    out += [
        Route(f"{PREFIX}/{name}", _endpoint(*file), methods=["GET", "HEAD"]) for name, file in files.items()
    ]
    return out
