"""`synthetic_imagenet`: random-content JPEGs with ImageNet's sizes, for tests and input benchmarks.

ImageNet's JPEGs are of mixed sizes and shapes (about 400x350 on average, 110 KB), mostly colour
baseline JPEGs with a few greyscale ones, CMYK ones and PNGs named .JPEG. This dataset has the same
mix, built locally in seconds with no download, so the input pipeline (decode, crop, resize,
augment) is exercised and timed on realistic files. The content is smooth random colour fields
plus grain, which compresses like a photo (about 100 KB at quality 90 for 470x370); it carries no
class information, so accuracy on it means nothing.

Configs:
- `small`: 48 train / 24 validation images, 10 classes, sizes 40..640 px; every 16th image is
  greyscale, every 32nd a PNG, every 40th a CMYK JPEG (tests).
- `bench`: 1,024 train / 256 validation images, 10 classes, sizes 300..640 px; every 16th image is
  greyscale, the others colour JPEGs, as TFDS's imagenet2012 stores them (it re-encodes the CMYK
  and PNG files), so that TF's JPEG-only ops read them too (`data.bench`).
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NUM_CLASSES = 10
QUALITY = 90


def random_jpeg(rng: np.random.Generator, height: int, width: int, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """Encoded bytes of a random photo-like image: blurred colour blobs plus grain."""
    coarse = rng.integers(0, 256, (max(height // 24, 2), max(width // 24, 2), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    grain = rng.normal(0.0, 12.0, (height, width, 3))
    image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": QUALITY} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _image_of(index: int, rng: np.random.Generator, min_side: int, max_side: int, odd_formats: bool) -> bytes:
    width = int(rng.integers(min_side, max_side + 1))
    height = int(np.clip(width / rng.uniform(0.6, 1.8), min_side // 2, max_side))
    if odd_formats and index % 40 == 39:
        return random_jpeg(rng, height, width, mode="CMYK")
    if odd_formats and index % 32 == 31:
        return random_jpeg(rng, height, width, fmt="PNG")
    if index % 16 == 15:
        return random_jpeg(rng, height, width, mode="L")
    return random_jpeg(rng, height, width)


def examples(count: int, seed: int, min_side: int, max_side: int, odd_formats: bool = True):
    """(encoded image, label) pairs: labels cycle through the classes."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        yield _image_of(index, rng, min_side, max_side, odd_formats), index % NUM_CLASSES


def write_image_folder(root: str, counts: dict[str, int], seed: int = 0, min_side: int = 40, max_side: int = 640):
    """Writes `root/<split>/class_<k>/<i>.jpg` (PNG content where `examples` makes one, as ImageNet has)."""
    for offset, (split, count) in enumerate(counts.items()):
        for index, (data, label) in enumerate(examples(count, seed + offset, min_side, max_side)):
            folder = os.path.join(root, split, f"class_{label}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{index:05d}.jpg"), "wb") as file:
                file.write(data)


class SyntheticImagenetConfig(tfds.core.BuilderConfig):
    def __init__(self, *, train: int, validation: int, min_side: int, max_side: int, odd_formats: bool, **kwargs):
        super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
        self.counts = {"train": train, "validation": validation}
        self.min_side, self.max_side, self.odd_formats = min_side, max_side, odd_formats


class SyntheticImagenet(tfds.core.GeneratorBasedBuilder):
    """Random-content JPEGs with ImageNet's mix of sizes and formats (see the module docstring)."""

    BUILDER_CONFIGS = [  # noqa: RUF012  (TFDS reads this class attribute)
        SyntheticImagenetConfig(name="small", train=48, validation=24, min_side=40, max_side=640, odd_formats=True),
        SyntheticImagenetConfig(
            name="bench", train=1024, validation=256, min_side=300, max_side=640, odd_formats=False
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally
        config = self.builder_config
        return {
            split: self._generate_examples(count, seed, config)
            for seed, (split, count) in enumerate(config.counts.items())
        }

    def _generate_examples(self, count: int, seed: int, config: SyntheticImagenetConfig):
        pairs = examples(count, seed, config.min_side, config.max_side, config.odd_formats)
        for index, (data, label) in enumerate(pairs):
            # A file object: TFDS stores its bytes as they are (no re-encoding), as for ImageNet's files.
            yield index, {"image": io.BytesIO(data), "label": label}
