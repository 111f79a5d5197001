"""Builds tiny random-weight chat models (a real tokenizer + Llama weights, a few MB) for the tests,
what raw `generate` answers on them, and a copy with room for a longer context."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Hello, how are you today? I am fine, thank you very much.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: {} [] () <> ! ? , . ; :",
    "Unicode: héllo wörld ñandú 世界 こんにちは привет 🙂",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def llama_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden: int = 64,
    layers: int = 2,
    context: int = 256,
    init_range: float = 0.02,
) -> LlamaConfig:
    """The tiny Llama text model's config for `tokenizer` (also the language model of the tiny Llava)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=init_range,
    )


def build_model(
    directory: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    context: int = 256,
    seed: int = 0,
    init_range: float = 0.02,
) -> Path:
    """Writes a tiny Llama chat model to `directory` and returns it. A larger `init_range` gives sharper
    attention, so that a wrong position or mask changes its output."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer, hidden, layers, context, init_range))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def reference_greedy(
    directory: Path, messages: list[dict[str, str]], max_new_tokens: int
) -> tuple[str, int, int, bool]:
    """What raw `model.generate` answers at temperature 0: (text, prompt tokens, new tokens, hit eos)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    hit_eos = new[-1] == tokenizer.eos_token_id
    return tokenizer.decode(new, skip_special_tokens=True), ids.shape[1], len(new), hit_eos


def long_context_copy(tiny_dir: Path, target: Path, positions: int = 4096) -> Path:
    """The tiny model with room for tool descriptions (rotary positions: no weight depends on it)."""
    shutil.copytree(tiny_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "max_position_embeddings": positions}))
    return target
