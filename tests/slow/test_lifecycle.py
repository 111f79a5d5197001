"""The slow tier for the memory budget, on the real SmolLM2: two entries of the same GGUF file under a
budget that holds one; the estimate from the GGUF header admits the first, the second evicts it, and
both answer."""

from __future__ import annotations

import dataclasses

import pytest
from model_configs import require_smollm2
from smollm2_gguf import default_config_on_transformers
from starlette.testclient import TestClient

from llmserve.config.sizes import parse_budget
from llmserve.models.residency import Residency
from llmserve.server import create_app

pytestmark = pytest.mark.slow
BODY = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}


def test_two_smollm2_entries_under_a_budget_for_one() -> None:
    require_smollm2()
    base = default_config_on_transformers()[0]
    models = [dataclasses.replace(base, api_id=name, label=name, dtype="bfloat16") for name in ("a", "b")]
    residency = Residency(budget=parse_budget("cpu=600MiB"))
    with TestClient(create_app(models, "a", preload="none", residency=residency)) as client:
        for name in ("a", "b"):
            body = client.post("/v1/chat/completions", json={**BODY, "model": name}).json()
            assert "Paris" in body["choices"][0]["message"]["content"]
        cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
        assert (cards["a"]["status"], cards["b"]["status"]) == ("unloaded", "loaded")
        assert 250 * 2**20 < cards["b"]["memory_bytes"] < 300 * 2**20  # 135M weights in bfloat16
        assert residency.evictions == 1 and residency.loaded() == ["b"]
        (used,) = residency.used().values()
        # the measured weights (tensors, or the load's RSS growth when larger); once loaded, a model's KV
        # counts only while its requests reserve it (issue 22), and none runs now
        assert residency.kv_reserved("cpu") == 0
        assert cards["b"]["memory_bytes"] <= used < 600 * 2**20
