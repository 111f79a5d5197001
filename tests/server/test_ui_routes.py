"""The dashboard's routes over HTTP: /ui serves the package's static files with a strict
Content-Security-Policy, open without an API key (the page asks for one), nothing that points off the
server's origin, `--no-ui` leaves it out, and a non-editable install ships the files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import scripted
from model_configs import config
from paths import ROOT
from starlette.testclient import TestClient

from llmserve.cli import build_parser, server_options
from llmserve.server import create_app
from llmserve.server.options import ServerOptions
from llmserve.server.ui import static_files

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
STATIC = ROOT / "llmserve" / "server" / "static"
KEY = "sk-dashboard"


def client(**options: object) -> TestClient:
    app = create_app(
        [config(float("inf"), "m")],
        "m",
        factory=scripted(["a"]),
        preload="none",
        options=ServerOptions(**options),  # type: ignore[arg-type]
    )
    return TestClient(app)


def test_ui_redirects_to_the_page_and_serves_every_file_with_its_type_and_csp() -> None:
    with client() as http:
        response = http.get("/ui", follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (308, "/ui/")
        page = http.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.text == (STATIC / "index.html").read_text()
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
        for path in STATIC.iterdir():
            if path.suffix in types:
                response = http.get(f"/ui/{path.name}")
                assert response.status_code == 200, path.name
                assert response.headers["content-type"] == types[path.suffix]
                assert response.content == path.read_bytes()
        assert http.get("/ui/nope.js").status_code == 404
        assert http.get("/ui/auth.json").json() == {"key_required": False}


def test_every_module_the_page_imports_is_served() -> None:
    """index.html's script and stylesheet and each module's imports name files that exist."""
    names = {p.name for p in STATIC.iterdir()}
    index = (STATIC / "index.html").read_text()
    wanted = set(re.findall(r'(?:src|href)="([\w.]+\.(?:js|css))"', index))
    for script in STATIC.glob("*.js"):
        wanted |= set(re.findall(r'from "\./([\w.]+\.js)"', script.read_text()))
    assert wanted and wanted <= names
    assert set(static_files()) == {p.name for p in STATIC.iterdir() if p.suffix in (".html", ".js", ".css")}


def test_no_file_of_the_page_points_off_the_servers_origin() -> None:
    """No CDN, no external font, no absolute URL: only the SVG namespace, which is a name, not a request."""
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"'`)]*", text)) - {
            "http://www.w3.org/2000/svg"
        }
        assert not urls, (path.name, urls)
        assert "@import" not in text and "url(http" not in text


def test_with_an_api_key_the_page_is_open_and_everything_else_is_not() -> None:
    with client(api_keys=(KEY,)) as http:
        assert http.get("/ui/").status_code == 200
        assert http.get("/ui/app.js").status_code == 200
        assert http.get("/ui/auth.json").json() == {"key_required": True}
        assert http.get("/ui/nope.js").status_code == 401  # an unknown file is no open path
        assert http.get("/v1/figures").status_code == 401
        assert http.get("/v1/figures/events").status_code == 401
        assert http.get("/v1/figures", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_no_ui_leaves_the_routes_out() -> None:
    with client(ui=False) as http:
        assert http.get("/ui/").status_code == 404
        assert http.get("/ui", follow_redirects=False).status_code == 404
        assert http.get("/v1/figures").status_code == 200  # the figures are API, not the page
    with client(ui=False, api_keys=(KEY,)) as http:
        assert http.get("/ui/").status_code == 401  # no open path left behind


@pytest.mark.parametrize(("argv", "ui"), [([], True), (["--no-ui"], False)])
def test_no_ui_flag(argv: list[str], ui: bool) -> None:
    args = build_parser().parse_args(["plain", "-m", "a/b", *argv])
    assert server_options(args).ui is ui
    args = build_parser().parse_args([*argv, "plain", "-m", "a/b"])
    assert server_options(args).ui is ui


def test_the_package_data_ships_the_static_files(tmp_path: Path) -> None:
    """A non-editable install copies package-data only: the glob must cover every file of the page."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in globs["llmserve"] for p in (ROOT / "llmserve").glob(pattern)}
    assert {p for p in STATIC.iterdir() if p.is_file()} <= shipped
