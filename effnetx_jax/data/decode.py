"""Image decoding for the input pipelines: encoded bytes -> uint8 RGB [H, W, 3], each image once.

JPEGs (nearly all of ImageNet) go through libjpeg-turbo (simplejpeg) with the integer-fast DCT and
fancy upsampling, the settings of TensorFlow's `decode_jpeg`, which the reference pipeline uses. When
a crop is at least twice the output resolution, the JPEG is decoded at 1/2, 1/4 or 1/8 scale in the
DCT domain (libjpeg's scaled decoding), which costs a fraction of a full decode. Everything else
(PNG, GIF, CMYK or progressive-with-errors JPEGs, ImageNet's few PNGs named .JPEG) goes through Pillow.
A file neither can read raises `UndecodableImage`; the pipeline logs and skips that example.
"""

from __future__ import annotations

import io
import math

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

# A crop box (left, top, right, bottom) in whole pixels of the full-size image.
Box = tuple[int, int, int, int]

JPEG_SIGNATURE = b"\xff\xd8"
DCT_SCALES = (8, 4, 2)  # libjpeg decodes at 1/8, 1/4 and 1/2 scale in the DCT domain


class UndecodableImage(ValueError):
    """The bytes are not an image any decoder here can read (truncated, corrupt or another format)."""


def _is_jpeg(data: bytes) -> bool:
    return data[:2] == JPEG_SIGNATURE


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from its header only."""
    if _is_jpeg(data):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        except ValueError:
            pass  # a JPEG header libjpeg-turbo rejects: let Pillow try
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UndecodableImage(f"not a readable image ({len(data)} bytes): {error}") from error


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UndecodableImage(f"not a readable image ({len(data)} bytes): {error}") from error


def _dct_scale(box: Box, min_side: int) -> int:
    """The largest factor 1/s (s in 1, 2, 4, 8) that keeps both sides of `box` at least `min_side`."""
    left, top, right, bottom = box
    shorter = min(right - left, bottom - top)
    return next((scale for scale in DCT_SCALES if shorter >= scale * min_side), 1)


def _crop(image: np.ndarray, box: Box) -> np.ndarray:
    left, top, right, bottom = box
    crop = image[top:bottom, left:right]
    if crop.size == 0:
        raise UndecodableImage(f"the crop {box} is empty in a decoded image of shape {image.shape}")
    return crop


def _jpeg_crop(data: bytes, size: tuple[int, int], box: Box, min_side: int) -> np.ndarray | None:
    """The crop through libjpeg-turbo, at a reduced DCT scale where `min_side` allows; None if it refuses."""
    height, width = size
    scale = _dct_scale(box, min_side) if min_side else 1
    try:
        image = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            fastdct=True,
            min_height=math.ceil(height / scale),
            min_width=math.ceil(width / scale),
            min_factor=scale,
        )
    except ValueError:
        return None  # CMYK, corrupt or unsupported: Pillow reads what can be read
    if scale > 1:
        # libjpeg's scaled size is ceil(side / scale); map the box onto the decoded pixels.
        rows, cols = image.shape[0] / height, image.shape[1] / width
        left, top, right, bottom = box
        box = (int(left * cols), int(top * rows), max(int(right * cols), 1), max(int(bottom * rows), 1))
    return _crop(image, box)


def decode_crop(data: bytes, size: tuple[int, int], box: Box, min_side: int = 0) -> np.ndarray:
    """The `box` region of the image of `size` (height, width: `image_size(data)`, which the caller
    needed for the box) as uint8 [h, w, 3], decoded at the smallest DCT scale whose crop keeps at
    least `min_side` pixels per side (0: full resolution)."""
    if _is_jpeg(data) and (crop := _jpeg_crop(data, size, box, min_side)) is not None:
        return crop
    return _crop(_decode_with_pillow(data), box)


def decode(data: bytes) -> np.ndarray:
    """The whole image as uint8 [H, W, 3]."""
    height, width = size = image_size(data)
    return decode_crop(data, size, (0, 0, width, height))
