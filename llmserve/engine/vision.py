"""Image-text-to-text models (`VisionPlain`): AutoProcessor + AutoModelForImageTextToText.

The processor renders the chat (images where the messages put them), expands each image into its image
tokens and computes the pixel values; the prompt pass feeds those, and decoding is the language model's.
Each sequence keeps its own KV cache and steps alone: vision models may position tokens in ways a shared
left-padded batch cannot reproduce (Qwen2-VL's multimodal rotary positions, for one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jinja2
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from llmserve.config.entries import ModelConfig
from llmserve.engine.base import ChatMessage
from llmserve.engine.devices import resolve_device, resolve_dtype
from llmserve.engine.hf import HFEngine, PromptIds
from llmserve.engine.hf_load import LOAD_LOCK, placement
from llmserve.engine.images import decode_image
from llmserve.engine.progress import report
from llmserve.errors import InvalidRequest

log = logging.getLogger(__name__)


class VisionEngine(HFEngine):
    def __init__(self, model: Any, processor: Any, device: torch.device) -> None:
        super().__init__(model, processor.tokenizer, device, batched=False)
        self._processor = processor

    @classmethod
    def load(cls, config: ModelConfig) -> VisionEngine:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device, label=config.api_id)
        model_id = getattr(config.spec, "model_id", None)
        assert model_id is not None, "VisionEngine loads VisionPlain specs"
        with LOAD_LOCK:
            report("tokenizer")
            processor = AutoProcessor.from_pretrained(model_id)  # type: ignore[no-untyped-call]
            report("weights")
            model: Any = AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=dtype, **placement(config, device, {}, AutoModelForImageTextToText)
            )
        if config.chat_template is not None:
            processor.chat_template = config.chat_template.text
        model.eval()
        first = model.get_input_embeddings().weight.device
        log.info("loaded %s on %s (%s)", config.api_id, first, model.dtype)
        return cls(model, processor, first)

    @property
    def chat_template(self) -> str:
        template = getattr(self._processor, "chat_template", None) or self._tokenizer.chat_template
        return template if isinstance(template, str) else ""

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        if tools or any(m.role == "tool" or m.tool_calls for m in messages):
            raise InvalidRequest("VisionPlain models do not take tools yet", param="tools")
        template = getattr(self._processor, "chat_template", None) or self._tokenizer.chat_template
        if not template:
            raise InvalidRequest("this model has no chat template, so it cannot serve chat completions")
        images = []
        rendered = []
        for index, message in enumerate(messages):
            parts: list[dict[str, Any]] = []
            for part in message.parts or (message.content,):
                if isinstance(part, str):
                    parts.append({"type": "text", "text": part})
                else:
                    images.append(decode_image(message.images[part], f"messages[{index}].content"))
                    parts.append({"type": "image"})
            rendered.append({"role": message.role, "content": parts})
        try:
            text = self._processor.apply_chat_template(
                rendered, chat_template=template, add_generation_prompt=True, tokenize=False
            )
        except jinja2.TemplateError as exc:
            msg = f"the model's chat template rejected the messages: {exc}"
            raise InvalidRequest(msg, param="messages") from None
        try:
            inputs = self._processor(
                text=text, images=images or None, return_tensors="pt", add_special_tokens=False
            )
        except ValueError as exc:  # e.g. the template placed fewer image tokens than images were given
            raise InvalidRequest(
                f"the model's processor rejected the request: {exc}", param="messages"
            ) from None
        extras = {
            key: value.to(self._device, dtype=self._model.dtype if value.is_floating_point() else None)
            for key, value in inputs.items()
            if key not in ("input_ids", "attention_mask")
        }
        return PromptIds(inputs["input_ids"][0].tolist(), extras)
