"""engine/grammar: a request's schema is compiled once, where the service checks it, and the engine's
guide reuses that grammar."""

from __future__ import annotations

import asyncio
from typing import Any

import llguidance
import pytest

from llmserve.engine.base import Constraint
from llmserve.engine.grammar import compiled, grammar_of
from llmserve.errors import InvalidRequest
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.service.chat import to_generation


@pytest.fixture
def compilations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = llguidance.LLMatcher.grammar_from_json_schema

    def counting(schema: Any, **kwargs: Any) -> str:
        seen.append(str(schema))
        return original(schema, **kwargs)

    monkeypatch.setattr(llguidance.LLMatcher, "grammar_from_json_schema", counting)
    return seen


def test_compiled_keeps_its_grammar(compilations: list[str]) -> None:
    constraint = compiled(Constraint.json_schema({"type": "object"}))
    assert constraint.grammar is not None
    assert compiled(constraint) is constraint
    assert grammar_of(constraint) == constraint.grammar
    assert constraint == Constraint.json_schema({"type": "object"})  # the grammar is not part of equality
    assert len(compilations) == 1


def test_a_bad_schema_is_a_400_when_compiled(compilations: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compiled(Constraint.json_schema({"type": "no-such-type"}))
    assert caught.value.param == "response_format"
    assert caught.value.message.startswith("invalid JSON schema: ")


def test_the_chat_service_compiles_the_schema_once(compilations: list[str]) -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
        }
    )
    _, params, _ = asyncio.run(to_generation(request))
    assert params.constraint is not None and params.constraint.grammar is not None
    assert len(compilations) == 1
    grammar_of(params.constraint)  # what the engine's guide calls
    assert len(compilations) == 1
