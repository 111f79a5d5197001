"""Images in chat messages: OpenAI `image_url` parts to bytes (base64 `data:` URLs; http(s) only when the
server allows remote images, with a size limit and a timeout); the engine decodes them
(`engine/images.py`). Every problem is an `InvalidRequest` naming the content part."""

from __future__ import annotations

import base64
import binascii
import re

from llmserve.errors import InvalidRequest

MAX_IMAGE_BYTES = 20 * 2**20
REMOTE_TIMEOUT = 10.0
_DATA_URL = re.compile(r"^data:(image/[\w.+-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)


def data_url_bytes(url: str, param: str) -> bytes:
    """The bytes of a base64 `data:` URL."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest(
            "an image URL must be a base64 data: URL (data:image/png;base64,...)", param=param
        )
    payload = url[match.end() :]
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequest(f"the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB", param=param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the image's data: URL is not valid base64", param=param) from None


async def fetch_image(url: str, param: str, *, allow_remote: bool) -> bytes:
    """The bytes behind an http(s) URL, when remote images are allowed."""
    if not allow_remote:
        raise InvalidRequest(
            "remote image URLs are off on this server (start it with --allow-remote-images); "
            "send the image as a base64 data: URL",
            param=param,
        )
    import httpx

    try:
        async with (
            httpx.AsyncClient(timeout=REMOTE_TIMEOUT, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidRequest(f"fetching the image gave HTTP {response.status_code}", param=param)
            data = bytearray()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > MAX_IMAGE_BYTES:
                    raise InvalidRequest(
                        f"the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB", param=param
                    )
            return bytes(data)
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"fetching the image failed: {type(exc).__name__}", param=param) from None


async def image_bytes(url: str, param: str, *, allow_remote: bool) -> bytes:
    if url.lower().startswith(("http://", "https://")):
        return await fetch_image(url, param, allow_remote=allow_remote)
    return data_url_bytes(url, param)
