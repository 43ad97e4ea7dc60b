"""Per-example preprocessing of the reference EfficientNet pipeline (reference §6), as Grain transforms.

A record is `{'image': encoded bytes, 'label': int, 'index': dataset index[, 'epoch': int]}`; the
transforms return `{'image': uint8 [R, R, 3], 'label': int32, 'mask': float32, 'skipped': float32}`. Images stay uint8
on the host (a quarter of the bytes of float32): the train and eval steps normalise them with
`config.data.mean`/`std` on the device, as the reference's `model_fn` does.

Training view (`preprocessing.py` of the reference):
1. a crop sampled by TF's `sample_distorted_bounding_box` rule (`sample_distorted_box` below, whole
   pixels, min object covered 0.1, aspect ratio 3/4..4/3, area 0.08..1, 10 attempts); when the
   result is the whole image (no attempt fitted, or the attempt drew the whole image) the reference
   takes the evaluation centre crop instead;
2. decoded from the JPEG (at a reduced DCT scale when the crop is at least twice the resolution);
3. bicubic resize to the resolution, random horizontal flip, then RandAugment or AutoAugment if asked.
Evaluation view: a centre crop of side `int(eval_crop_fraction * shorter side)`, offsets rounded as
TF's, bicubic resize. The paper's rule (before the reference's 2021 change) is a fraction of
`R / (R + 32)`; `effnetx_jax.recipe` sets that per variant.

Resizing (`config.data.resize`) is bicubic with Keys' a = -0.75 and no antialiasing, the kernel
of TF1's `resize_bicubic` that the reference calls. `bicubic` (default) samples at half-pixel
centres with OpenCV's separable SIMD resize (0.1 ms at 224 px); `bicubic_tf1` also reproduces TF1's
sampling grid (`src = dst * scale`, a shift of (scale - 1) / 2 pixels against half-pixel centres)
with a general warp, to within 0.01 of TF's values but ~8x slower: for evaluating weights trained
by the reference exactly as it did. On a photo the two grids differ by ~8 levels on average.

Randomness: each example draws from its own generator seeded by (config.seed, epoch, dataset
index), so a run is reproducible whatever the worker count, and a resumed run is identical.
An image that cannot be decoded is logged with its dataset index (and its file, for image folders)
and comes out black with mask 0: the step ignores it and counts it (`skipped_images`).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import grain
import numpy as np
from absl import logging

from effnetx_jax import config_files
from effnetx_jax.data import augment as augment_lib
from effnetx_jax.data import decode
from effnetx_jax.errors import UserError

# OpenCV's own thread pool would oversubscribe the cores that Grain's threads and workers use.
cv2.setNumThreads(1)

# ImageNet RGB statistics in 0..255 units, as in the official EfficientNet code.
MEAN_RGB = (123.675, 116.28, 103.53)
STDDEV_RGB = (58.395, 57.12, 57.375)

Box = decode.Box


# ------------------------------------------------------------------------------------------------
# Crop boxes (whole pixels, as TF's ops)
# ------------------------------------------------------------------------------------------------


def _random_crop(height: int, width: int, area_range, aspect_ratio: float, rng: np.random.Generator) -> Box | None:
    """One attempt of `sample_distorted_bounding_box`: a box of `aspect_ratio` whose area fraction is in
    `area_range`, or None. Follows TF's kernel: the height is drawn uniformly between the heights of
    the smallest and the largest admissible area, widths are rounded from it, and a box whose
    rounding leaves the area range is nudged by one row, then given up."""
    min_area, max_area = area_range[0] * height * width, area_range[1] * height * width
    crop_height = round(math.sqrt(min_area / aspect_ratio))
    max_height = round(math.sqrt(max_area / aspect_ratio))
    if round(max_height * aspect_ratio) > width:
        # The tallest box whose rounded width still fits the image.
        max_height = int((width + 0.5 - 1e-7) / aspect_ratio)
        if round(max_height * aspect_ratio) > width:
            max_height -= 1
    max_height = min(max_height, height)
    crop_height = min(crop_height, max_height)
    if crop_height < max_height:
        crop_height += int(rng.integers(max_height - crop_height + 1))
    crop_width = round(crop_height * aspect_ratio)
    if crop_width * crop_height < min_area:
        crop_height += 1
        crop_width = round(crop_height * aspect_ratio)
    if crop_width * crop_height > max_area:
        crop_height -= 1
        crop_width = round(crop_height * aspect_ratio)
    area = crop_width * crop_height
    if not (min_area <= area <= max_area and 0 < crop_width <= width and 0 < crop_height <= height):
        return None
    top = int(rng.integers(height - crop_height)) if crop_height < height else 0
    left = int(rng.integers(width - crop_width)) if crop_width < width else 0
    return (left, top, left + crop_width, top + crop_height)


def sample_distorted_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    area_range: tuple[float, float],
    aspect_ratio_range: tuple[float, float],
    min_object_covered: float = 0.1,
    max_attempts: int = 10,
) -> Box:
    """TF's `sample_distorted_bounding_box` with the whole image as the object: the first attempt that
    succeeds and covers at least `min_object_covered` of the image, else the whole image.

    Python's `round` rounds half to even like TF's `lrintf`. TF draws from its own Philox stream, so
    boxes have the same distribution as TF's, not the same values.
    """
    for _ in range(max_attempts):
        aspect_ratio = rng.uniform(*aspect_ratio_range)
        box = _random_crop(height, width, area_range, aspect_ratio, rng)
        if box is not None:
            left, top, right, bottom = box
            # With the whole image as the object, coverage is the crop's area fraction, so crops
            # below min_object_covered (0.1, above the area range's 0.08) are redrawn.
            if (right - left) * (bottom - top) >= min_object_covered * height * width:
                return box
    return (0, 0, width, height)


def centre_crop_box(height: int, width: int, crop_fraction: float) -> Box:
    """The reference's eval crop: a centred square of `int(crop_fraction * shorter side)` pixels."""
    side = max(int(crop_fraction * min(height, width)), 1)
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    return (left, top, left + side, top + side)


@dataclasses.dataclass(frozen=True)
class CropSettings:
    """The crop and flip choices of `config.data`."""

    area_range: tuple[float, float]
    aspect_ratio_range: tuple[float, float]
    eval_crop_fraction: float
    random_flip: bool

    @classmethod
    def from_config(cls, config) -> CropSettings:
        return cls(
            area_range=tuple(map(float, config.data.crop_area_range)),
            aspect_ratio_range=tuple(map(float, config.data.aspect_ratio_range)),
            eval_crop_fraction=float(config.data.eval_crop_fraction),
            random_flip=bool(config.data.random_flip),
        )


def train_crop_box(height: int, width: int, rng: np.random.Generator, settings: CropSettings) -> Box:
    """The reference's training crop: a distorted box, or the eval centre crop where it is the whole image."""
    box = sample_distorted_box(height, width, rng, settings.area_range, settings.aspect_ratio_range)
    if box == (0, 0, width, height):
        return centre_crop_box(height, width, settings.eval_crop_fraction)
    return box


RESIZE_METHODS = ("bicubic", "bicubic_tf1")


def resize(image: np.ndarray, size: int, method: str = "bicubic") -> np.ndarray:
    """Bicubic resize of a uint8 [h, w, 3] image to [size, size, 3] (`method`: see the module docstring)."""
    if method == "bicubic_tf1":
        height, width = image.shape[:2]
        dst_to_src = np.float32([[width / size, 0, 0], [0, height / size, 0]])
        flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
        # Edge replication is TF's clamping of tap indices to the crop.
        return cv2.warpAffine(image, dst_to_src, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)


def eval_image(data: bytes, size: int, crop_fraction: float, method: str) -> np.ndarray:
    """The evaluation view of an encoded image: its centre crop resized to [size, size, 3] uint8; a JPEG
    much larger than the crop is decoded at a reduced DCT scale."""
    height, width = image_size = decode.image_size(data)
    box = centre_crop_box(height, width, crop_fraction)
    return resize(decode.decode_crop(data, image_size, box, size), size, method)


def resize_method(config) -> str:
    method = config.data.resize
    if method not in RESIZE_METHODS:
        config_files.fail("data.resize", f"{method!r} is not one of {', '.join(RESIZE_METHODS)}")
    return method


# ------------------------------------------------------------------------------------------------
# Grain transforms
# ------------------------------------------------------------------------------------------------


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one example's random choices in one epoch: `np.random.default_rng([seed, epoch,
    index])`, built without its argument checks (a quarter of its 20 us, paid once per image)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


@dataclasses.dataclass(frozen=True)
class WithIndex(grain.transforms.MapWithIndex):
    """Adds the record's dataset index (used for seeds and in error messages)."""

    def map_with_index(self, index, record):
        return {**record, "index": index}


@dataclasses.dataclass(frozen=True)
class WithEpoch(grain.transforms.MapWithIndex):
    """Adds the epoch, from the position in a stream that repeats `num_examples` records."""

    num_examples: int

    def map_with_index(self, position, record):
        return {**record, "epoch": position // self.num_examples}


@dataclasses.dataclass(frozen=True)
class _ImageTransform(grain.transforms.Map):
    """Decodes, crops and resizes one record; a record that cannot be decoded comes out masked."""

    size: int
    dataset: str
    resize_method: str

    def view(self, record) -> np.ndarray:
        raise NotImplementedError

    def map(self, record):
        try:
            image, skipped = self.view(record), 0.0
        except decode.UndecodableImage as error:
            logging.warning("%s: skipping the image at %s: %s", self.dataset, _where(record), error)
            image, skipped = np.zeros((self.size, self.size, 3), np.uint8), 1.0
        return {
            "image": image,
            "label": np.int32(record["label"]),
            "mask": np.float32(1.0 - skipped),
            "skipped": np.float32(skipped),
            "index": np.int64(record["index"]),
        }


def _where(record) -> str:
    """The record's dataset index, and its file where the source has one (image folders)."""
    where = f"dataset index {record['index']}"
    return f"{where} ({record['path']})" if "path" in record else where


@dataclasses.dataclass(frozen=True)
class TrainView(_ImageTransform):
    """Random crop, resize, flip and augmentation, seeded by (seed, epoch, index)."""

    seed: int
    crops: CropSettings
    augment: augment_lib.RandAugment | augment_lib.AutoAugment | None

    def view(self, record) -> np.ndarray:
        rng = example_rng(self.seed, record["epoch"], record["index"])
        height, width = size = decode.image_size(record["image"])
        box = train_crop_box(height, width, rng, self.crops)
        image = resize(decode.decode_crop(record["image"], size, box, self.size), self.size, self.resize_method)
        if self.crops.random_flip and rng.random() < 0.5:
            image = cv2.flip(image, 1)  # left-right, into a new contiguous array (faster than a copied view)
        if self.augment is not None:
            image = self.augment(image, rng)
        return image


@dataclasses.dataclass(frozen=True)
class EvalView(_ImageTransform):
    """Centre crop of `crop_fraction` of the shorter side, resized."""

    crop_fraction: float

    def view(self, record) -> np.ndarray:
        return eval_image(record["image"], self.size, self.crop_fraction, self.resize_method)


@dataclasses.dataclass(frozen=True)
class CheckBatch(grain.transforms.Map):
    """Stops the run when most images of a batch cannot be decoded: the data, not one file, is broken."""

    dataset: str
    split: str

    def map(self, batch):
        batch = dict(batch)
        indices = batch.pop("index")  # not needed on the device
        bad = indices[batch["skipped"] == 1]
        if 2 * len(bad) > len(indices):
            raise UserError(
                f"dataset {self.dataset!r}, split {self.split!r}: {len(bad)} of the {len(indices)} images "
                f"of a batch could not be decoded (dataset indices {bad.tolist()}); check the files"
            )
        return batch


def train_view(config) -> TrainView:
    return TrainView(
        size=config.model.resolution,
        dataset=config.dataset,
        resize_method=resize_method(config),
        seed=config.seed,
        crops=CropSettings.from_config(config),
        augment=augment_lib.parse_augment(config.data.augment),
    )


def eval_view(config) -> EvalView:
    return EvalView(
        size=config.model.resolution,
        dataset=config.dataset,
        resize_method=resize_method(config),
        crop_fraction=float(config.data.eval_crop_fraction),
    )
