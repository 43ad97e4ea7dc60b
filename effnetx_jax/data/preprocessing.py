"""Per-example preprocessing of the reference EfficientNet pipeline (reference §6), and the Grain
transform that makes batches of it.

A record is `{'image': encoded bytes, 'label': int, 'index': dataset index[, 'epoch': int]}`; a view
(`train_view`, `eval_view`) turns it into a uint8 [R, R, 3] image, and `ReadBatch` reads a batch of
records and writes their views into `{'image': uint8 [b, R, R, 3], 'label': int32 [b], 'mask':
float32 [b], 'skipped': float32 [b]}`. Images stay uint8 on the host (a quarter of the bytes of
float32): the train and eval steps normalise them with `config.data.mean`/`std` on the device, as the
reference's `model_fn` does.

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


def resize(image: np.ndarray, size: int, method: str = "bicubic", out: np.ndarray | None = None) -> np.ndarray:
    """Bicubic resize of a uint8 [h, w, 3] image to [size, size, 3] (`method`: see the module docstring),
    into `out` (a C-contiguous uint8 [size, size, 3] array) if given."""
    if method == "bicubic_tf1":
        height, width = image.shape[:2]
        dst_to_src = np.float32([[width / size, 0, 0], [0, height / size, 0]])
        flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
        # Edge replication is TF's clamping of tap indices to the crop.
        return cv2.warpAffine(image, dst_to_src, (size, size), dst=out, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(image, (size, size), dst=out, interpolation=cv2.INTER_CUBIC)


def eval_image(data: bytes, size: int, crop_fraction: float, method: str, out: np.ndarray | None = None) -> np.ndarray:
    """The evaluation view of an encoded image: its centre crop resized to [size, size, 3] uint8 (into
    `out` if given); a JPEG much larger than the crop is decoded at a reduced DCT scale."""
    height, width = image_size = decode.image_size(data)
    box = centre_crop_box(height, width, crop_fraction)
    return resize(decode.decode_crop(data, image_size, box, size), size, method, out)


def resize_method(config) -> str:
    method = config.data.resize
    if method not in RESIZE_METHODS:
        config_files.fail("data.resize", f"{method!r} is not one of {', '.join(RESIZE_METHODS)}")
    return method


# ------------------------------------------------------------------------------------------------
# Views: one record's image
# ------------------------------------------------------------------------------------------------


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one example's random choices in one epoch: `np.random.default_rng([seed, epoch,
    index])`, built without its argument checks (a quarter of its 20 us, paid once per image)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


@dataclasses.dataclass(frozen=True)
class _View:
    """Decodes, crops and resizes the image of one record into a uint8 [size, size, 3] array."""

    size: int
    dataset: str
    resize_method: str

    def fill(self, record, out: np.ndarray) -> None:
        """Writes the view of `record` into `out`; raises `decode.UndecodableImage` before writing if the
        image cannot be decoded."""
        raise NotImplementedError

    def image(self, record) -> np.ndarray:
        """The view of `record` as a new array."""
        out = np.empty((self.size, self.size, 3), np.uint8)
        self.fill(record, out)
        return out


@dataclasses.dataclass(frozen=True)
class TrainView(_View):
    """Random crop, resize, flip and augmentation, seeded by (seed, epoch, index)."""

    seed: int
    crops: CropSettings
    augment: augment_lib.RandAugment | augment_lib.AutoAugment | None

    def fill(self, record, out: np.ndarray) -> None:
        rng = example_rng(self.seed, record["epoch"], record["index"])
        height, width = size = decode.image_size(record["image"])
        box = train_crop_box(height, width, rng, self.crops)
        resize(decode.decode_crop(record["image"], size, box, self.size), self.size, self.resize_method, out)
        if self.crops.random_flip and rng.random() < 0.5:
            cv2.flip(out, 1, dst=out)  # left-right, in place
        if self.augment is not None:
            out[...] = self.augment(out, rng)


@dataclasses.dataclass(frozen=True)
class EvalView(_View):
    """Centre crop of `crop_fraction` of the shorter side, resized."""

    crop_fraction: float

    def fill(self, record, out: np.ndarray) -> None:
        eval_image(record["image"], self.size, self.crop_fraction, self.resize_method, out)


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


# ------------------------------------------------------------------------------------------------
# Grain transforms: batches of views
# ------------------------------------------------------------------------------------------------


def empty_batch(batch_size: int, image_shape, new_images=np.zeros) -> dict[str, np.ndarray]:
    """An all-masked batch of zeros with the keys, dtypes and shapes of every batch the pipelines make;
    its images are allocated by `new_images` (np.empty: for a batch whose every row will be written)."""
    return {
        "image": new_images((batch_size, *image_shape), np.uint8),
        "label": np.zeros(batch_size, np.int32),
        "mask": np.zeros(batch_size, np.float32),
        "skipped": np.zeros(batch_size, np.float32),
    }


@dataclasses.dataclass(frozen=True)
class StreamIds(grain.transforms.MapWithIndex):
    """Pairs a stream's element, a dataset index, with its position in the stream: int64 [position, index]."""

    def map_with_index(self, position, index):
        return np.array([position, index], np.int64)


@dataclasses.dataclass(frozen=True)
class ReadBatch(grain.transforms.Map):
    """Reads the records of a batch of `StreamIds` from `source` and writes their views into one batch.

    Each view goes straight into its row of the batch, with no per-example array, Grain stage or
    stacking copy (what that saves: docs/data.md, "Input pipeline speed"). The epoch of an example is its stream
    position // `num_examples`. An image that cannot be decoded comes out black with mask 0; a batch where
    most cannot stops the run: the data, not one file, is broken.
    """

    source: object  # index -> {"image": encoded bytes, "label": int[, "path": str]}
    view: TrainView | EvalView
    num_examples: int
    split: str

    def map(self, ids):
        size = self.view.size
        # Each row is written by its view, or zeroed below: no pass that zeroes the whole batch first.
        batch = empty_batch(len(ids), (size, size, 3), new_images=np.empty)
        for row, (position, index) in enumerate(ids.tolist()):
            record = {**self.source[index], "index": index, "epoch": position // self.num_examples}
            batch["label"][row] = record["label"]
            try:
                self.view.fill(record, batch["image"][row])
            except decode.UndecodableImage as error:
                logging.warning("%s: skipping the image at %s: %s", self.view.dataset, _where(record), error)
                batch["image"][row] = 0
                batch["skipped"][row] = 1.0
            else:
                batch["mask"][row] = 1.0
        self._check(ids[:, 1], batch["skipped"])
        return batch

    def _check(self, indices: np.ndarray, skipped: np.ndarray) -> None:
        bad = indices[skipped == 1]
        if 2 * len(bad) > len(indices):
            raise UserError(
                f"dataset {self.view.dataset!r}, split {self.split!r}: {len(bad)} of the {len(indices)} images "
                f"of a batch could not be decoded (dataset indices {bad.tolist()}); check the files"
            )


def _where(record) -> str:
    """The record's dataset index, and its file where the source has one (image folders)."""
    where = f"dataset index {record['index']}"
    return f"{where} ({record['path']})" if "path" in record else where
