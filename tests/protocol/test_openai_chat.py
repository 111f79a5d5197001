"""The chat completions wire types alone: what a body parses to (defaults included), the exact 400 each
bad field gets, the checks of what llmserve does not support, and responses that serialize to OpenAI's
shapes and parse back to themselves. No server, no model."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.errors import InvalidRequest
from llmserve.protocol.base import INT64_MAX, parse_request
from llmserve.protocol.openai_chat import (
    UNSUPPORTED_UNLESS,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ResponseMessage,
)
from llmserve.protocol.openai_generation import Usage

USER = [{"role": "user", "content": "hi"}]


def parse(**body: Any) -> ChatCompletionRequest:
    return parse_request(ChatCompletionRequest, {"messages": USER, **body})


def rejected(body: Any) -> tuple[str, str | None]:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(ChatCompletionRequest, body)
    return str(caught.value), caught.value.param


def test_defaults() -> None:
    request = parse()
    assert request.model_fields_set == {"messages"}
    assert request.model_dump(exclude={"messages"}) == {
        "model": None,
        "stream": False,
        "stream_options": None,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": None,
        "min_p": None,
        "stop": None,
        "seed": None,
        "presence_penalty": None,
        "frequency_penalty": None,
        "logit_bias": None,
        "max_tokens": None,
        "max_completion_tokens": None,
        "n": None,
        "response_format": None,
        "logprobs": None,
        "top_logprobs": None,
        "stop_token_ids": None,
        "ignore_eos": False,
        "min_tokens": 0,
        "keep_alive": None,
        "user": None,
        "metadata": None,
        "store": None,
        "service_tier": None,
        "prompt_cache_key": None,
        "safety_identifier": None,
        "tools": None,
        "tool_choice": None,
        "parallel_tool_calls": None,
        **dict.fromkeys(UNSUPPORTED_UNLESS),
    }
    assert request.messages == [ChatMessageIn(role="user", content="hi")]
    assert (request.stop_strings(), request.logit_biases()) == ((), ())


def test_a_full_body_round_trips() -> None:
    body = {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "content": "a cat", "tool_call_id": "call_1"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "repetition_penalty": 1.1,
        "min_p": 0.05,
        "stop": ["\n\n", "END"],
        "seed": -(INT64_MAX + 1),
        "presence_penalty": -2.0,
        "frequency_penalty": 2.0,
        "logit_bias": {"5": -100.0, "7": 100.0},
        "max_completion_tokens": 64,
        "n": 128,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer_1", "schema": {"type": "object"}, "strict": True},
        },
        "logprobs": True,
        "top_logprobs": 20,
        "stop_token_ids": [0, 2],
        "ignore_eos": True,
        "min_tokens": 3,
        "keep_alive": "5m",
        "user": "u",
        "metadata": {"k": "v"},
        "tools": [{"type": "function", "function": {"name": "look"}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    request = parse_request(ChatCompletionRequest, body)
    assert request.model_dump(exclude_unset=True, by_alias=True) == body
    assert (
        parse_request(ChatCompletionRequest, request.model_dump(exclude_unset=True, by_alias=True)) == request
    )
    assert request.response_format is not None and request.response_format.json_schema is not None
    assert request.response_format.json_schema.schema_ == {"type": "object"}  # "schema" on the wire
    assert request.stop_strings() == ("\n\n", "END")
    assert request.logit_biases() == ((5, -100.0), (7, 100.0))
    request.check_supported()


def test_an_integer_is_taken_where_a_number_is_expected() -> None:
    request = parse(temperature=1, presence_penalty=0, logit_bias={"3": 2})
    assert (request.temperature, request.presence_penalty, request.logit_biases()) == (1.0, 0.0, ((3, 2.0),))
    assert parse(stop="x").stop_strings() == ("x",)


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ([], "the request body must be a JSON object", None),
        ({}, "missing required parameter 'messages'", "messages"),
        (
            {"messages": []},
            "invalid value for 'messages': List should have at least 1 item after validation, not 0",
            "messages",
        ),
        ({"messages": USER, "colour": "red"}, "unknown parameter 'colour'", "colour"),
        # strict: no lax coercion of strings to booleans or numbers
        (
            {"messages": USER, "stream": "yes"},
            "invalid value for 'stream': Input should be a valid boolean",
            "stream",
        ),
        ({"messages": USER, "n": "2"}, "invalid value for 'n': Input should be a valid integer", "n"),
        (
            {"messages": USER, "temperature": "0.5"},
            "invalid value for 'temperature': Input should be a valid number",
            "temperature",
        ),
        (
            {"messages": USER, "temperature": 2.5},
            "invalid value for 'temperature': Input should be less than or equal to 2",
            "temperature",
        ),
        (
            {"messages": USER, "top_p": 0},
            "invalid value for 'top_p': Input should be greater than 0",
            "top_p",
        ),
        (
            {"messages": USER, "top_k": -2},
            "invalid value for 'top_k': Input should be greater than or equal to -1",
            "top_k",
        ),
        (
            {"messages": USER, "n": 129},
            "invalid value for 'n': Input should be less than or equal to 128",
            "n",
        ),
        (
            {"messages": USER, "max_tokens": 0},
            "invalid value for 'max_tokens': Input should be greater than or equal to 1",
            "max_tokens",
        ),
        (
            {"messages": USER, "seed": INT64_MAX + 1},
            "invalid value for 'seed': Input should be less than or equal to 9223372036854775807",
            "seed",
        ),
        (
            {"messages": USER, "stop": ["a", ""]},
            "invalid value for 'stop': stop strings must not be empty",
            "stop",
        ),
        ({"messages": USER, "stop": 5}, "invalid value for 'stop': Input should be a valid string", "stop"),
        (
            {"messages": USER, "logit_bias": {"abc": 1}},
            "invalid value for 'logit_bias': keys are token ids (whole numbers as strings), not 'abc'",
            "logit_bias",
        ),
        (
            {"messages": USER, "logit_bias": {"5": 101}},
            "invalid value for 'logit_bias.5': Input should be less than or equal to 100",
            "logit_bias.5",
        ),
        (
            {"messages": USER, "top_logprobs": 21},
            "invalid value for 'top_logprobs': Input should be less than or equal to 20",
            "top_logprobs",
        ),
        (
            {"messages": USER, "stop_token_ids": [1, -1]},
            "invalid value for 'stop_token_ids[1]': Input should be greater than or equal to 0",
            "stop_token_ids[1]",
        ),
        (
            {"messages": USER, "stream_options": {"include_usage": "yes"}},
            "invalid value for 'stream_options.include_usage': Input should be a valid boolean",
            "stream_options.include_usage",
        ),
        (
            {"messages": USER, "stream_options": {"usage": True}},
            "unknown parameter 'stream_options.usage'",
            "stream_options.usage",
        ),
        (
            {"messages": USER, "keep_alive": "soon"},
            "invalid value for 'keep_alive': keep_alive 'soon' is not seconds or a duration such as "
            '"90s", "5m", "1h30m", -1',
            "keep_alive",
        ),
        (
            {"messages": USER, "response_format": {"type": "yaml"}},
            "invalid value for 'response_format.type': Input should be 'text', 'json_object' or 'json_schema'",
            "response_format.type",
        ),
        (
            {"messages": USER, "response_format": {"type": "json_schema"}},
            "invalid value for 'response_format': 'json_schema' is required with type 'json_schema', and only then",
            "response_format",
        ),
        (
            {"messages": USER, "response_format": {"type": "text", "json_schema": {"name": "a"}}},
            "invalid value for 'response_format': 'json_schema' is required with type 'json_schema', and only then",
            "response_format",
        ),
        (
            {"messages": USER, "response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "invalid value for 'response_format.json_schema.name': String should match pattern '^[A-Za-z0-9_-]+$'",
            "response_format.json_schema.name",
        ),
        # messages
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            "invalid value for 'messages[0].role': Input should be 'system', 'developer', 'user', 'assistant' "
            "or 'tool'",
            "messages[0].role",
        ),
        (
            {"messages": [{"content": "x"}]},
            "missing required parameter 'messages[0].role'",
            "messages[0].role",
        ),
        (
            {"messages": [*USER, {"role": "tool", "content": "x"}]},
            "invalid value for 'messages[1]': a 'tool' message needs 'tool_call_id'",
            "messages[1]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f"}}],
                    }
                ]
            },
            "invalid value for 'messages[0]': only 'assistant' messages carry 'tool_calls'",
            "messages[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "a", "type": "function", "function": {"name": "f", "arguments": {}}}
                        ],
                    }
                ]
            },
            "invalid value for 'messages[0].tool_calls[0].function': a tool call's function needs a 'name' and "
            "'arguments' (a JSON string)",
            "messages[0].tool_calls[0].function",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "invalid value for 'messages[0].content': content part type 'audio' is not supported here; use "
            "'text' and 'image_url' parts",
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "invalid value for 'messages[0].content': content part type 'image_url' is not supported here; use "
            "'text' parts",
            "messages[0].content",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "max"}}],
                    }
                ]
            },
            "invalid value for 'messages[0].content.image_url.detail': Input should be 'auto', 'low' or 'high'",
            "messages[0].content.image_url.detail",
        ),
    ],
)
def test_bad_fields_are_named(body: Any, message: str, param: str | None) -> None:
    assert rejected(body) == (message, param)


def test_message_text_and_images() -> None:
    message = ChatMessageIn(
        role="user",
        content=[
            {"type": "text", "text": "one"},
            {"type": "image_url", "image_url": {"url": "data:a"}},
            {"type": "text", "text": "two"},
            {"type": "image_url", "image_url": {"url": "https://b"}},
        ],
    )
    assert message.text() == "one\ntwo"
    assert message.image_urls() == [(1, "data:a"), (3, "https://b")]
    plain = ChatMessageIn(role="assistant", content="hello")
    assert (plain.text(), plain.image_urls()) == ("hello", [])
    assert ChatMessageIn(role="assistant").text() == ""


@pytest.mark.parametrize(("name", "neutral"), sorted(UNSUPPORTED_UNLESS.items()))
def test_unsupported_parameters_only_in_their_neutral_form(name: str, neutral: tuple[Any, ...]) -> None:
    for value in neutral:
        parse(**{name: value}).check_supported()
    with pytest.raises(InvalidRequest) as caught:
        parse(**{name: "something"}).check_supported()
    assert (str(caught.value), caught.value.param) == (
        f"'{name}' = 'something' is not supported by llmserve yet",
        name,
    )


def test_a_neutral_value_of_another_type_is_not_neutral() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(functions=()).check_supported()  # a tuple is not the neutral list
    assert caught.value.param == "functions"


def test_checks_between_fields() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(top_logprobs=2).check_supported()
    assert (str(caught.value), caught.value.param) == (
        "'top_logprobs' needs 'logprobs': true",
        "top_logprobs",
    )
    with pytest.raises(InvalidRequest) as caught:
        parse(stream_options={"include_usage": True}).check_supported()
    assert (str(caught.value), caught.value.param) == (
        "'stream_options' is only allowed when 'stream' is true",
        "stream_options",
    )
    parse(
        logprobs=True, top_logprobs=2, stream=True, stream_options={"include_usage": True}
    ).check_supported()


def test_a_completion_serializes_as_openai_and_round_trips() -> None:
    completion = ChatCompletion(
        id="chatcmpl-1",
        created=1700000000,
        model="tiny",
        choices=[
            Choice(index=0, message=ResponseMessage(content="Hi."), finish_reason="stop"),
            Choice(
                index=1,
                message=ResponseMessage(
                    content=None,
                    tool_calls=[
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                ),
                logprobs=ChoiceLogprobs(content=[]),
                finish_reason="tool_calls",
            ),
        ],
        usage=Usage.of(5, 7),
    )
    dumped = completion.model_dump()
    assert dumped == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi.", "refusal": None},  # no empty tool_calls
                "logprobs": None,
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                "logprobs": {"content": [], "refusal": None},
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    assert ChatCompletion.model_validate(dumped) == completion


def test_a_chunk_sends_only_the_delta_fields_it_sets() -> None:
    chunks = [
        ChatCompletionChunk(
            id="c",
            created=1,
            model="m",
            choices=[ChunkChoice(index=0, delta=Delta(role="assistant", content=""))],
        ),
        ChatCompletionChunk(
            id="c", created=1, model="m", choices=[ChunkChoice(index=0, delta=Delta(content="Hi"))]
        ),
        ChatCompletionChunk(
            id="c",
            created=1,
            model="m",
            choices=[ChunkChoice(index=0, delta=Delta(), finish_reason="length")],
        ),
        ChatCompletionChunk(id="c", created=1, model="m", choices=[], usage=Usage.of(1, 2)),
    ]
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    assert [chunk.model_dump() for chunk in chunks] == [
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            "usage": None,
        },
        {
            **head,
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}],
            "usage": None,
        },
        {
            **head,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}],
            "usage": None,
        },
        {**head, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    ]
    assert [ChatCompletionChunk.model_validate(chunk.model_dump()) for chunk in chunks] == chunks
