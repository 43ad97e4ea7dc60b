"""Per-image augmentation for training: RandAugment and AutoAugment (policy v0).

A numpy port of the official EfficientNet augmentation (`models/official/efficientnet/autoaugment.py`
in tensorflow/tpu) so that training follows the published recipe without TensorFlow at run time:

- `RandAugment(num_layers, magnitude)` and `AutoAugment(policy)` augment one uint8 [H, W, 3] image.
  The reference runs them on the resized crop clipped to 0..255 and cast to uint8, so every op here
  takes and returns uint8 and reproduces the reference's integer rounding (float32 maths truncated
  by the cast), its fill value 128 for pixels that geometric ops uncover, its magnitude -> argument
  mapping (magnitudes are out of `MAX_LEVEL` = 10) and its known quirks, each noted where it is
  reproduced.
- Mixup and CutMix act on the whole batch on the device: `effnetx_jax.train.mixing`.
- `parse_augment` turns the `config.data.augment` string into one of the two augmenters.

Every random draw comes from the `np.random.Generator` passed in, so a fixed seed reproduces the
output exactly. Pixel work is vectorised numpy; only the three channels are looped over.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from effnetx_jax.errors import UserError

# Magnitudes (levels) are given out of this maximum, as the AutoAugment controller predicted them.
MAX_LEVEL = 10.0

# Grey written where geometric ops and Cutout leave no source pixel ("average" rather than black,
# so that intensity-based ops that follow are not skewed).
FILL_VALUE = 128

# The largest RandAugment magnitude `parse_augment` accepts (the paper's search range is 0..30).
MAX_MAGNITUDE = 30.0


# ---------------------------------------------------------------------------------------------
# Ops: uint8 [H, W, 3] image in, uint8 [H, W, 3] image out.
# ---------------------------------------------------------------------------------------------


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    """image1 + factor * (image2 - image1) in float32, clipped to 0..255 and truncated to uint8.

    factor 0 gives image1, 1 gives image2, above 1 extrapolates away from image1 (clipped).
    """
    first = image1.astype(np.float32)
    blended = first + np.float32(factor) * (image2.astype(np.float32) - first)
    return np.clip(blended, 0.0, 255.0).astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] luma computed as `tf.image.rgb_to_grayscale` does for uint8 input.

    TF scales to 0..1, weights the channels by (0.2989, 0.5870, 0.1140) and converts back by
    multiplying by 255.5 and truncating, which is neither PIL's rounding nor a plain truncation.
    """
    weights = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
    luma = (image.astype(np.float32) * np.float32(1.0 / 255.0)) @ weights
    return (luma * np.float32(255.5)).astype(np.uint8)


def _map_channels(image: np.ndarray, channel_lut: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Maps each channel through its own 256-entry uint8 lookup table, built from that channel."""
    channels = [image[..., c] for c in range(image.shape[-1])]
    return np.stack([channel_lut(channel)[channel] for channel in channels], axis=-1)


def _auto_contrast_lut(channel: np.ndarray) -> np.ndarray:
    """The reference's float32 stretch of [min, max] to [0, 255] as a table (identity if constant)."""
    lo, hi = np.float32(channel.min()), np.float32(channel.max())
    values = np.arange(256, dtype=np.float32)
    if hi == lo:
        return values.astype(np.uint8)
    scale = np.float32(255.0) / (hi - lo)
    return np.clip(values * scale + (-lo * scale), 0.0, 255.0).astype(np.uint8)


def auto_contrast(image: np.ndarray) -> np.ndarray:
    """Stretches each channel linearly so that its minimum becomes 0 and its maximum 255.

    Constant channels are left unchanged. The scaling is float32 and truncated as in the reference,
    so a channel's maximum sometimes lands on 254 (255 / (hi - lo) * (hi - lo) rounds just below 255).
    """
    return _map_channels(image, _auto_contrast_lut)


def _equalize_lut(channel: np.ndarray) -> np.ndarray:
    """PIL's histogram equalisation table for one uint8 channel, as the reference re-implements it."""
    histogram = np.bincount(channel.ravel(), minlength=256)
    present = histogram[histogram > 0]
    # As in PIL, the pixels of the largest value present do not count towards the step.
    step = (present.sum() - present[-1]) // 255
    if step == 0:
        return np.arange(256, dtype=np.uint8)
    lut = (np.cumsum(histogram) + step // 2) // step
    return np.clip(np.concatenate([[0], lut[:-1]]), 0, 255).astype(np.uint8)


def equalize(image: np.ndarray) -> np.ndarray:
    """Equalises the histogram of each channel independently (unchanged when one value dominates)."""
    return _map_channels(image, _equalize_lut)


def invert(image: np.ndarray) -> np.ndarray:
    """255 - pixel."""
    return 255 - image


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keeps the top `bits` bits of every pixel (clears the 8 - bits low ones).

    The reference passes the shift 8 - bits to TF's uint8 shift ops, which clamp shifts above 7 to 7,
    and a negative shift (bits > 8, i.e. magnitude >= 22.5 such as B7's M=28) is converted to uint8
    first and wraps to 248..255. So both bits == 0 and bits > 8 keep only the top bit; we follow that.
    """
    shift = np.uint8(min((8 - bits) % 256, 7))
    return (image >> shift) << shift


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    """Inverts the pixels at or above `threshold` (256 or more leaves the image unchanged)."""
    return np.where(image < threshold, image, 255 - image)


def solarize_add(image: np.ndarray, addition: int, threshold: int = 128) -> np.ndarray:
    """Adds `addition` (clipped to 0..255) to the pixels below `threshold`, keeps the others."""
    added = np.clip(image.astype(np.int32) + addition, 0, 255).astype(np.uint8)
    return np.where(image < threshold, added, image)


def color(image: np.ndarray, factor: float) -> np.ndarray:
    """Saturation: blends the grey version of the image (factor 0) with the image (factor 1)."""
    return blend(np.repeat(grayscale(image)[..., None], 3, axis=-1), image, factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blends a uniform grey image (factor 0) with the image (factor 1).

    Reference quirk, reproduced: the grey level is meant to be the mean luma, but the reference sums
    the 256-bin luma histogram (the pixel count) and divides by 256, so the grey is
    min(H * W / 256, 255) whatever the content: 196 at 224x224, 4 at 32x32, 255 from 256x256 up.
    """
    height, width = image.shape[:2]
    grey = int(min(height * width / 256.0, 255.0))
    return blend(np.full_like(image, grey), image, factor)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blends black (factor 0) with the image (factor 1)."""
    return blend(np.zeros_like(image), image, factor)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blends a smoothed image (factor 0) with the image (factor 1).

    The smoothing is PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 over the interior
    (a VALID convolution in the reference); the one-pixel border keeps the original pixels. The
    reference truncates a float32 convolution; we floor the exact integer sum instead, which differs
    from it only where float32 rounding of the sum crosses an integer.
    """
    pixels = image.astype(np.int16)  # 13 * 255 fits
    vertical_sums = pixels[:-2] + pixels[1:-1] + pixels[2:]
    box_sums = vertical_sums[:, :-2] + vertical_sums[:, 1:-1] + vertical_sums[:, 2:]
    smoothed = image.copy()
    smoothed[1:-1, 1:-1] = (box_sums + 4 * pixels[1:-1, 1:-1]) // 13
    return blend(smoothed, image, factor)


def _round_half_away_from_zero(values: np.ndarray) -> np.ndarray:
    """std::round, which TF's nearest-neighbour sampling uses (numpy's round is half-to-even)."""
    values = values.astype(np.float64)
    return np.trunc(values + np.copysign(0.5, values)).astype(np.int64)


def affine_transform(image: np.ndarray, matrix: tuple[float, float, float, float, float, float]) -> np.ndarray:
    """Resamples the image through an affine map from output to input pixel coordinates.

    `matrix` (a0, a1, a2, b0, b1, b2) sends output pixel (x, y) (column, row) to the input point
    (a0 x + a1 y + a2, b0 x + b1 y + b2), as in `tf.contrib.image.transform`. Sampling is nearest
    neighbour; output pixels whose source falls outside the image get FILL_VALUE, which is what the
    reference's wrap/unwrap trick (an extra all-ones channel that transforms to 0 outside) achieves.
    Coordinates are float32 as in TF.
    """
    height, width = image.shape[:2]
    a0, a1, a2, b0, b1, b2 = (np.float32(v) for v in matrix)
    ys, xs = np.ogrid[:height, :width]
    xs, ys = xs.astype(np.float32), ys.astype(np.float32)
    source_x = _round_half_away_from_zero(a0 * xs + a1 * ys + a2)
    source_y = _round_half_away_from_zero(b0 * xs + b1 * ys + b2)
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    sampled = image[np.clip(source_y, 0, height - 1), np.clip(source_x, 0, width - 1)]
    return np.where(inside[..., None], sampled, np.uint8(FILL_VALUE))


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates about the image centre, counter-clockwise as displayed for positive `degrees`.

    (The reference's docstring says clockwise, but `tf.contrib.image.rotate`, which it calls, turns
    counter-clockwise: rotate(image, 90) equals np.rot90(image) on a square image. Its callers negate
    the angle at random anyway.)
    """
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    centre_x, centre_y = (image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2
    # input = R (output - centre) + centre with R = [[cos, -sin], [sin, cos]].
    offset_x = centre_x - cos * centre_x + sin * centre_y
    offset_y = centre_y - sin * centre_x - cos * centre_y
    return affine_transform(image, (cos, -sin, offset_x, sin, cos, offset_y))


def translate_x(image: np.ndarray, pixels: float) -> np.ndarray:
    """Output pixel (x, y) takes input pixel (x + pixels, y): positive `pixels` moves content left."""
    return affine_transform(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0))


def translate_y(image: np.ndarray, pixels: float) -> np.ndarray:
    """Output pixel (x, y) takes input pixel (x, y + pixels): positive `pixels` moves content up."""
    return affine_transform(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels))


def shear_x(image: np.ndarray, level: float) -> np.ndarray:
    """Output pixel (x, y) takes input pixel (x + level * y, y)."""
    return affine_transform(image, (1.0, level, 0.0, 0.0, 1.0, 0.0))


def shear_y(image: np.ndarray, level: float) -> np.ndarray:
    """Output pixel (x, y) takes input pixel (x, level * x + y)."""
    return affine_transform(image, (1.0, 0.0, 0.0, level, 1.0, 0.0))


def cutout(image: np.ndarray, pad_size: int, rng: np.random.Generator) -> np.ndarray:
    """Fills a (2 pad_size)-sided square, cropped at the image border, with FILL_VALUE.

    The centre is uniform over all pixels (row first, as the reference draws it), so boxes near an
    edge are smaller.
    """
    height, width = image.shape[:2]
    centre_y, centre_x = rng.integers(height), rng.integers(width)
    out = image.copy()
    rows = slice(max(0, centre_y - pad_size), min(height, centre_y + pad_size))
    cols = slice(max(0, centre_x - pad_size), min(width, centre_x + pad_size))
    out[rows, cols] = FILL_VALUE
    return out


# ---------------------------------------------------------------------------------------------
# Magnitude (level, out of MAX_LEVEL) -> op arguments, as in the reference's `level_to_arg`.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyConstants:
    """Per-policy scales for the two ops whose argument is in pixels."""

    cutout_const: int
    translate_const: int


RANDAUGMENT_CONSTANTS = PolicyConstants(cutout_const=40, translate_const=100)
AUTOAUGMENT_CONSTANTS = PolicyConstants(cutout_const=100, translate_const=250)

LevelToArgs = Callable[[float, PolicyConstants, np.random.Generator], tuple]


def randomly_negate(value: float, rng: np.random.Generator) -> float:
    """-value with probability 1/2, so that geometric ops go either way."""
    return -value if rng.random() < 0.5 else value


def _no_args(level, constants, rng) -> tuple:
    return ()


def _rotate_args(level, constants, rng) -> tuple:
    return (randomly_negate(level / MAX_LEVEL * 30.0, rng),)


def _posterize_args(level, constants, rng) -> tuple:
    # Bits kept grow with the magnitude (4 at level 10), so a larger magnitude posterizes less.
    return (int(level / MAX_LEVEL * 4),)


def _solarize_args(level, constants, rng) -> tuple:
    # The threshold grows with the magnitude (256, no-op, at level 10): larger magnitude, milder op.
    return (int(level / MAX_LEVEL * 256),)


def _solarize_add_args(level, constants, rng) -> tuple:
    return (int(level / MAX_LEVEL * 110),)


def _enhance_args(level, constants, rng) -> tuple:
    # Factor 0.1 at level 0 and 1.9 at level 10, never negated: 1.0 (identity) sits at level 5.
    return (level / MAX_LEVEL * 1.8 + 0.1,)


def _shear_args(level, constants, rng) -> tuple:
    return (randomly_negate(level / MAX_LEVEL * 0.3, rng),)


def _translate_args(level, constants, rng) -> tuple:
    return (randomly_negate(level / MAX_LEVEL * constants.translate_const, rng),)


def _cutout_args(level, constants, rng) -> tuple:
    # Cutout draws its position at random, so it also takes the generator.
    return (int(level / MAX_LEVEL * constants.cutout_const), rng)


class Op(NamedTuple):
    """An image op and the mapping from a magnitude to its extra arguments."""

    apply: Callable[..., np.ndarray]
    level_to_args: LevelToArgs


OPS: dict[str, Op] = {
    "AutoContrast": Op(auto_contrast, _no_args),
    "Equalize": Op(equalize, _no_args),
    "Invert": Op(invert, _no_args),
    "Rotate": Op(rotate, _rotate_args),
    "Posterize": Op(posterize, _posterize_args),
    "Solarize": Op(solarize, _solarize_args),
    "SolarizeAdd": Op(solarize_add, _solarize_add_args),
    "Color": Op(color, _enhance_args),
    "Contrast": Op(contrast, _enhance_args),
    "Brightness": Op(brightness, _enhance_args),
    "Sharpness": Op(sharpness, _enhance_args),
    "ShearX": Op(shear_x, _shear_args),
    "ShearY": Op(shear_y, _shear_args),
    "TranslateX": Op(translate_x, _translate_args),
    "TranslateY": Op(translate_y, _translate_args),
    "Cutout": Op(cutout, _cutout_args),
}


def apply_op(
    name: str, image: np.ndarray, level: float, constants: PolicyConstants, rng: np.random.Generator
) -> np.ndarray:
    """Applies the op `name` at magnitude `level` (out of MAX_LEVEL)."""
    op = OPS[name]
    return op.apply(image, *op.level_to_args(level, constants, rng))


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"augmentation expects a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")


# ---------------------------------------------------------------------------------------------
# RandAugment and AutoAugment.
# ---------------------------------------------------------------------------------------------

# The reference's RandAugment choices, in its order (all 16 ops).
RANDAUGMENT_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
    "SolarizeAdd",
)

# (op, probability, magnitude) pairs: AutoAugment's ImageNet policy, one sub-policy drawn per image.
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

AUTOAUGMENT_POLICIES = {"v0": POLICY_V0}


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """RandAugment (Cubuk et al. 2019): `num_layers` ops drawn uniformly from the 16, each at `magnitude`.

    Reference quirk, reproduced: the reference draws a probability in 0.2..0.8 for every op but never
    uses it, so the selected op is always applied.
    """

    num_layers: int = 2
    magnitude: float = 10

    def __post_init__(self):
        if self.num_layers < 0:
            raise UserError(f"RandAugment num_layers must be >= 0, got {self.num_layers}")
        if not 0 <= self.magnitude <= MAX_MAGNITUDE:
            raise UserError(f"RandAugment magnitude must be in 0..{MAX_MAGNITUDE:g}, got {self.magnitude}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        for _ in range(self.num_layers):
            name = RANDAUGMENT_OPS[rng.integers(len(RANDAUGMENT_OPS))]
            image = apply_op(name, image, self.magnitude, RANDAUGMENT_CONSTANTS, rng)
        return image


@dataclasses.dataclass(frozen=True)
class AutoAugment:
    """AutoAugment (Cubuk et al. 2018): one sub-policy drawn uniformly, each of its ops applied with its
    probability at its magnitude."""

    policy: str = "v0"

    def __post_init__(self):
        if self.policy not in AUTOAUGMENT_POLICIES:
            raise UserError(f"unknown AutoAugment policy {self.policy!r}; known: {sorted(AUTOAUGMENT_POLICIES)}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        sub_policies = AUTOAUGMENT_POLICIES[self.policy]
        for name, probability, level in sub_policies[rng.integers(len(sub_policies))]:
            if rng.random() < probability:
                image = apply_op(name, image, level, AUTOAUGMENT_CONSTANTS, rng)
        return image


_ACCEPTED_FORMS = (
    "'' or 'none', 'randaugment' (N=2, M=10), 'randaugment(N,M)' with N >= 0 layers and magnitude "
    f"0 <= M <= {MAX_MAGNITUDE:g}, 'autoaugment' or 'autoaugment(v0)'"
)
_RANDAUGMENT_SPEC = re.compile(r"randaugment(?:\(\s*(\d+)\s*,\s*(\d+(?:\.\d*)?)\s*\))?")
_AUTOAUGMENT_SPEC = re.compile(r"autoaugment(?:\(\s*(\w+)\s*\))?")


def parse_augment(spec: str) -> RandAugment | AutoAugment | None:
    """`config.data.augment` -> the augmenter it names, or None for no augmentation."""
    text = spec.strip().lower()
    try:
        if text in ("", "none"):
            return None
        if match := _RANDAUGMENT_SPEC.fullmatch(text):
            layers, magnitude = match.groups()
            return RandAugment() if layers is None else RandAugment(int(layers), float(magnitude))
        if match := _AUTOAUGMENT_SPEC.fullmatch(text):
            return AutoAugment(match.group(1) or "v0")
        reason = "unrecognised form"
    except ValueError as error:
        reason = str(error)
    raise UserError(f"config.data.augment={spec!r} is invalid ({reason}); accepted forms: {_ACCEPTED_FORMS}")
