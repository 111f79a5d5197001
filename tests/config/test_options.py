"""Per-model options: in_situ_quant, num_device_layers, chat_template and jinja_explicit — parsed, refused
with one-line errors, and really applied by the engine on the tiny models (the CPU path, for real)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from starlette.testclient import TestClient
from tiny import build_model, reference_greedy

from llmserve.config.entries import parse_config
from llmserve.config.options import isq_mode, parse_device_layers
from llmserve.engine.placement import PlacementError, check_gpus, layer_device_map, model_device_map
from llmserve.errors import ConfigError
from llmserve.server import create_app

USER = [{"role": "user", "content": "What is the capital of France?"}]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts what happens without a GPU")


def configs(base: Path, **entries: dict[str, Any]) -> Any:
    return parse_config(entries, base=base, source="cfg.json")


def entry(directory: Path, alias: str, **options: Any) -> dict[str, Any]:
    return {"Plain": {"model_id": str(directory)}, "alias": alias, **options}


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Linear layers big enough that quantizing them shows in the footprint."""
    return build_model(tmp_path_factory.mktemp("models") / "wide", hidden=256, layers=2)


# -- in_situ_quant ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("Q8_0", "int8"),
        ("Q8_1", "int8"),
        ("Q6K", "int8"),
        ("Q5K", "int8"),
        ("HQQ8", "int8"),
        ("Q4_0", "nf4"),
        ("Q4_1", "nf4"),
        ("Q4K", "nf4"),
        ("HQQ4", "nf4"),
        ("Q2K", "nf4"),
        ("int8", "int8"),
        ("nf4", "nf4"),
        ("fp4", "fp4"),
        ("NF4", "nf4"),
    ],
)
def test_isq_names_map_to_the_nearest_bitsandbytes_mode(name: str, mode: str) -> None:
    assert isq_mode(name) == mode


def test_an_isq_name_with_no_faithful_mapping_is_a_config_error_listing_the_accepted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        configs(tmp_path, m=entry(tmp_path, "m", in_situ_quant="FP8"))
    message = str(caught.value)
    assert message.startswith(
        "cfg.json: $.m.in_situ_quant: 'FP8' has no faithful bitsandbytes mapping; accepted: "
    )
    assert "Q8_0" in message and "nf4" in message and "\n" not in message


def test_in_situ_quant_on_a_gguf_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"")
    gguf = {
        "tok_model_id": str(tmp_path),
        "quantized_model_id": str(tmp_path),
        "quantized_filename": "m.gguf",
    }
    with pytest.raises(ConfigError, match=r"\$\.m: in_situ_quant applies to unquantized checkpoints"):
        configs(tmp_path, m={"GGUF": gguf, "in_situ_quant": "Q8_0"})


@pytest.mark.parametrize("name", ["Q8_0", "Q4K", "fp4"])
def test_quantized_model_is_smaller_answers_and_shows_it(tmp_path: Path, wide_dir: Path, name: str) -> None:
    models = configs(
        tmp_path,
        full=entry(wide_dir, "full", dtype="float32"),
        quant=entry(wide_dir, "quant", dtype="float32", in_situ_quant=name),
    )
    with TestClient(create_app(models, "full", preload="all")) as client:
        for model in ("full", "quant"):
            response = client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": USER, "max_tokens": 4, "temperature": 0},
            )
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["completion_tokens"] >= 1
        cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    mode = isq_mode(name)
    assert cards["quant"]["quantization"] == f"bitsandbytes-{mode}"
    assert cards["full"]["quantization"] is None
    full, quant = cards["full"]["memory_bytes"], cards["quant"]["memory_bytes"]
    assert isinstance(full, int) and isinstance(quant, int)
    # the decoder's linear weights shrink 4x (int8) or 8x (4-bit); embeddings and norms stay float32
    assert quant < 0.75 * full


# -- num_device_layers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "layout"),
    [
        (16, ((0, 16),)),
        ("12", ((0, 12),)),
        (["0:16;1:16"], ((0, 16), (1, 16))),
        (["0:4", "1:2"], ((0, 4), (1, 2))),
        ("1:3; 0:1", ((1, 3), (0, 1))),
        (0, ((0, 0),)),
    ],
)
def test_device_layer_syntax(value: Any, layout: Any) -> None:
    assert parse_device_layers(value) == layout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["0:x"], "'0:x' is not ORDINAL:LAYERS"),
        ("0:2;0:3", "a GPU ordinal appears twice"),
        ([], "expected at least one"),
        ("a", "'0:a' is not ORDINAL:LAYERS"),
    ],
)
def test_bad_device_layers_are_config_errors(tmp_path: Path, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=f"cfg.json: \\$.m.num_device_layers: {message}"):
        configs(tmp_path, m=entry(tmp_path, "m", num_device_layers=value))


def test_device_layers_contradicting_device_cpu(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="num_device_layers places layers on GPUs; it contradicts device 'cpu'"
    ):
        configs(tmp_path, m=entry(tmp_path, "m", num_device_layers=2, device="cpu"))


BEFORE, AFTER = ["model.embed_tokens"], ["model.norm", "lm_head"]


def layers(*devices: str) -> dict[str, str]:
    return {f"model.layers.{i}": d for i, d in enumerate(devices)}


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (
            ((0, 4),),
            {
                "model.embed_tokens": "cuda:0",
                **layers(*["cuda:0"] * 4),
                "model.norm": "cuda:0",
                "lm_head": "cuda:0",
            },
        ),
        (
            ((0, 2), (1, 1)),
            {
                "model.embed_tokens": "cuda:0",
                **layers("cuda:0", "cuda:0", "cuda:1", "cpu"),
                "model.norm": "cpu",
                "lm_head": "cpu",
            },
        ),
        (
            ((1, 1), (0, 3)),
            {
                "model.embed_tokens": "cuda:1",
                **layers("cuda:1", "cuda:0", "cuda:0", "cuda:0"),
                "model.norm": "cuda:0",
                "lm_head": "cuda:0",
            },
        ),
        (
            ((0, 0),),
            {"model.embed_tokens": "cpu", **layers(*["cpu"] * 4), "model.norm": "cpu", "lm_head": "cpu"},
        ),
    ],
)
def test_layer_device_map_layouts(layout: Any, expected: dict[str, str]) -> None:
    assert layer_device_map(BEFORE, "model.layers", 4, AFTER, layout) == expected


def test_more_layers_than_the_model_has_is_refused() -> None:
    with pytest.raises(PlacementError, match="num_device_layers places 5 layers on GPUs; the model has 4"):
        layer_device_map(BEFORE, "model.layers", 4, AFTER, ((0, 3), (1, 2)))


def test_device_map_from_the_real_module_tree(tiny_dir: Path, tmp_path: Path) -> None:
    assert model_device_map(str(tiny_dir), ((0, 0),)) == {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    config = json.loads((tiny_dir / "config.json").read_text())
    tied = tmp_path / "tied"
    tied.mkdir()
    (tied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    mapping = model_device_map(str(tied), ((0, 0),))
    names = list(mapping)
    assert names.index("lm_head") < names.index("model.layers.0")  # a tied head goes with the embeddings


@NO_GPU
def test_asking_for_a_missing_gpu_fails_the_load_with_the_reason(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PlacementError, match=r"asks for GPU 1, but this machine has 0 CUDA device\(s\)"):
        check_gpus(((0, 0), (1, 2)))
    models = configs(tmp_path, split=entry(tiny_dir, "split", num_device_layers=["0:1;1:1"]))
    with TestClient(create_app(models, "split", preload="none")) as client:
        response = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "model_load_failed"
        assert error["message"] == (
            "loading model 'split' failed: PlacementError: num_device_layers asks for GPU 0, "
            "but this machine has 0 CUDA device(s)"
        )
        status = client.post("/v1/models/status", json={"model_id": "split"}).json()
        assert status == {"model_id": "split", "status": "internal_error"}


def test_cpu_path_of_a_device_map_answers_like_the_plain_load(tiny_dir: Path, tmp_path: Path) -> None:
    text, _, new_tokens, _ = reference_greedy(tiny_dir, USER, 8)
    models = configs(tmp_path, m=entry(tiny_dir, "m", num_device_layers=0, dtype="float32"))
    with TestClient(create_app(models, "m", preload="none")) as client:
        body = client.post(
            "/v1/chat/completions", json={"messages": USER, "max_tokens": 8, "temperature": 0}
        ).json()
    assert body["choices"][0]["message"]["content"] == text
    assert body["usage"]["completion_tokens"] == new_tokens


# -- chat_template and jinja_explicit -----------------------------------------------------------------

PLAIN = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
LONG = "Hello Hello Hello {% for m in messages %}{{ m['content'] }}{% endfor %} Hello Hello"


@pytest.fixture(scope="module")
def served_templates(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = tmp_path_factory.mktemp("templates")
    (base / "plain.jinja").write_text(PLAIN)
    (base / "long.jinja").write_text(LONG)
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": LONG}))
    (base / "named.json").write_text(json.dumps({"chat_template": [{"name": "default", "template": PLAIN}]}))
    models = configs(
        base,
        own=entry(tiny_dir, "own"),
        jinja=entry(tiny_dir, "jinja", chat_template="plain.jinja"),
        json=entry(tiny_dir, "json", chat_template="tokenizer_config.json"),
        named=entry(tiny_dir, "named", chat_template="named.json"),
        inline=entry(tiny_dir, "inline", chat_template=LONG),
        explicit=entry(tiny_dir, "explicit", chat_template="long.jinja", jinja_explicit="plain.jinja"),
    )
    with TestClient(create_app(models, "own", preload="none")) as client:
        yield client


@pytest.mark.parametrize(
    ("model", "template"),
    [
        ("own", None),
        ("jinja", PLAIN),
        ("json", LONG),
        ("named", PLAIN),
        ("inline", LONG),
        ("explicit", PLAIN),
    ],
)
def test_the_template_in_force_is_the_one_rendered(
    served_templates: TestClient, tiny_dir: Path, model: str, template: str | None
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    rendered = tokenizer.apply_chat_template(
        USER, chat_template=template, add_generation_prompt=True, tokenize=False
    )
    expected = len(tokenizer(rendered, add_special_tokens=False).input_ids)
    body = served_templates.post(
        "/v1/chat/completions", json={"model": model, "messages": USER, "max_tokens": 1}
    ).json()
    assert body["usage"]["prompt_tokens"] == expected


def test_template_sizes_differ_so_the_test_above_can_fail(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    counts = {
        len(tokenizer(t.replace("{% for m in messages %}{{ m['content'] }}{% endfor %}", "x")).input_ids)
        for t in (PLAIN, LONG)
    }
    assert len(counts) == 2


@pytest.mark.parametrize(
    ("key", "value", "files", "message"),
    [
        (
            "chat_template",
            "bad.jinja",
            {"bad.jinja": "line one\n{% for m in messages %}\n{{ m }"},
            "{base}/bad.jinja line 3: template syntax error: ",
        ),
        ("chat_template", "{% if %}", {}, "inline template line 1: template syntax error: "),
        ("chat_template", "missing.jinja", {}, "cannot read '{base}/missing.jinja'"),
        (
            "chat_template",
            "t.json",
            {"t.json": '{"bos_token": "x"}'},
            '{base}/t.json holds no "chat_template" string',
        ),
        ("chat_template", "t.json", {"t.json": "{\n oops"}, "{base}/t.json line 2: invalid JSON"),
        (
            "chat_template",
            "just words",
            {},
            "'just words' is neither a .jinja/.json file nor an inline template",
        ),
        ("jinja_explicit", "t.json", {"t.json": "{}"}, "'t.json' is not a .jinja file"),
        ("jinja_explicit", PLAIN, {}, "is not a .jinja file"),
    ],
)
def test_template_errors_name_the_file_and_line(
    tmp_path: Path, key: str, value: str, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        configs(tmp_path, m=entry(tmp_path, "m", **{key: value}))
    text = str(caught.value)
    assert text.startswith(f"cfg.json: $.m.{key}: ")
    assert message.format(base=tmp_path.resolve()) in text
    assert "\n" not in text
