"""schemathesis against llmserve's own /openapi.json (generated from the wire types), on a live server
with a tiny model: zero 5xx and zero responses that violate the document, on every operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import live_server, plain
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from llmserve.server import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(tiny_dir: Path) -> Iterator[Any]:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="default")
    with live_server(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
