from __future__ import annotations

from pathlib import Path

import pytest
import torch
from draws import draws

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.devices import cpu_has_native_bf16, resolve_device, resolve_dtype
from llmserve.engine.hf import HFEngine
from llmserve.errors import InvalidRequest


def test_sampling_rules() -> None:
    assert draws(GenerationParams(temperature=0)) == {1}
    assert draws(GenerationParams(temperature=5.0)) == {0, 1, 2, 3, 4}
    assert draws(GenerationParams(temperature=5.0, top_k=2)) == {1, 4}
    assert draws(GenerationParams(temperature=1.0, top_p=0.4)) == {1}
    assert draws(GenerationParams(temperature=1.0, top_p=0.7)) == {1, 4}
    # Found by the fuzzer: values that underflow or overflow must still sample the most likely token.
    assert draws(GenerationParams(temperature=1.0, top_p=5e-324)) == {1}
    assert draws(GenerationParams(temperature=1e-300)) == {1}


def test_seeded_sequences_repeat(tiny_dir: Path) -> None:
    engine = HFEngine.load(ModelConfig("t", "t", PlainSpec(model_id=str(tiny_dir))))
    prompt = engine.encode_chat([ChatMessage("user", "hi")])

    def run(seed: int) -> list[int]:
        seq = engine.start(prompt, GenerationParams(temperature=1.0, seed=seed))
        out = [engine.step([seq])[0] for _ in range(10)]
        engine.release(seq)
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)
    engine.close()
    assert engine.model is None


def test_no_chat_template_is_a_clear_400(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    (bare / "chat_template.jinja").unlink()
    engine = HFEngine.load(ModelConfig("b", "b", PlainSpec(model_id=str(bare))))
    with pytest.raises(InvalidRequest, match="this model has no chat template"):
        engine.encode_chat([ChatMessage("user", "hi")])


def test_device_and_dtype_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(RuntimeError, match="this machine has no CUDA device"):
            resolve_device("cuda:0")


def _greedy_batch(engine: HFEngine) -> list[list[int]]:
    prompts = [engine.encode_chat([ChatMessage("user", text)]) for text in ("hi", "a longer question here")]
    seqs = [engine.start(prompt, GenerationParams(temperature=0)) for prompt in prompts]
    out = [engine.step(seqs) for _ in range(6)]
    for seq in seqs:
        engine.release(seq)
    return out


@pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning")
def test_both_cache_argument_generations_give_the_same_tokens(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers >= 5.24 takes `cache=`, older 5.x `past_key_values=`: the engine speaks whichever the
    installed model class has (the new one without any warning, since filterwarnings is `error`), and the
    old one, forced here, decodes the same tokens."""
    from llmserve.engine import kvcache

    engine = HFEngine.load(ModelConfig("t", "t", PlainSpec(model_id=str(tiny_dir))))
    assert engine.model is not None
    native = kvcache.cache_name(engine.model)
    import inspect

    assert native in inspect.signature(engine.model.forward).parameters
    current = _greedy_batch(engine)
    other = kvcache.OLD if native == kvcache.NEW else kvcache.NEW
    if other == kvcache.NEW:
        pytest.skip("installed transformers predates the cache= argument; the old path ran above")
    monkeypatch.setitem(kvcache._names, type(engine.model), other)
    assert _greedy_batch(engine) == current
    engine.close()
