"""Tool calling: tools offered through the chat template (or the Hermes system message when the template
has none), calls parsed from the output, `required` and named functions forced by constrained decoding
so that even a random-weight model's call parses and validates; history with tool messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from model_configs import plain
from starlette.testclient import TestClient
from tiny import long_context_copy
from tool_specs import TIME, WEATHER
from wire import assert_schema, sse_data

from llmserve.engine.base import ChatMessage
from llmserve.engine.templates import plain_messages
from llmserve.errors import InvalidRequest
from llmserve.server import create_app
from llmserve.service.tools import ToolPlan, parse_calls, plan

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS_TEMPLATE = (
    "{% if tools %}<|tools|>{% for t in tools %}{{ t | tojson }}{% endfor %}\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_plans() -> None:
    assert plan(None, None, None) is None
    assert plan([WEATHER], "none", None) is None
    auto = plan([WEATHER, TIME], None, None)
    assert (
        auto is not None and not auto.forced and auto.parallel and auto.names == {"get_weather", "get_time"}
    )
    named = plan([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}}, None)
    assert named == ToolPlan((TIME,), True, False)
    for tools, choice, message in [
        ([WEATHER, WEATHER], None, "tool function names must be unique"),
        ([], "required", "tool_choice 'required' needs 'tools'"),
        ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "tool_choice names no function"),
        ([WEATHER], "sometimes", "tool_choice must be 'none', 'auto', 'required' or a named function"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": "x"}}],
            None,
            "tools[0].function.parameters",
        ),
    ]:
        with pytest.raises(InvalidRequest, match=re.escape(message)):
            plan(tools, choice, None)


def test_parsing_calls_from_output() -> None:
    auto = ToolPlan((WEATHER, TIME), False, True)
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'
    content, calls = parse_calls(text, auto)
    assert content == "Let me check."
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris", "unit": "C"})
    ]
    assert calls[0]["id"].startswith("call_")
    two = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call><tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    assert len(parse_calls(two, auto)[1]) == 2
    assert len(parse_calls(two, ToolPlan((WEATHER, TIME), False, False))[1]) == 1  # parallel_tool_calls false
    assert parse_calls('{"name": "get_time", "arguments": {}}', auto)[0] is None  # the whole output is a call
    for plain_text in (
        "Sunny, 20 degrees.",
        '<tool_call>{"name": "unknown", "arguments": {}}</tool_call>',
        "<tool_call>{oops</tool_call>",
    ):
        assert parse_calls(plain_text, auto) == (plain_text, [])


def test_hermes_rendering_for_templates_without_tools() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    rendered = plain_messages(
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "Sunny", tool_call_id="call_1"),
        ],
        (WEATHER,),
    )
    assert rendered[0]["role"] == "system" and rendered[0]["content"].startswith(
        "Be brief.\n\nYou may call functions"
    )
    assert json.dumps(WEATHER) in rendered[0]["content"]
    assert rendered[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    }
    assert rendered[3] == {"role": "user", "content": "<tool_response>\nSunny\n</tool_response>"}


@pytest.fixture(scope="module")
def client(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models")
    hermes = long_context_copy(tiny_dir, root / "no-tools-template")
    with_tools = long_context_copy(tiny_dir, root / "tools-template")
    (with_tools / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    app = create_app([plain(hermes, "tiny"), plain(with_tools, "toolish")], "tiny", preload="none")
    with TestClient(app) as test_client:
        yield test_client


def chat(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 80, **body})
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        assert_schema("CreateChatCompletionResponse", response.json())
    return response


@pytest.mark.parametrize("seed", range(4))
def test_required_forces_a_call_that_validates(client: TestClient, seed: int) -> None:
    body = chat(client, tools=[WEATHER, TIME], tool_choice="required", temperature=1.0, seed=seed).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    arguments = json.loads(call["function"]["arguments"])
    if call["function"]["name"] == "get_weather":
        jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    else:
        assert call["function"]["name"] == "get_time" and isinstance(arguments, dict)


def test_a_named_function_is_the_one_called(client: TestClient) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = chat(client, tools=[WEATHER, TIME], tool_choice=choice, temperature=0).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])  # type: ignore[index]


def test_streamed_tool_calls(client: TestClient) -> None:
    response = chat(client, tools=[WEATHER], tool_choice="required", temperature=0, stream=True)
    chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    calls = [
        c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(calls) == 1 and calls[0][0]["index"] == 0 and calls[0][0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tools_reach_the_template_or_the_system_message(client: TestClient) -> None:
    for model in ("toolish", "tiny"):  # a template with tools; one without (Hermes system message)
        bare = chat(client, model=model, max_tokens=1).json()["usage"]["prompt_tokens"]
        offered = chat(client, model=model, max_tokens=1, tools=[WEATHER]).json()["usage"]["prompt_tokens"]
        hidden = chat(client, model=model, max_tokens=1, tools=[WEATHER], tool_choice="none").json()
        assert offered > bare and hidden["usage"]["prompt_tokens"] == bare


def test_history_with_calls_and_results(client: TestClient) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
    }
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    ]
    for model in ("tiny", "toolish"):
        assert chat(client, model=model, messages=history, tools=[WEATHER], temperature=0).status_code == 200
    bad = client.post("/v1/chat/completions", json={"messages": [*USER, {"role": "tool", "content": "x"}]})
    assert bad.status_code == 400 and "tool_call_id" in bad.json()["error"]["message"]


def test_forced_call_and_response_format_exclude_each_other(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "messages": USER,
            "tools": [WEATHER],
            "tool_choice": "required",
            "response_format": {"type": "json_object"},
        },
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "tool_choice"
