"""Per-example preprocessing as Grain transforms: decode, crop and resize, flip, normalise.

`train_transforms(config)` and `eval_transforms(config)` return lists of transforms applied in
order to a TFDS record (`{'image': uint8 [H, W, C], 'label': int}`); each ends with
`{'image': float32 [R, R, 3], 'label': int32}`. Random transforms are `grain.transforms.RandomMap`s:
Grain hands each one a generator seeded from the pipeline seed and the record's position, so the
augmentation of every example is reproducible whatever the worker count. Later augmentations
(RandAugment, AutoAugment) slot in before `Normalize`, batch-level ones (mixup) after batching.

Crops follow the official EfficientNet input pipeline: Inception-style random resized crop for
training with a centre-crop fallback, a centre crop of `eval_crop_fraction` of the shorter side for
evaluation, bicubic resize, then mean/std normalisation in 0..255 units.
"""

from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np
from PIL import Image

# ImageNet RGB statistics in 0..255 units, as in the official EfficientNet code.
MEAN_RGB = (123.675, 116.28, 103.53)
STDDEV_RGB = (58.395, 57.12, 57.375)

# A crop box (left, top, right, bottom) in pixel coordinates, possibly fractional.
Box = tuple[float, float, float, float]


class DecodeExample(grain.transforms.Map):
    """TFDS record -> `{'image': uint8 [H, W, 3], 'label': int32}`; grey images get three channels."""

    def map(self, example):
        image = np.asarray(example["image"])
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return {"image": image, "label": np.int32(example["label"])}


def centre_crop_box(height: int, width: int, crop_fraction: float) -> Box:
    """A centred square of `crop_fraction` of the shorter side (the reference's eval crop)."""
    side = crop_fraction * min(height, width)
    top, left = (height - side) / 2, (width - side) / 2
    return (left, top, left + side, top + side)


def sample_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    area_range: tuple[float, float],
    aspect_ratio_range: tuple[float, float],
    max_attempts: int = 10,
) -> Box | None:
    """An Inception-style random crop, or None when no attempt fits inside the image.

    Area (a fraction of the image) and aspect ratio (width / height) are drawn uniformly, as
    `tf.image.sample_distorted_bounding_box` does. The box is fractional rather than whole pixels so
    that tiny images (8x8 digits) still get a continuum of crops instead of a handful.
    """
    for _ in range(max_attempts):
        area = height * width * rng.uniform(*area_range)
        aspect_ratio = rng.uniform(*aspect_ratio_range)
        crop_width, crop_height = math.sqrt(area * aspect_ratio), math.sqrt(area / aspect_ratio)
        if crop_width <= width and crop_height <= height:
            left, top = rng.uniform(0, width - crop_width), rng.uniform(0, height - crop_height)
            return (left, top, left + crop_width, top + crop_height)
    return None


def crop_and_resize(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Crops `box` out of a uint8 [H, W, 3] image and resizes it to [size, size, 3], bicubic."""
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(resized)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(grain.transforms.RandomMap):
    """Random crop (area and aspect ratio ranges) resized to `size`; falls back to the centre crop."""

    size: int
    area_range: tuple[float, float]
    aspect_ratio_range: tuple[float, float]
    fallback_crop_fraction: float

    def random_map(self, example, rng: np.random.Generator):
        image = example["image"]
        height, width = image.shape[:2]
        box = sample_crop_box(height, width, rng, self.area_range, self.aspect_ratio_range)
        if box is None:
            box = centre_crop_box(height, width, self.fallback_crop_fraction)
        return {**example, "image": crop_and_resize(image, box, self.size)}


class RandomHorizontalFlip(grain.transforms.RandomMap):
    """Mirrors the image left-right with probability 1/2."""

    def random_map(self, example, rng: np.random.Generator):
        if rng.random() < 0.5:
            return {**example, "image": np.ascontiguousarray(example["image"][:, ::-1])}
        return example


@dataclasses.dataclass(frozen=True)
class CentreCrop(grain.transforms.Map):
    """The evaluation view: a centre crop of `crop_fraction` of the shorter side resized to `size`."""

    size: int
    crop_fraction: float

    def map(self, example):
        image = example["image"]
        box = centre_crop_box(*image.shape[:2], self.crop_fraction)
        return {**example, "image": crop_and_resize(image, box, self.size)}


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
    """uint8 -> float32 `(image - mean) / std`, per channel, statistics in 0..255 units."""

    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STDDEV_RGB

    def map(self, example):
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return {**example, "image": (example["image"].astype(np.float32) - mean) / std}


def _pair(values) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    return low, high


def _normalize(config) -> Normalize:
    return Normalize(mean=tuple(map(float, config.data.mean)), std=tuple(map(float, config.data.std)))


def train_transforms(config) -> list[grain.transforms.Transformation]:
    """Decode, random resized crop to `config.model.resolution`, optional flip, normalise."""
    crop = RandomResizedCrop(
        size=config.model.resolution,
        area_range=_pair(config.data.crop_area_range),
        aspect_ratio_range=_pair(config.data.aspect_ratio_range),
        fallback_crop_fraction=float(config.data.eval_crop_fraction),
    )
    flip = [RandomHorizontalFlip()] if config.data.random_flip else []
    return [DecodeExample(), crop, *flip, _normalize(config)]


def eval_transforms(config) -> list[grain.transforms.Transformation]:
    """Decode, centre crop of `config.data.eval_crop_fraction` resized to the resolution, normalise."""
    crop = CentreCrop(size=config.model.resolution, crop_fraction=float(config.data.eval_crop_fraction))
    return [DecodeExample(), crop, _normalize(config)]
