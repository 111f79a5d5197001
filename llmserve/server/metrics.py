"""`GET /metrics`: Prometheus text format, per model and version.

Counters and histograms are updated as things happen (state changes from the workers' threads, finished
requests from the access-log middleware); gauges (state, queue, running, memory) are read from the
registry at scrape time. Each app has its own `CollectorRegistry`: no process-wide state.

The pod-wide gauges named `llmserve:*` are the model-server protocol of the Gateway API Inference Extension
(its docs/proposals/003-model-server-protocol: vLLM's names with llmserve's prefix, the LoRA info metric's
labels), which its endpoint picker scrapes to route a request to a pod with room and with the requested
model already in memory (deploy/kubernetes/gateway/ configures it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from llmserve.models.registry import DEFAULT_ALIAS, ModelRegistry
from llmserve.models.status import ModelState, ModelStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOAD = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LABELS = ("model", "version")
REQUEST_LABELS = (*LABELS, "endpoint")  # endpoint: the route's path template, e.g. /v1/chat/completions


def labels(status: ModelStatus) -> tuple[str, str]:
    return status.api_id, status.version_label


class _Live(Collector):
    """The gauges, read when Prometheus scrapes."""

    def __init__(self, registry: ModelRegistry, changed_at: Callable[[], float]) -> None:
        self._registry = registry
        self._changed_at = changed_at

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "llmserve_model_state", "1 for the state the model is in", labels=[*LABELS, "state"]
        )
        waiting = GaugeMetricFamily("llmserve_queue_depth", "requests waiting to start", labels=LABELS)
        running = GaugeMetricFamily("llmserve_running_sequences", "sequences decoding", labels=LABELS)
        memory = GaugeMetricFamily(
            "llmserve_model_memory_bytes", "weights in memory (0 when unloaded)", labels=LABELS
        )
        kv_tokens = GaugeMetricFamily(
            "llmserve_kv_cache_tokens",
            "KV cache tokens of a loaded model: its budget, reserved by admitted requests, held now",
            labels=[*LABELS, "kind"],
        )
        kv_use = GaugeMetricFamily(
            "llmserve_kv_cache_utilisation",
            "KV cache tokens reserved over the budget (0 to 1)",
            labels=LABELS,
        )
        for status in self._registry.statuses():
            names = labels(status)
            if status.kv is not None:
                kv = status.kv
                for kind, value in (
                    ("budget", kv.budget_tokens),
                    ("reserved", kv.reserved_tokens),
                    ("held", kv.held_tokens),
                ):
                    kv_tokens.add_metric([*names, kind], float(value))
                kv_use.add_metric(list(names), kv.utilisation)
            for each in ModelState:
                state.add_metric([*names, each.value], 1.0 if status.state is each else 0.0)
            waiting.add_metric(list(names), float(status.queue_depth))
            running.add_metric(list(names), float(status.running))
            memory.add_metric(list(names), float(status.memory_bytes or 0) if status.in_memory else 0.0)
        yield from (state, waiting, running, memory, kv_tokens, kv_use)
        yield from gateway_gauges(self._registry, self._changed_at())


def gateway_gauges(registry: ModelRegistry, changed_at: float) -> Iterator[GaugeMetricFamily]:
    """The model-server protocol's gauges, for the whole server: requests waiting and running, KV cache
    utilisation (the fullest loaded model's reservations over its budget, 0 to 1: a request for it waits
    when it is full, and budgets derived from the same free memory overlap, so a sum would overstate the
    room), and the LoRA info metric with the loaded models as `running_lora_adapters` (its value: when the
    set of models in memory last changed, as the protocol asks)."""
    statuses = registry.statuses()
    for name, text, value in (
        (
            "llmserve:num_requests_waiting",
            "requests waiting, all models",
            sum(s.queue_depth for s in statuses),
        ),
        ("llmserve:num_requests_running", "sequences decoding, all models", sum(s.running for s in statuses)),
        (
            "llmserve:kv_cache_usage_perc",
            "KV cache reserved over budget of the fullest loaded model (0 to 1)",
            max((s.kv.utilisation for s in statuses if s.kv is not None and s.in_memory), default=0.0),
        ),
    ):
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], float(value))
        yield gauge
    running, waiting = resident_names(registry, statuses)
    limit = registry.residency.max_loaded if registry.residency is not None else None
    info = GaugeMetricFamily(
        "llmserve:lora_requests_info",
        "models in memory (running_lora_adapters) and waiting to load; value: when that last changed",
        labels=list(LORA_LABELS),
    )
    info.add_metric([str(limit or len(statuses)), ",".join(running), ",".join(waiting)], changed_at)
    yield info


LORA_LABELS = ("max_lora", "running_lora_adapters", "waiting_lora_adapters")


def resident_names(registry: ModelRegistry, statuses: list[ModelStatus]) -> tuple[list[str], list[str]]:
    """The names a request may give for the models in memory (unit id; the API id too for its default
    version; `default` for the default model), and those of models with requests waiting for a load."""
    running: list[str] = []
    waiting: list[str] = []
    default_unit = registry.resolve(None).unit_id
    for status in statuses:
        names = [status.unit_id]
        if status.unit_id != status.api_id and registry.resolve(status.api_id).unit_id == status.unit_id:
            names.append(status.api_id)
        if status.unit_id == default_unit:
            names.append(DEFAULT_ALIAS)
        if status.state is ModelState.LOADED:
            running += names
        elif status.queue_depth:
            waiting += names
    return running, waiting


class _Tenants(Collector):
    """Per tenant (its name, never its key): requests, tokens per model, 429s and 403s, read from the
    registry's `Usage` at scrape time (counted as they happen)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[CounterMetricFamily]:
        tenant = ["tenant"]
        requests = CounterMetricFamily(
            "llmserve_tenant_requests", "requests of the tenant's key", labels=tenant
        )
        reached = CounterMetricFamily(
            "llmserve_tenant_model_requests", "requests that reached a model", labels=[*tenant, *LABELS]
        )
        tokens = CounterMetricFamily(
            "llmserve_tenant_tokens",
            "tokens as they happen: the prompt at admission, each generated token",
            labels=[*tenant, *LABELS, "kind"],
        )
        limited = CounterMetricFamily("llmserve_tenant_rate_limited", "429 responses", labels=tenant)
        forbidden = CounterMetricFamily("llmserve_tenant_forbidden", "403 responses", labels=tenant)
        for name, totals in self._registry.usage.totals().items():
            requests.add_metric([name], float(totals.requests))
            limited.add_metric([name], float(totals.rate_limited))
            forbidden.add_metric([name], float(totals.forbidden))
            for unit, tally in totals.models.items():
                status = self._registry.unit(unit)
                names = [name, *(labels(status) if status is not None else (unit, ""))]
                reached.add_metric(names, float(tally.requests))
                tokens.add_metric([*names, "prompt"], float(tally.prompt_tokens))
                tokens.add_metric([*names, "completion"], float(tally.completion_tokens))
        yield from (requests, reached, tokens, limited, forbidden)


@dataclass
class Served:
    """What one model version has served since the server started (the figures of /v1/figures)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_total: float = 0.0  # seconds, over `ttft_count` requests
    ttft_count: int = 0


class Metrics:
    def __init__(self, registry: ModelRegistry) -> None:
        self.prometheus = CollectorRegistry()
        self._registry = registry
        self.served: dict[str, Served] = {}  # by unit id; read and written on the event loop
        r = self.prometheus
        self.loads = Counter("llmserve_model_loads", "completed loads", LABELS, registry=r)
        self.unloads = Counter(
            "llmserve_model_unloads", "unloads, by reason", [*LABELS, "reason"], registry=r
        )
        self.load_failures = Counter("llmserve_model_load_failures", "failed loads", LABELS, registry=r)
        self.load_seconds = Histogram(
            "llmserve_model_load_seconds", "load time", LABELS, buckets=_LOAD, registry=r
        )
        self.requests = Counter("llmserve_requests", "finished generations", REQUEST_LABELS, registry=r)
        self.prompt_tokens = Counter("llmserve_prompt_tokens", "prompt tokens", REQUEST_LABELS, registry=r)
        self.generation_tokens = Counter(
            "llmserve_generation_tokens", "generated tokens", REQUEST_LABELS, registry=r
        )
        self.ttft = Histogram(
            "llmserve_time_to_first_token_seconds",
            "request to first token",
            REQUEST_LABELS,
            buckets=_LATENCY,
            registry=r,
        )
        self.e2e = Histogram(
            "llmserve_request_duration_seconds",
            "request to last byte",
            REQUEST_LABELS,
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_wait = Histogram(
            "llmserve_tenant_queue_wait_seconds",
            "a request's wait in its model's queue, by tenant",
            ["tenant"],
            buckets=_LATENCY,
            registry=r,
        )
        self.changed_at = time.time()  # when a model last changed state (the gateway's LoRA info)
        r.register(_Live(registry, lambda: self.changed_at))
        r.register(_Tenants(registry))
        registry.usage.on_wait.append(lambda tenant, seconds: self.queue_wait.labels(tenant).observe(seconds))
        registry.observers.append(self.on_state)

    def on_state(self, status: ModelStatus, previous: ModelState) -> None:
        """A state change (`status`: the snapshot taken at the change), on the worker's thread."""
        self.changed_at = time.time()
        names = labels(status)
        if status.state is ModelState.LOADED:
            self.loads.labels(*names).inc()
            if status.load_seconds is not None:
                self.load_seconds.labels(*names).observe(status.load_seconds)
        elif status.state is ModelState.FAILED and previous is ModelState.LOADING:
            self.load_failures.labels(*names).inc()
        elif status.state is ModelState.UNLOADED and previous is ModelState.UNLOADING:
            self.unloads.labels(*names, status.reason or "unload").inc()

    def request_done(
        self,
        unit: str,
        endpoint: str,
        prompt: int | None,
        generated: int | None,
        ttft: float | None,
        total: float,
    ) -> None:
        """A request that reached a model ended (`unit`: the model version's unit id; `endpoint`: the
        path template of the route that took it)."""
        status = self._registry.unit(unit)
        if status is None:
            return
        names = (*labels(status), endpoint)
        self.requests.labels(*names).inc()
        self.prompt_tokens.labels(*names).inc(prompt or 0)
        self.generation_tokens.labels(*names).inc(generated or 0)
        if ttft is not None:
            self.ttft.labels(*names).observe(ttft)
        self.e2e.labels(*names).observe(total)
        served = self.served.setdefault(unit, Served())
        served.requests += 1
        served.prompt_tokens += prompt or 0
        served.completion_tokens += generated or 0
        if ttft is not None:
            served.ttft_total += ttft
            served.ttft_count += 1

    def render(self) -> bytes:
        return generate_latest(self.prometheus)
