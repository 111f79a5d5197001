"""The items of the Responses API: `input` items as the client sends them → stored items (with ids and
statuses, as `GET /v1/responses/{id}/input_items` lists them) → chat messages for the chat path.

Messages (roles user, system, developer, assistant; `input_text`, `input_image`, `output_text`,
`refusal` parts), `function_call` and `function_call_output` items are taken; `reasoning` items are
kept in the conversation but not shown to the model (llmserve's models produce none of their own);
every other item type is a 400 naming it.
"""

from __future__ import annotations

import uuid
from typing import Any

from llmserve.errors import InvalidRequest

_ROLES = ("user", "system", "developer", "assistant")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _str(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}.{key}' must be a string", param=f"{param}.{key}")
    return value


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    """One content part, checked, in the stored shape."""
    if not isinstance(part, dict):
        raise InvalidRequest(f"'{param}' must be an object", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        text = _str(part, "text", param)
        if role == "assistant":
            return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {"type": "input_text", "text": text}
    if kind == "refusal" and role == "assistant":
        return {"type": "refusal", "refusal": _str(part, "refusal", param)}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest(
                "an 'input_image' needs 'image_url' (an http(s) or data: URL); 'file_id' is not supported",
                param=f"{param}.image_url",
            )
        return {"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"}
    raise InvalidRequest(f"content part type {kind!r} is not supported in a {role!r} message", param=param)


def stored_items(items: list[dict[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """The request's `input` items, checked, each with an `id` and a `status` (kept when given)."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidRequest(
                    f"'{where}.role' must be one of {', '.join(_ROLES)}", param=f"{where}.role"
                )
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
            if not isinstance(content, list):
                raise InvalidRequest(
                    f"'{where}.content' must be a string or a list of parts", param=f"{where}.content"
                )
            parts = [_part(p, role, f"{where}.content[{j}]") for j, p in enumerate(content)]
            out.append(
                {"id": item.get("id") or new_id("msg"), "type": "message", "role": role, "content": parts}
                | {"status": item.get("status") or "completed"}
            )
        elif kind == "function_call":
            out.append(
                {
                    "id": item.get("id") or new_id("fc"),
                    "type": "function_call",
                    "call_id": _str(item, "call_id", where),
                    "name": _str(item, "name", where),
                    "arguments": _str(item, "arguments", where),
                    "status": item.get("status") or "completed",
                }
            )
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            if not isinstance(output, str):
                raise InvalidRequest(
                    f"'{where}.output' must be a string or text parts", param=f"{where}.output"
                )
            out.append(
                {
                    "id": item.get("id") or new_id("fco"),
                    "type": "function_call_output",
                    "call_id": _str(item, "call_id", where),
                    "output": output,
                    "status": item.get("status") or "completed",
                }
            )
        elif kind == "reasoning":
            out.append({**item, "id": item.get("id") or new_id("rs"), "summary": item.get("summary") or []})
        else:
            raise InvalidRequest(
                f"input item type {kind!r} is not supported by llmserve", param=f"{where}.type"
            )
    return out


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored items as chat completions messages: consecutive function calls become one assistant
    message's `tool_calls` (after that assistant's text, if any), their outputs `tool` messages."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = item["role"]
            content: list[dict[str, Any]] = []
            for part in item["content"]:
                if part["type"] == "input_image":
                    content.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
                else:
                    content.append({"type": "text", "text": part.get("text", part.get("refusal", ""))})
            if role != "user":
                text = "".join(p["text"] for p in content)
                messages.append({"role": role, "content": text})
            else:
                messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages
