"""The crop-only JPEG decoder (`effnetx_jax.data._jpeg_crop`, a C extension on libjpeg-turbo): its pixels are
those of a whole-image decode (simplejpeg, the same IFAST DCT and fancy upsampling) then crop, exactly.

The extension is built by `pip install` where libjpeg-turbo's headers exist; CI requires it. These tests fail
when it is missing, unless EFFNETX_ALLOW_NO_JPEG_CROP=1 (then they are reported as skipped)."""

import io
import math
import os

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from effnetx_jax.data import decode

SUBSAMPLINGS = ("420", "422", "444", "440", "411", "Gray")


@pytest.fixture(scope="module")
def jpeg_crop():
    try:
        from effnetx_jax.data import _jpeg_crop
    except ImportError as error:
        if os.environ.get("EFFNETX_ALLOW_NO_JPEG_CROP") == "1":
            pytest.skip(f"the _jpeg_crop extension was not built ({error}); EFFNETX_ALLOW_NO_JPEG_CROP=1")
        raise
    return _jpeg_crop


def textured_jpeg(rng, height: int, width: int, subsampling: str, progressive: bool = False) -> bytes:
    """Smooth colour blobs plus noise: strong chroma edges, so that any upsampling difference shows."""
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    pixels = np.clip(smooth + rng.integers(-30, 31, smooth.shape), 0, 255).astype(np.uint8)
    if progressive:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=True)
        return buffer.getvalue()
    if subsampling == "Gray":
        return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels[..., :1]), quality=90, colorspace="GRAY")
    return simplejpeg.encode_jpeg(pixels, quality=90, colorsubsampling=subsampling)


def whole_then_crop(data: bytes, scale: int, box) -> np.ndarray:
    """The reference: the library's fallback, simplejpeg's whole decode at 1/scale, then sliced."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    return decode._decode_whole_then_crop(data, (height, width), scale, box)


def crop_only(jpeg_crop, data: bytes, scale: int, box) -> np.ndarray:
    left, top, right, bottom = box
    rows = np.empty((bottom - top, right - left + jpeg_crop.REGION_SLACK, 3), np.uint8)
    offset = jpeg_crop.decode_crop(data, scale, left, top, right, bottom, rows)
    return rows[:, offset : offset + right - left]


def boxes(rng, height: int, width: int):
    """Random boxes plus the corners, a single pixel, whole rows and columns of the image."""
    yield from [(0, 0, width, height), (0, 0, 1, 1), (width - 1, height - 1, width, height)]
    yield from [(0, height // 2, width, height // 2 + 1), (width // 2, 0, width // 2 + 1, height)]
    if min(height, width) > 16:
        yield (16, 16, min(width, 33), min(height, 33))  # starts on an iMCU boundary
    for _ in range(6):
        top, bottom = sorted(rng.choice(height + 1, 2, replace=False))
        left, right = sorted(rng.choice(width + 1, 2, replace=False))
        yield (int(left), int(top), int(right), int(bottom))


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_crop_pixels_equal_the_whole_decode_then_crop_at_every_dct_scale(jpeg_crop, subsampling):
    rng = np.random.default_rng(list(map(ord, subsampling)))
    for height, width in [(48, 64), (37, 83), (70, 29)]:
        data = textured_jpeg(rng, height, width, subsampling)
        for scale in (1, 2, 4, 8):
            scaled = (math.ceil(height / scale), math.ceil(width / scale))
            for box in boxes(rng, *scaled):
                expected = whole_then_crop(data, scale, box)
                np.testing.assert_array_equal(crop_only(jpeg_crop, data, scale, box), expected, err_msg=f"{box}")


def test_progressive_jpeg_crops_equal_the_whole_decode(jpeg_crop):
    rng = np.random.default_rng(1)
    data = textured_jpeg(rng, 45, 60, "420", progressive=True)
    for box in boxes(rng, 45, 60):
        np.testing.assert_array_equal(crop_only(jpeg_crop, data, 1, box), whole_then_crop(data, 1, box))


def test_decode_crop_uses_the_extension_and_maps_boxes_onto_the_scaled_image(jpeg_crop):
    assert "_jpeg_crop" in decode.JPEG_DECODER
    data = textured_jpeg(np.random.default_rng(2), 50, 70, "420")
    box = (10, 5, 62, 47)  # 52 x 42: at min_side 10, decoded at 1/4 (42 >= 4 * 10)
    scaled_box = (2, 1, 15, 12)  # int(side * ceil(full / 4) / full) for each edge
    expected = whole_then_crop(data, 4, scaled_box)
    np.testing.assert_array_equal(decode.decode_crop(data, (50, 70), box, min_side=10), expected)


def test_refusals_raise_value_error(jpeg_crop):
    data = textured_jpeg(np.random.default_rng(3), 32, 32, "420")
    cmyk = io.BytesIO()
    Image.new("CMYK", (16, 16), (10, 20, 30, 40)).save(cmyk, "JPEG")
    refused = {
        "truncated": (data[: len(data) // 2], 1, (0, 0, 32, 32)),
        "CMYK": (cmyk.getvalue(), 1, (0, 0, 16, 16)),
        "not a JPEG": (b"not a jpeg at all", 1, (0, 0, 1, 1)),
        "outside the image": (data, 1, (0, 0, 33, 32)),
        "outside the scaled image": (data, 2, (0, 0, 17, 16)),
        "scale 3": (data, 3, (0, 0, 4, 4)),
        "empty": (data, 1, (4, 4, 4, 8)),
    }
    for what, (encoded, scale, (left, top, right, bottom)) in refused.items():
        out = np.empty((max(bottom - top, 1), max(right - left, 1) + jpeg_crop.REGION_SLACK, 3), np.uint8)
        with pytest.raises(ValueError):
            jpeg_crop.decode_crop(encoded, scale, left, top, right, bottom, out)
            pytest.fail(f"{what} was decoded")
    narrow = np.empty((8, 8 + jpeg_crop.REGION_SLACK - 1, 3), np.uint8)
    with pytest.raises(ValueError, match="C-contiguous buffer"):
        jpeg_crop.decode_crop(data, 1, 0, 0, 8, 8, narrow)


def test_damage_below_the_crop_is_never_read(jpeg_crop):
    """A file cut short decodes where the crop lies above the cut (the whole-image decoder refuses it)."""
    data = textured_jpeg(np.random.default_rng(4), 256, 32, "420")
    truncated = data[: len(data) // 2]
    top_rows = (0, 0, 32, 16)
    np.testing.assert_array_equal(crop_only(jpeg_crop, truncated, 1, top_rows), whole_then_crop(data, 1, top_rows))
