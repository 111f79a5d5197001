"""deploy/kubernetes without a cluster: every kustomization renders, every built-in object validates
against the Kubernetes schemas (kubernetes-validate, strict) and every custom one against its CRD's own
schema (tests/data/crd_schemas.json); the probes and ports of every container that runs llmserve, and
the image's HEALTHCHECK, are answered 200 by a live llmserve started with the manifest's own arguments;
the metrics the manifests name are on its /metrics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from manifests import CRDS, KUSTOMIZATIONS, Container, containers, crd_key, image_command, render, strict
from model_configs import write_config
from paths import DEPLOY
from prometheus_client.parser import text_string_to_metric_families
from servers import llmserve_process

from llmserve.server.metrics import LORA_LABELS

KUBERNETES = ("1.30.0", "1.37.0")  # the oldest with preStop's sleep action, and kubernetes-validate's newest
CONFIGS = ("/etc/llmserve/config.json", "/models/config.json", "/mnt/models/config.json")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {directory: render(directory) for directory in KUSTOMIZATIONS}


def test_every_kustomization_renders_what_it_should(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d: sorted(o["kind"] for o in objects) for d, objects in rendered.items()}
    assert kinds == {
        "overlays/cpu": ["ConfigMap", "Deployment", "Service", "ServiceMonitor"],
        "overlays/gpu": [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "Service",
            "ServiceMonitor",
        ],
        "kserve": ["InferenceService", "ServingRuntime"],
        "gateway": ["ConfigMap", "HTTPRoute", "InferencePool"],
    }
    # the Service, the ServiceMonitor and the InferencePool select the Deployment's pods
    cpu = {o["kind"]: o for o in rendered["overlays/cpu"]}
    pods = cpu["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        cpu["Service"]["spec"]["selector"],
        cpu["ServiceMonitor"]["spec"]["selector"]["matchLabels"],
        next(o for o in rendered["gateway"] if o["kind"] == "InferencePool")["spec"]["selector"][
            "matchLabels"
        ],
    ):
        assert selector.items() <= pods.items()


@pytest.mark.parametrize("version", KUBERNETES)
def test_built_in_objects_validate_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], version: str
) -> None:
    built_in = [o for objects in rendered.values() for o in objects if crd_key(o) not in CRDS]
    assert len(built_in) == 9
    for obj in built_in:
        kubernetes_validate.validate(obj, version, strict=True)
    broken = copy.deepcopy(next(o for o in built_in if o["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_custom_objects_validate_against_their_crds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    custom = [o for objects in rendered.values() for o in objects if crd_key(o) in CRDS]
    assert sorted(o["kind"] for o in custom) == [
        "HTTPRoute",
        "InferencePool",
        "InferenceService",
        "ServiceMonitor",
        "ServiceMonitor",
        "ServingRuntime",
    ]
    validators = {key: jsonschema.Draft7Validator(strict(CRDS[key])) for key in {crd_key(o) for o in custom}}
    for obj in custom:
        validators[crd_key(obj)].validate(obj)
    pool = copy.deepcopy(next(o for o in custom if o["kind"] == "InferencePool"))
    pool["spec"]["targetPort"] = pool["spec"].pop("targetPorts")  # a misspelt field is refused
    with pytest.raises(jsonschema.ValidationError):
        validators[crd_key(pool)].validate(pool)


def llmserve_containers(rendered: dict[str, list[dict[str, Any]]]) -> list[Container]:
    found = [c for d, objects in rendered.items() for c in containers(objects, d)]
    assert sorted(c.source for c in found) == [
        "kserve:ServingRuntime",
        "overlays/cpu:Deployment",
        "overlays/gpu:Deployment",
    ]
    return found


def test_every_container_listens_where_the_image_listens(rendered: dict[str, list[dict[str, Any]]]) -> None:
    entrypoint, _, url = image_command()
    port = int(entrypoint[entrypoint.index("--port") + 1])
    assert url.startswith(f"http://127.0.0.1:{port}/")
    for container in llmserve_containers(rendered):
        assert container.port == port, container
        assert {kind for kind, _, _ in container.probes} >= {"readinessProbe", "livenessProbe"}
        assert all(probe_port == port for _, _, probe_port in container.probes), container


@pytest.fixture(scope="module")
def answers(
    rendered: dict[str, list[dict[str, Any]]], tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, ...], dict[str, Any]]:
    """For each distinct argument list (the manifests' and the image's CMD), a live llmserve started with
    it, the config path pointing at a tiny model's config and the API key the Secret would give: the
    status of each probe path and of the image's HEALTHCHECK, and /metrics without a key."""
    config = write_config(tmp_path_factory.mktemp("deploy"), {"tiny": tiny_dir})
    _, command, health = image_command()
    paths = {path for c in llmserve_containers(rendered) for _, path, _ in c.probes}
    paths.add("/" + health.split("/", 3)[3])
    arg_lists = {c.args for c in llmserve_containers(rendered)} | {tuple(command)}
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMSERVE_API_KEY", "the-secret")
        for args in sorted(arg_lists):
            assert sum(a in CONFIGS for a in args) == 1, args
            local = [str(config) if a in CONFIGS else a for a in args]
            with llmserve_process(*local) as (base, _):
                statuses = {path: httpx.get(base + path).status_code for path in sorted(paths)}
                metrics = httpx.get(f"{base}/metrics")
                found[args] = {"probes": statuses, "metrics": metrics.status_code, "text": metrics.text}
    return found


def test_every_probe_is_answered_by_llmserve_with_the_manifests_arguments(
    rendered: dict[str, list[dict[str, Any]]], answers: dict[tuple[str, ...], dict[str, Any]]
) -> None:
    _, command, health = image_command()
    for container in llmserve_containers(rendered):
        for kind, path, _ in container.probes:
            assert answers[container.args]["probes"][path] == 200, (container.source, kind, path)
        # scrapers (Prometheus, the endpoint picker) send no key: --open-metrics lets them in
        assert answers[container.args]["metrics"] == 200, container.source
    assert answers[tuple(command)]["probes"]["/" + health.split("/", 3)[3]] == 200


def test_the_metrics_the_manifests_name_are_on_metrics(
    rendered: dict[str, list[dict[str, Any]]], answers: dict[tuple[str, ...], dict[str, Any]]
) -> None:
    [cpu] = [c for c in llmserve_containers(rendered) if c.source.startswith("overlays/cpu")]
    families = {f.name: f for f in text_string_to_metric_families(answers[cpu.args]["text"])}
    picker = yaml.safe_load((DEPLOY / "gateway" / "endpoint-picker-config.yaml").read_text())
    [extractor] = [p for p in picker["plugins"] if p["type"] == "core-metrics-extractor"]
    [engine] = extractor["parameters"]["engineConfigs"]
    named = {spec for key, spec in engine.items() if key.endswith("Spec") and spec}
    adapter = yaml.safe_load(
        (DEPLOY / "components" / "autoscaling" / "prometheus-adapter-rules.yaml").read_text()
    )
    [rule] = adapter["rules"]["custom"]
    named.add(rule["seriesQuery"].split("{")[0])
    assert named == {
        "llmserve:num_requests_waiting",
        "llmserve:num_requests_running",
        "llmserve:kv_cache_usage_perc",
        "llmserve:lora_requests_info",
    }
    assert named <= set(families)
    [info] = families["llmserve:lora_requests_info"].samples
    assert set(info.labels) == set(LORA_LABELS)
    assert info.labels["max_lora"] == "1"  # the tiny config's one model
    # the HPA scales on the adapter's name for it; the scrape paths are /metrics
    hpa = next(o for o in rendered["overlays/gpu"] if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]
    monitor = next(o for o in rendered["overlays/cpu"] if o["kind"] == "ServiceMonitor")
    runtime = next(o for o in rendered["kserve"] if o["kind"] == "ServingRuntime")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert picker["plugins"][0]["parameters"]["path"] == "/metrics"
