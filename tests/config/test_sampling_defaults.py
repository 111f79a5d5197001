"""Per-model sampling defaults: the config's `sampling`, the model's generation config, the API's defaults,
in that order, for the fields a request leaves out; an explicit value always wins. Observed through the
GenerationParams the engine receives, on /v1/chat/completions, /v1/completions and V2 generate, and in
the model cards."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import ConfiguredEngine, Factory, ScriptedEngine
from model_configs import plain
from starlette.testclient import TestClient
from tiny import reference_greedy

from llmserve.config.entries import EmbeddingSpec, ModelConfig, PlainSpec, load_config
from llmserve.config.sampling import Sampling, SamplingDefaults, from_generation_config
from llmserve.engine import load_engine
from llmserve.engine.base import GenerationParams
from llmserve.errors import ConfigError
from llmserve.models.sequences import fill_defaults
from llmserve.server import create_app

USER = [{"role": "user", "content": "Hello"}]
PIECES = [f"w{i} " for i in range(20)]
# what the fake models' generation configs set
GENERATION = {"temperature": 0.7, "top_p": 0.8, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}
API = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "max_tokens": None,
}


def config_error(tmp_path: Path, sampling: Any, spec: str = "Plain") -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"m": {spec: {"model_id": "org/m"}, "sampling": sampling}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (
            {"temp": 0.2},
            "$.m.sampling.temp: unknown key; valid keys: temperature, top_p, top_k, min_p, "
            "repetition_penalty, max_tokens",
        ),
        ({"temperature": 2.5}, "$.m.sampling.temperature: Input should be less than or equal to 2"),
        ({"temperature": "0.2"}, "$.m.sampling.temperature: expected a number, got a string"),
        ({"temperature": True}, "$.m.sampling.temperature: expected a number, got a boolean"),
        ({"top_p": 0}, "$.m.sampling.top_p: Input should be greater than 0"),
        ({"top_k": 2.5}, "$.m.sampling.top_k: expected an integer, got a number"),
        ({"top_k": -1}, "$.m.sampling.top_k: Input should be greater than or equal to 0"),
        ({"min_p": 1.5}, "$.m.sampling.min_p: Input should be less than or equal to 1"),
        ({"repetition_penalty": 0}, "$.m.sampling.repetition_penalty: Input should be greater than 0"),
        ({"max_tokens": 0}, "$.m.sampling.max_tokens: Input should be greater than or equal to 1"),
        (0.2, "$.m.sampling: expected a JSON object, got a number"),
    ],
)
def test_bad_sampling_is_a_config_error_naming_the_key(tmp_path: Path, sampling: Any, expected: str) -> None:
    assert config_error(tmp_path, sampling) == expected


def test_sampling_is_for_models_that_generate(tmp_path: Path) -> None:
    assert config_error(tmp_path, {"temperature": 0.2}, "Embedding") == (
        "$.m: sampling applies to models that generate text, not to an Embedding model"
    )


def test_sampling_is_read_into_the_model_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    sampling = {
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.1,
        "repetition_penalty": 1,
        "max_tokens": 9,
    }
    path.write_text(json.dumps({"m": {"Plain": {"model_id": "org/m"}, "sampling": sampling}}))
    (model,) = load_config(path)
    assert model.sampling == Sampling(**sampling)
    assert model.sampling is not None and model.sampling.values() == sampling
    path.write_text(json.dumps({"m": {"Plain": {"model_id": "org/m"}}}))
    assert load_config(path)[0].sampling is None


def test_a_generation_config_value_a_request_could_not_send_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = {"temperature": 0.6, "top_p": 1.5, "top_k": "x", "min_p": None, "max_new_tokens": 9}
    assert from_generation_config(raw, "m") == {"temperature": 0.6}
    assert [r.getMessage() for r in caplog.records] == [
        "m: generation_config top_p = 1.5 is ignored: Input should be less than or equal to 1",
        "m: generation_config top_k = 'x' is ignored: Input should be a valid integer",
    ]


def test_precedence_per_field() -> None:
    defaults = SamplingDefaults.of(Sampling(temperature=0.2, max_tokens=5), GENERATION)
    assert defaults.values == {**GENERATION, "temperature": 0.2, "max_tokens": 5}
    assert defaults.sources == {
        "temperature": "config",
        "top_p": "generation_config",
        "top_k": "generation_config",
        "min_p": "generation_config",
        "repetition_penalty": "generation_config",
        "max_tokens": "config",
    }
    bare = SamplingDefaults.of(None, {})
    assert (bare.values, set(bare.sources.values())) == (API, {"api"})
    # only what the request left out changes; an API-sourced field keeps the endpoint's own value
    asked = GenerationParams(temperature=1.0, max_tokens=16, omitted=frozenset({"top_p", "max_tokens"}))
    assert fill_defaults(defaults, asked) == GenerationParams(temperature=1.0, top_p=0.8, max_tokens=5)
    assert fill_defaults(bare, asked) == GenerationParams(temperature=1.0, max_tokens=16)


def model(name: str, sampling: Sampling | None = None) -> ModelConfig:
    return ModelConfig(label=name, api_id=name, spec=PlainSpec(model_id=f"org/{name}"), sampling=sampling)


class Prompted(ScriptedEngine):
    """A scripted model with no generation config that takes raw prompts."""

    def encode_text(self, text: str) -> list[int]:
        return [1] * (len(text.split()) + 1)


def make_engine(config: ModelConfig) -> ScriptedEngine:
    """Model "gen" has a generation config; the others have none."""
    if config.api_id == "gen":
        return ConfiguredEngine(PIECES, GENERATION)
    return Prompted(PIECES)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TestClient, Factory]]:
    factory = Factory(make_engine)
    models = [
        model("gen", Sampling(temperature=0.2, max_tokens=5)),  # config over generation config
        model("bare"),  # the API's defaults
        model("capped", Sampling(max_tokens=3)),
        ModelConfig(label="emb", api_id="emb", spec=EmbeddingSpec(model_id="org/emb")),
    ]
    with TestClient(create_app(models, "gen", factory=factory, preload="none")) as client:
        yield client, factory


def received(factory: Factory, name: str) -> GenerationParams:
    """What the engine of model `name` was given for its last sequence."""
    engine = [e for e, unit in zip(factory.engines, factory.loads, strict=True) if unit == name][-1]
    assert isinstance(engine, ScriptedEngine)
    return engine.params[-1]


def chat(client: TestClient, name: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json={"model": name, "messages": USER, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


EXPLICIT = {"temperature": 1, "top_p": 1, "top_k": 0, "min_p": 0, "repetition_penalty": 1, "max_tokens": 7}


def test_chat_omitted_fields_get_config_then_generation_config_then_api(
    served: tuple[TestClient, Factory],
) -> None:
    client, factory = served
    answer = chat(client, "gen")
    assert received(factory, "gen") == GenerationParams(**{**GENERATION, "temperature": 0.2, "max_tokens": 5})
    assert (answer["choices"][0]["finish_reason"], answer["usage"]["completion_tokens"]) == ("length", 5)
    chat(client, "gen", top_k=3, max_completion_tokens=4)  # explicit: those two only
    expected = GenerationParams(**{**GENERATION, "temperature": 0.2, "top_k": 3, "max_tokens": 4})
    assert received(factory, "gen") == expected
    chat(client, "bare")
    assert received(factory, "bare") == GenerationParams()  # no defaults: the API's, to the context's end
    # null is the same as leaving the field out
    chat(client, "gen", temperature=None, max_tokens=None)
    assert received(factory, "gen") == GenerationParams(**{**GENERATION, "temperature": 0.2, "max_tokens": 5})


def test_an_explicit_value_always_wins_even_the_apis_default(served: tuple[TestClient, Factory]) -> None:
    client, factory = served
    answer = chat(client, "gen", **EXPLICIT)
    assert received(factory, "gen") == GenerationParams(max_tokens=7)  # every field as the request said
    assert answer["usage"]["completion_tokens"] == 7


def test_the_max_tokens_default_caps_a_request_that_omits_it(served: tuple[TestClient, Factory]) -> None:
    client, factory = served
    for stream in (False, True):
        response = client.post(
            "/v1/chat/completions", json={"model": "capped", "messages": USER, "stream": stream}
        )
        assert response.status_code == 200
        assert received(factory, "capped") == GenerationParams(max_tokens=3)
    assert chat(client, "capped")["choices"][0]["message"]["content"] == "w0 w1 w2 "


def test_completions_defaults(served: tuple[TestClient, Factory]) -> None:
    client, factory = served

    def complete(name: str, **body: Any) -> None:
        response = client.post("/v1/completions", json={"model": name, "prompt": "Hi", **body})
        assert response.status_code == 200, response.text

    complete("gen")
    assert received(factory, "gen") == GenerationParams(**{**GENERATION, "temperature": 0.2, "max_tokens": 5})
    complete("bare")
    assert received(factory, "bare") == GenerationParams(max_tokens=16)  # OpenAI's default for this API
    complete("gen", **EXPLICIT)
    assert received(factory, "gen") == GenerationParams(max_tokens=7)


def test_v2_generate_defaults(served: tuple[TestClient, Factory]) -> None:
    client, factory = served
    for path in ("/v2/models/gen/generate", "/v2/models/gen/versions/1/generate"):
        response = client.post(path, json={"text_input": "Hi"})
        assert response.status_code == 200, response.text
        assert received(factory, "gen") == GenerationParams(
            **{**GENERATION, "temperature": 0.2, "max_tokens": 5}
        )
    parameters = {"temperature": 1, "top_p": 1, "top_k": 0, "max_tokens": 2}
    response = client.post("/v2/models/gen/generate", json={"text_input": "Hi", "parameters": parameters})
    assert response.json()["text_output"] == "w0 w1 "
    # V2 takes no min_p or repetition_penalty: those are always the model's
    expected = GenerationParams(max_tokens=2, min_p=0.05, repetition_penalty=1.1)
    assert received(factory, "gen") == expected


def card(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "owned_by": "llmserve",
        "engine": "transformers",
        "quantization": None,
        "expires_at": None,
        "progress": None,
        "version": None,
        "kv_cache": None,  # a scripted engine holds no KV cache
        **fields,
    }


def test_model_cards_show_the_defaults_in_force_and_their_sources() -> None:
    factory = Factory(make_engine)
    models = [
        model("gen", Sampling(temperature=0.2, max_tokens=512)),
        ModelConfig(label="emb", api_id="emb", spec=EmbeddingSpec(model_id="org/emb")),
    ]
    with TestClient(create_app(models, "gen", factory=factory, preload="none")) as client:
        created = client.get("/v1/models").json()["data"][0]["created"]
        before = card(
            "gen",
            created=created,
            status="unloaded",
            memory_bytes=None,
            sampling_defaults={**API, "temperature": 0.2, "max_tokens": 512},
            sampling_sources={**dict.fromkeys(API, "api"), "temperature": "config", "max_tokens": "config"},
        )
        assert client.get("/v1/models/gen").json() == before  # the generation config is read at load
        chat(client, "gen")
        after = card(
            "gen",
            created=created,
            status="loaded",
            memory_bytes=1000,
            sampling_defaults={**GENERATION, "temperature": 0.2, "max_tokens": 512},
            sampling_sources={
                **dict.fromkeys(GENERATION, "generation_config"),
                "temperature": "config",
                "max_tokens": "config",
            },
        )
        assert client.get("/v1/models/gen").json() == after
        emb = card(
            "emb",
            created=created,
            status="unloaded",
            memory_bytes=None,
            sampling_defaults=None,
            sampling_sources=None,
        )
        listed = client.get("/v1/models").json()["data"]
        assert listed == [{**after, "id": "default"}, after, emb]
        assert client.post("/v1/models/unload", json={"model_id": "gen"}).status_code == 200
        unloaded = client.get("/v1/models/gen").json()
        assert unloaded == {**after, "status": "unloaded"}  # still known after an unload


def test_the_transformers_engine_reads_generation_config_json(tiny_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "tiny-gen"
    shutil.copytree(tiny_dir, directory)
    generation = json.loads((directory / "generation_config.json").read_text())
    # temperature 0 makes the model's default greedy: a deterministic effect of its generation config
    sampled = {"do_sample": True, "temperature": 0.0, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.0}
    (directory / "generation_config.json").write_text(json.dumps({**generation, **sampled}))
    app = create_app([plain(directory, "tiny")], "tiny", preload="none")
    with TestClient(app) as client:
        answers = {chat(client, "tiny", max_tokens=8)["choices"][0]["message"]["content"] for _ in range(3)}
        assert answers == {reference_greedy(directory, USER, 8)[0]}
        shown = client.get("/v1/models/tiny").json()
        del sampled["do_sample"]
        assert shown["sampling_defaults"] == {**API, **sampled}
        assert shown["sampling_sources"] == {
            **dict.fromkeys(API, "api"),
            **dict.fromkeys(sampled, "generation_config"),
        }
    engine = load_engine(plain(tiny_dir, "plain"))
    try:
        assert engine.generation_sampling == {}  # type: ignore[attr-defined]  # saved with no sampling values
    finally:
        engine.close()
