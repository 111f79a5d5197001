"""Image bytes to a decoded RGB image, with a limit on pixels: a broken, truncated or oversized image
is an `InvalidRequest` naming the content part."""

from __future__ import annotations

import io
from typing import Any

from llmserve.errors import InvalidRequest

MAX_IMAGE_PIXELS = 40_000_000  # about 6300 x 6300


def decode_image(data: bytes, param: str) -> Any:
    """A PIL RGB image; a broken, truncated or oversized image is a 400."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidRequest(
                    f"the image is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels", param=param
                )
            image.load()
            return image.convert("RGB")
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"the image cannot be decoded: {exc}", param=param) from None
