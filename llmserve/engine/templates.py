"""The chat as a chat template takes it: transformers' message dicts (tool calls with their arguments
as objects), or, for a template that knows no tools, the Hermes format most open models are trained on
(tools described in the system message, calls and results as tagged text)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import jinja2

from llmserve.engine.base import ChatMessage
from llmserve.errors import InvalidRequest


def hermes_system(tools: tuple[dict[str, Any], ...]) -> str:
    """Tools described for a model whose chat template has no `tools` (the Hermes/Qwen format)."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "You may call functions to help with the user's request. The functions are, as JSON schemas:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call a function, answer with a JSON object of its name and arguments inside tags:\n"
        '<tool_call>\n{"name": "function_name", "arguments": {"argument": "value"}}\n</tool_call>'
    )


def plain_messages(
    messages: list[ChatMessage], tools: tuple[dict[str, Any], ...] | None
) -> list[dict[str, Any]]:
    """The chat for a template without tool support: tools in the system message, calls and results
    as tagged text in assistant and user messages."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"})
        elif message.tool_calls:
            calls = "\n".join(
                "<tool_call>\n"
                + json.dumps({"name": c["function"]["name"], "arguments": _arguments(c)}, ensure_ascii=False)
                + "\n</tool_call>"
                for c in message.tool_calls
            )
            out.append(
                {"role": "assistant", "content": (message.content + "\n" if message.content else "") + calls}
            )
        else:
            out.append({"role": message.role, "content": message.content})
    if tools:
        system = hermes_system(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{system}"}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The chat as transformers' templates take it (tool calls with their arguments as objects)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            entry["tool_calls"] = [
                {
                    "type": "function",
                    "id": c.get("id"),
                    "function": {"name": c["function"]["name"], "arguments": _arguments(c)},
                }
                for c in message.tool_calls
            ]
        if message.tool_call_id is not None:
            entry["tool_call_id"] = message.tool_call_id
        out.append(entry)
    return out


def chat_inputs(
    messages: list[ChatMessage], tools: tuple[dict[str, Any], ...], template: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and the extra template variables for `template`: with tools offered or used and a
    template that knows no tools, the Hermes format (`plain_messages`); else transformers' message dicts
    and the tools as the `tools` variable."""
    with_tools = tools or any(m.role == "tool" or m.tool_calls for m in messages)
    if with_tools and "tools" not in template:
        return plain_messages(messages, tools), {}
    return template_messages(messages), ({"tools": list(tools)} if tools else {})


def chat_text(
    messages: Sequence[ChatMessage],
    tools: Sequence[dict[str, Any]] | None,
    template: str | None,
    render_with: Callable[[list[dict[str, Any]], dict[str, Any]], str],
) -> str:
    """The prompt text of a chat by the model's `template`, rendered by `render_with(messages,
    variables)`; raises `InvalidRequest` for images (a text model), a model without a template, or a
    template that rejects the messages."""
    if any(m.images for m in messages):
        raise InvalidRequest(
            "this model does not take images (it is not a VisionPlain model)", param="messages"
        )
    if not template:
        raise InvalidRequest("this model has no chat template, so it cannot serve chat completions")
    rendered, extra = chat_inputs(list(messages), tuple(tools or ()), template)
    try:
        return render_with(rendered, extra)
    except jinja2.TemplateError as exc:
        msg = f"the model's chat template rejected the messages: {exc}"
        raise InvalidRequest(msg, param="messages") from None


def render(template: str, messages: list[dict[str, Any]], variables: dict[str, Any]) -> str:
    """A chat rendered by `template` as transformers' `apply_chat_template` renders it (its own Jinja
    environment and functions), ending with the assistant's prompt; keys whose value is None dropped
    from each message as transformers does. Raises `jinja2.TemplateError`."""
    from transformers.utils.chat_template_utils import render_jinja_template

    chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
    tools = variables.get("tools")
    rest = {k: v for k, v in variables.items() if k != "tools"}
    # Any: it returns (rendered chats, generation indices), though annotated as returning str
    result: Any = render_jinja_template(
        conversations=[chat], tools=tools, chat_template=template, add_generation_prompt=True, **rest
    )
    return str(result[0][0])


def _arguments(call: dict[str, Any]) -> Any:
    arguments = call["function"].get("arguments", "{}")
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return arguments
