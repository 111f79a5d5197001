"""VisionPlain: a tiny random-weight Llava through the real app — images as data: URLs (and http URLs
only when allowed), exactly what raw generate answers, and a clear 400 for every bad image."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from model_configs import plain
from PIL import Image
from starlette.testclient import TestClient
from tiny_vision import IMAGE_TOKENS, ask, build_vision_model, data_url, png
from wire import assert_schema

from llmserve.config.entries import parse_config
from llmserve.server import create_app
from llmserve.server.options import ServerOptions


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_vision_model(tmp_path_factory.mktemp("models") / "tiny-vision")


def make_app(vision_dir: Path, tiny_dir: Path, **options: Any) -> Any:
    models = parse_config(
        {"v": {"VisionPlain": {"model_id": str(vision_dir)}, "alias": "vision", "dtype": "float32"}},
        base=vision_dir,
    )
    return create_app(
        [*models, plain(tiny_dir, "text")], "vision", preload="none", options=ServerOptions(**options)
    )


@pytest.fixture(scope="module")
def client(vision_dir: Path, tiny_dir: Path) -> Iterator[TestClient]:
    with TestClient(make_app(vision_dir, tiny_dir)) as test_client:
        yield test_client


def reference(directory: Path, image: bytes, text: str, new_tokens: int) -> tuple[str, int]:
    """Raw processor + generate on the same model: (text, prompt tokens)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(directory)
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=torch.float32)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(
        text=prompt,
        images=[Image.open(io.BytesIO(image)).convert("RGB")],
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    return processor.tokenizer.decode(new, skip_special_tokens=True), int(inputs["input_ids"].shape[1])


def test_image_and_text_answer_like_raw_generate(client: TestClient, vision_dir: Path) -> None:
    text, prompt_tokens = reference(vision_dir, png(), "What is in the picture?", 6)
    body = client.post(
        "/v1/chat/completions",
        json={"model": "vision", "messages": ask(data_url(png())), "max_tokens": 6, "temperature": 0},
    ).json()
    assert_schema("CreateChatCompletionResponse", body)
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    generated = body["usage"]["completion_tokens"]
    if generated == 6:  # the random model did not stop early: the whole text must match
        assert body["choices"][0]["message"]["content"] == text
    else:
        assert text.startswith(body["choices"][0]["message"]["content"])


def test_the_image_changes_the_prompt_and_text_only_works(client: TestClient) -> None:
    with_image = client.post(
        "/v1/chat/completions", json={"messages": ask(data_url(png())), "max_tokens": 1, "temperature": 0}
    ).json()
    text_only = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "What is in the picture?"}], "max_tokens": 1},
    ).json()
    assert with_image["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + IMAGE_TOKENS
    two = client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(png()), "detail": "low"}},
                        {"type": "image_url", "image_url": {"url": data_url(png(color=(0, 0, 255)))}},
                        {"type": "text", "text": "What is in the picture?"},
                    ],
                }
            ],
            "max_tokens": 1,
        },
    ).json()
    assert two["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 2 * IMAGE_TOKENS


def test_streamed_with_an_image(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={"messages": ask(data_url(png())), "max_tokens": 3, "stream": True}
    )
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("url", "param", "message"),
    [
        (
            "data:image/png;base64,@@@",
            "messages[0].content[0].image_url.url",
            "the image's data: URL is not valid base64",
        ),
        (
            "file:///etc/passwd",
            "messages[0].content[0].image_url.url",
            "an image URL must be a base64 data: URL",
        ),
        (
            "http://127.0.0.1:9/x.png",
            "messages[0].content[0].image_url.url",
            "remote image URLs are off on this server (start it with --allow-remote-images)",
        ),
        (
            data_url(b"not an image"),
            "messages[0].content",
            "the image cannot be decoded: cannot identify image file",
        ),
        (data_url(png()[:60]), "messages[0].content", "the image cannot be decoded"),
        (
            data_url(png((7000, 7000), mode="1")),
            "messages[0].content",
            "the image is 7000x7000 pixels; at most 40000000 pixels",
        ),
    ],
)
def test_bad_images_are_400_naming_the_part(client: TestClient, url: str, param: str, message: str) -> None:
    response = client.post("/v1/chat/completions", json={"messages": ask(url), "max_tokens": 2})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]


def test_images_only_in_user_messages_and_only_for_vision_models(client: TestClient) -> None:
    part = {"type": "image_url", "image_url": {"url": data_url(png())}}
    response = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "system", "content": [part]}, {"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert (
        "content part type 'image_url' is not supported here; use 'text' parts"
        in response.json()["error"]["message"]
    )
    response = client.post("/v1/chat/completions", json={"model": "text", "messages": ask(data_url(png()))})
    assert response.status_code == 400
    assert (
        response.json()["error"]["message"]
        == "this model does not take images (it is not a VisionPlain model)"
    )


@pytest.fixture
def image_host() -> Iterator[str]:
    """A loopback HTTP server with one small image and one too big."""
    small, big = png(), b"\x89PNG" + b"\0" * (21 * 2**20)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = small if self.path == "/small.png" else big if self.path == "/big.png" else None
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_images_when_allowed(vision_dir: Path, tiny_dir: Path, image_host: str) -> None:
    with TestClient(make_app(vision_dir, tiny_dir, allow_remote_images=True)) as client:
        ok = client.post(
            "/v1/chat/completions", json={"messages": ask(f"{image_host}/small.png"), "max_tokens": 1}
        )
        assert ok.status_code == 200
        local = client.post("/v1/chat/completions", json={"messages": ask(data_url(png())), "max_tokens": 1})
        assert ok.json()["usage"] == local.json()["usage"]
        for path, message in (
            ("/missing.png", "fetching the image gave HTTP 404"),
            ("/big.png", "the image is larger than 20 MiB"),
        ):
            response = client.post("/v1/chat/completions", json={"messages": ask(f"{image_host}{path}")})
            assert response.status_code == 400
            assert response.json()["error"]["message"] == message
