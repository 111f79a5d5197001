"""Tool calling: the request's `tools` and `tool_choice`, the grammar that forces a call, and the calls
found in a model's output.

- Tools reach the model through its chat template (`tools=`), or, when the template does not use them,
  through a system message in the Hermes format most open models are trained on (`engine/templates.py`
  renders both): calls come back as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
- `tool_choice: "required"` or a named function forces one call by constrained decoding: the output is
  exactly `{"name": ..., "arguments": {...}}` with the function's parameter schema, so it always parses.
- `auto`: calls are parsed from the output (tagged blocks, or an output that is one call object);
  `none`: the tools are not offered at all.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from llmserve.engine.base import Constraint
from llmserve.errors import InvalidRequest

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ToolPlan:
    """What a request asks of tools: those offered to the model, and whether a call is forced."""

    tools: tuple[dict[str, Any], ...]  # {"type": "function", "function": {...}} as OpenAI sends them
    forced: bool
    parallel: bool

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}


def plan(tools: list[dict[str, Any]] | None, tool_choice: Any, parallel: bool | None) -> ToolPlan | None:
    """Validates `tools` and `tool_choice`; None when no tool is offered."""
    tools = tools or []
    names = [_name(i, tool) for i, tool in enumerate(tools)]
    if len(set(names)) != len(names):
        raise InvalidRequest("tool function names must be unique", param="tools")
    choice = "auto" if tool_choice is None and tools else tool_choice or "none"
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if wanted not in names:
            raise InvalidRequest(
                f"tool_choice names no function in 'tools' ({wanted!r})", param="tool_choice"
            )
        return ToolPlan(tuple(t for t in tools if t["function"]["name"] == wanted), True, False)
    if choice not in ("none", "auto", "required"):
        raise InvalidRequest(
            "tool_choice must be 'none', 'auto', 'required' or a named function", param="tool_choice"
        )
    if choice == "none" or not tools:
        if choice == "required":
            raise InvalidRequest("tool_choice 'required' needs 'tools'", param="tool_choice")
        return None
    return ToolPlan(tuple(tools), choice == "required", parallel is not False)


def _name(index: int, tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise InvalidRequest(
            f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ...}}}} with a name of "
            "letters, digits, _ or - (64 at most)",
            param=f"tools[{index}]",
        )
    parameters = function.get("parameters", {"type": "object"})  # type: ignore[union-attr]
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            f"tools[{index}].function.parameters must be a JSON schema", param=f"tools[{index}]"
        )
    return name


def forcing(tool_plan: ToolPlan) -> Constraint:
    """The grammar of exactly one call to one of the plan's functions."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tool_plan.tools
    ]
    return Constraint.json_schema(calls[0] if len(calls) == 1 else {"anyOf": calls})


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": text},
    }


def parse_calls(text: str, tool_plan: ToolPlan) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool calls) of a model's output; content None when the output is only calls."""
    calls: list[dict[str, Any]] = []
    candidates = _TAGGED.findall(text)
    rest = _TAGGED.sub("", text).strip()
    if not candidates and text.strip().startswith("{"):
        candidates, rest = [text.strip()], ""
    for candidate in candidates:
        try:
            call = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and call.get("name") in tool_plan.names:
            calls.append(tool_call(call["name"], call.get("arguments", call.get("parameters", {}))))
    if not calls:
        return text, []
    if not tool_plan.parallel:
        calls = calls[:1]
    return rest or None, calls
