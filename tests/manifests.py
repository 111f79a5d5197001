"""deploy/kubernetes rendered by `kubectl kustomize`, and what the tests read from it: the containers
that run llmserve (the Deployments' and KServe's ServingRuntime's), the image's entrypoint, and the CRD
schemas of tests/data/crd_schemas.json made strict."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from paths import DATA, DEPLOY, ROOT

KUSTOMIZATIONS = ("overlays/cpu", "overlays/gpu", "kserve", "gateway")
CRDS: dict[str, Any] = json.loads((DATA / "crd_schemas.json").read_text())


def kubectl() -> str:
    """kubectl, which the machine image has (Debian's package); under CI its absence fails the test."""
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not installed: the tests render deploy/kubernetes with it")
        pytest.skip("kubectl is not installed")
    return found


def render(directory: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def crd_key(obj: dict[str, Any]) -> str:
    return f"{obj['apiVersion']}/{obj['kind']}"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as the API server's strict field validation (kubectl
    apply's default) refuses them, where the CRD neither allows other keys nor keeps unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@dataclass(frozen=True)
class Container:
    """A container that runs the llmserve image: where it comes from, its arguments after the image's
    entrypoint, its port, and the HTTP probes as (kind, path, port)."""

    source: str
    args: tuple[str, ...]
    port: int
    probes: tuple[tuple[str, str, int], ...]


def containers(objects: list[dict[str, Any]], source: str) -> list[Container]:
    found = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            specs = obj["spec"]["template"]["spec"]["containers"]
        elif obj["kind"] == "ServingRuntime":
            specs = obj["spec"]["containers"]
        else:
            continue
        for spec in specs:
            ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in spec["ports"]}
            probes = []
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if kind in spec:
                    get = spec[kind]["httpGet"]
                    port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
                    probes.append((kind, get["path"], port))
            [port] = set(ports.values())
            found.append(Container(f"{source}:{obj['kind']}", tuple(spec["args"]), port, tuple(probes)))
    return found


def image_command() -> tuple[list[str], list[str], str]:
    """The Dockerfile's ENTRYPOINT, CMD and HEALTHCHECK URL."""
    text = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    url = re.search(r"urlopen\('([^']+)'", text).group(1)  # type: ignore[union-attr]
    return entrypoint, command, url
