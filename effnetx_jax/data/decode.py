"""Image decoding for the input pipelines: encoded bytes -> uint8 RGB [H, W, 3], each image once.

JPEGs (nearly all of ImageNet) go through libjpeg-turbo with the integer-fast DCT and fancy upsampling,
the settings of TensorFlow's `decode_jpeg`, which the reference pipeline uses. `JPEG_DECODER` says how:
- the `_jpeg_crop` C extension (built against the system's libjpeg-turbo when its headers are there)
  decodes only the crop, as TF's `decode_and_crop_jpeg` does: the columns around it, none of the rows
  above it (skipped in the entropy decoder) and nothing below it. Its pixels are identical to those of a
  full decode then crop (it decodes a few columns either side so that chroma upsampling sees the real
  neighbours: `tests/test_jpeg_crop.py` checks equality).
- without the extension, simplejpeg decodes the whole JPEG and the crop is sliced out of it.
When a crop is at least twice the output resolution, the JPEG is decoded at 1/2, 1/4 or 1/8 scale in
the DCT domain (libjpeg's scaled decoding), which costs a fraction of a full decode. Everything else
(PNG, GIF, CMYK or corrupt JPEGs, ImageNet's few PNGs named .JPEG) goes through Pillow. A file neither
can read raises `UndecodableImage`; the pipeline logs and skips that example.
"""

from __future__ import annotations

import io
import math

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

try:
    from effnetx_jax.data import _jpeg_crop
except ImportError:  # built without libjpeg-turbo's headers: whole-image decoding
    _jpeg_crop = None

# A crop box (left, top, right, bottom) in whole pixels of the full-size image.
Box = tuple[int, int, int, int]

JPEG_SIGNATURE = b"\xff\xd8"
DCT_SCALES = (8, 4, 2)  # libjpeg decodes at 1/8, 1/4 and 1/2 scale in the DCT domain

JPEG_DECODER = (
    "libjpeg-turbo, crop only (effnetx_jax.data._jpeg_crop)"
    if _jpeg_crop is not None
    else "simplejpeg, whole image then crop (the _jpeg_crop extension was not built)"
)


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


def _scaled_box(size: tuple[int, int], box: Box, scale: int) -> Box:
    """`box` in pixels of the image decoded at 1/scale, whose sides are libjpeg's ceil(side / scale)."""
    if scale == 1:
        return box
    height, width = size
    rows, cols = math.ceil(height / scale) / height, math.ceil(width / scale) / width
    left, top, right, bottom = box
    return (int(left * cols), int(top * rows), max(int(right * cols), 1), max(int(bottom * rows), 1))


# The two ways of decoding a JPEG crop; each returns None where libjpeg-turbo refuses the file (CMYK,
# corrupt or unsupported), which Pillow then reads if it can.


def _decode_crop_only(data: bytes, size: tuple[int, int], scale: int, box: Box) -> np.ndarray | None:
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        raise UndecodableImage(f"the crop {box} is empty")
    # libjpeg writes the decoded region, a few columns wider than the crop, straight into these rows; the
    # crop is a view of them (rows with a stride, which OpenCV's resize reads as they are).
    rows = np.empty((bottom - top, right - left + _jpeg_crop.REGION_SLACK, 3), np.uint8)
    try:
        offset = _jpeg_crop.decode_crop(data, scale, left, top, right, bottom, rows)
    except ValueError:
        return None
    return rows[:, offset : offset + right - left]


def _decode_whole_then_crop(data: bytes, size: tuple[int, int], scale: int, box: Box) -> np.ndarray | None:
    height, width = size
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
        return None
    return _crop(image, box)


_decode_jpeg_crop = _decode_whole_then_crop if _jpeg_crop is None else _decode_crop_only


def _jpeg_crop_or_none(data: bytes, size: tuple[int, int], box: Box, min_side: int) -> np.ndarray | None:
    """The crop through libjpeg-turbo, at a reduced DCT scale where `min_side` allows; None if it refuses."""
    scale = _dct_scale(box, min_side) if min_side else 1
    return _decode_jpeg_crop(data, size, scale, _scaled_box(size, box, scale))


def decode_crop(data: bytes, size: tuple[int, int], box: Box, min_side: int = 0) -> np.ndarray:
    """The `box` region of the image of `size` (height, width: `image_size(data)`, which the caller
    needed for the box) as uint8 [h, w, 3], decoded at the smallest DCT scale whose crop keeps at
    least `min_side` pixels per side (0: full resolution)."""
    if _is_jpeg(data) and (crop := _jpeg_crop_or_none(data, size, box, min_side)) is not None:
        return crop
    return _crop(_decode_with_pillow(data), box)


def decode(data: bytes) -> np.ndarray:
    """The whole image as uint8 [H, W, 3]."""
    height, width = size = image_size(data)
    return decode_crop(data, size, (0, 0, width, height))
