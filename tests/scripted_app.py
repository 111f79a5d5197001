"""The real app on scripted engines (fakes.py): under --max-loaded-models / --memory-budget with a
TestClient, and on a live server for the V2 tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from fakes import Factory, ScriptedEngine
from model_configs import config
from servers import live_server
from starlette.testclient import TestClient

from llmserve.config.entries import ModelConfig
from llmserve.config.sizes import Budget
from llmserve.engine.footprint import Estimate
from llmserve.models.residency import Residency
from llmserve.server import create_app
from llmserve.server.options import ServerOptions


@contextmanager
def serving(
    *names: str,
    limit: int | None = 1,
    wait: float = 5.0,
    step_delay: float = 0.0,
    evict_pinned: bool = False,
    pinned: tuple[str, ...] = (),
    engine: type[ScriptedEngine] = ScriptedEngine,
    min_resident: float = 0.0,
    budget: Budget | None = None,
    sizes: dict[str, int] | None = None,
    estimates: dict[str, int] | None = None,
    max_batch_size: int = 64,
    options: ServerOptions | None = None,
) -> Iterator[tuple[TestClient, Factory, Residency]]:
    """Scripted models `names`; `sizes`: what each one's engine measures (default 1000 bytes on the CPU),
    `estimates`: what its files say before a load (default: its size); `options`: the server's."""
    sizes = sizes or {}
    models = [
        dataclasses.replace(
            config(-1, n),
            keep_alive=float("inf"),
            pinned=n in pinned,
            min_resident=min_resident,
            max_batch_size=max_batch_size,
        )
        for n in names
    ]
    pieces = ["a", "b", "c", "d"]
    factory = Factory(lambda c: engine(pieces, step_delay=step_delay, memory=sizes.get(c.api_id, 1000)))
    guesses = {**{n: sizes.get(n, 1000) for n in names}, **(estimates or {})}

    def estimator(config: ModelConfig) -> Estimate:
        return Estimate(weights={"cpu": guesses[config.api_id]}, kv_reserve={})

    residency = Residency(limit, budget=budget, wait=wait, evict_pinned=evict_pinned)
    app = create_app(
        models,
        names[0],
        factory=factory,
        preload="none",
        residency=residency,
        estimator=estimator,
        options=options,
    )
    with TestClient(app) as client:
        yield client, factory, residency


@contextmanager
def v2_server(*models: ModelConfig, factory: Factory | None = None) -> Iterator[tuple[str, Factory]]:
    factory = factory or Factory(lambda c: ScriptedEngine(["a", "b"]))
    app = create_app(list(models), models[0].api_id, factory=factory, preload="none")
    with live_server(app) as base:
        yield base, factory
