"""The slow tier for per-model options, on the real SmolLM2-135M-Instruct: 8-bit in-situ quantization still
answers "Paris" in less memory, and one config mixes a quantized Plain model, the GGUF file with a
template override and a vision model, all served at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from model_configs import require_smollm2
from smollm2_gguf import default_config_on_transformers
from starlette.testclient import TestClient
from tiny_vision import ask, build_vision_model, data_url, png

from llmserve.config.entries import GGUFSpec, parse_config
from llmserve.engine.gguf import is_complete, save_converted
from llmserve.server import create_app

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def gguf() -> GGUFSpec:
    require_smollm2()
    spec = default_config_on_transformers()[0].spec
    assert isinstance(spec, GGUFSpec)
    return spec


@pytest.fixture(scope="module")
def smol_plain(gguf: GGUFSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 as a plain safetensors checkpoint (in_situ_quant applies to unquantized checkpoints)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path_factory.mktemp("models") / "smollm2-plain"
    source = {"gguf_file": gguf.quantized_filename}
    tokenizer = AutoTokenizer.from_pretrained(gguf.tok_model_id, **source)
    model = AutoModelForCausalLM.from_pretrained(gguf.quantized_model_id, dtype="float32", **source)
    save_converted(model, tokenizer, target, Path(gguf.quantized_model_id) / gguf.quantized_filename)
    assert is_complete(target)
    return target


def answer(client: TestClient, model: str, messages: Any = QUESTION) -> Any:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 20}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_8_bit_smollm2_answers_paris_in_less_memory(smol_plain: Path, tmp_path: Path) -> None:
    entry = {"Plain": {"model_id": str(smol_plain)}, "dtype": "float32"}
    models = parse_config(
        {"full": {**entry, "alias": "full"}, "q8": {**entry, "alias": "q8", "in_situ_quant": "Q8_0"}},
        base=tmp_path,
    )
    with TestClient(create_app(models, "full", preload="all")) as client:
        for model in ("full", "q8"):
            assert "Paris" in answer(client, model)["choices"][0]["message"]["content"]
        cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["q8"]["quantization"] == "bitsandbytes-int8"
    assert cards["q8"]["memory_bytes"] < 0.6 * cards["full"]["memory_bytes"]


def test_one_config_mixes_quantized_gguf_with_template_and_vision(
    smol_plain: Path, gguf: GGUFSpec, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    (tmp_path / "chatml.jinja").write_text(CHATML)
    vision = build_vision_model(tmp_path / "vision")
    gguf_entry = {"GGUF": gguf.model_dump(), "alias": "smol-gguf", "jinja_explicit": "chatml.jinja"}
    models = parse_config(
        {
            "quantized": {
                "Plain": {"model_id": str(smol_plain)},
                "alias": "smol-nf4",
                "in_situ_quant": "Q4K",
            },
            "gguf": gguf_entry,
            "vision": {"VisionPlain": {"model_id": str(vision)}, "alias": "vision"},
        },
        base=tmp_path,
    )
    with TestClient(create_app(models, "smol-gguf", preload="none")) as client:
        assert answer(client, "smol-nf4")["usage"]["completion_tokens"] >= 1
        templated = answer(client, "smol-gguf")
        assert answer(client, "vision", ask(data_url(png())))["usage"]["completion_tokens"] >= 1
        cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    tokenizer = AutoTokenizer.from_pretrained(smol_plain)
    rendered = tokenizer.apply_chat_template(
        QUESTION, chat_template=CHATML, add_generation_prompt=True, tokenize=False
    )
    own = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert rendered != own  # SmolLM2's own template adds a default system prompt; the override does not
    assert templated["usage"]["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False).input_ids)
    assert "Paris" in templated["choices"][0]["message"]["content"]
    assert cards["smol-nf4"]["quantization"] == "bitsandbytes-nf4"
    assert [cards[m]["status"] for m in ("smol-nf4", "smol-gguf", "vision")] == ["loaded"] * 3
