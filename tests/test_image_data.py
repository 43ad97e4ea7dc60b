"""ImageNet-style data: JPEG decoding, the synthetic ImageNet-like TFDS dataset in array_record, image
folders, undecodable files, the augmentation preview on real photos, and two training steps with
the full augmentation."""

import functools
import io
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from configs import quickstart
from effnetx_jax import data
from effnetx_jax.data import decode, preprocessing, preview, sources
from effnetx_jax.data.synthetic import random_jpeg, write_image_folder
from effnetx_jax.errors import UserError

from command_line import run_tool
from conftest import PLUMBING_BLOCKS

RESOLUTION = 32


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    sources.ensure_prepared("synthetic_imagenet/small", path)
    return path


def image_config(dataset, data_dir=None, **overrides):
    """The quickstart trainer on an ImageNet-like dataset: ImageNet crops, flips and statistics, 32 px."""
    config = quickstart.get_config()
    config.update(dataset=dataset, data_dir=data_dir, train_split="train", eval_split="validation")
    config.update(batch_size=8, eval_batch_size=8)
    config.data.update(
        crop_area_range=(0.08, 1.0), random_flip=True, eval_crop_fraction=0.875, mean=data.MEAN_RGB, std=data.STDDEV_RGB
    )
    config.update_from_flattened_dict(overrides)
    return config


def photo() -> bytes:
    with open(preview.sample_photos()[0], "rb") as file:
        return file.read()


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


def test_reduced_scale_decoding_keeps_the_crop_at_least_the_output_size():
    data_bytes = photo()  # 427 x 640
    assert decode.image_size(data_bytes) == (427, 640)
    full = decode.decode(data_bytes)
    assert full.shape == (427, 640, 3)
    box = (100, 20, 600, 420)  # 500 x 400
    exact = decode.decode_crop(data_bytes, (427, 640), box)
    np.testing.assert_array_equal(exact, full[20:420, 100:600])
    half = decode.decode_crop(data_bytes, (427, 640), box, min_side=150)  # 400 >= 2 * 150: decoded at 1/2 scale
    assert half.shape == (200, 250, 3)
    quarter = decode.decode_crop(data_bytes, (427, 640), box, min_side=100)
    assert quarter.shape == (100, 125, 3)
    # The DCT-domain reduction is a low-pass view of the same pixels.
    downscaled = np.asarray(Image.fromarray(exact).resize((250, 200), Image.Resampling.BOX), np.float32)
    assert np.abs(half.astype(np.float32) - downscaled).mean() < 4


@pytest.mark.parametrize(("mode", "fmt"), [("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG"), ("RGBA", "PNG")])
def test_every_format_of_imagenet_decodes_to_rgb(mode, fmt):
    rng = np.random.default_rng(0)
    encoded = random_jpeg(rng, 30, 40, mode="RGB", fmt="PNG")
    image = Image.open(io.BytesIO(encoded)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    decoded = decode.decode(buffer.getvalue())
    assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8


@pytest.mark.parametrize("data_bytes", [photo()[:5000], b"not an image at all", b""])
def test_truncated_or_foreign_bytes_raise_undecodable_image(data_bytes):
    with pytest.raises(decode.UndecodableImage, match="not a readable image"):
        decode.decode(data_bytes)


def test_resize_has_tensorflows_bicubic_kernel_and_optionally_its_tf1_sampling_grid():
    import tensorflow as tf

    crop = decode.decode_crop(photo(), (427, 640), (0, 0, 400, 400))
    legacy = tf.compat.v1.image.resize_bicubic(crop[None], [224, 224])[0].numpy()
    tf1_grid = preprocessing.resize(crop, 224, "bicubic_tf1").astype(np.float32)
    assert np.abs(tf1_grid - np.clip(legacy, 0, 255)).mean() < 0.3  # uint8 rounding
    # The default grid is half-pixel centred: TF's a=-0.5 kernel on that grid is within a level.
    half_pixel = tf.compat.v1.image.resize_bicubic(crop[None], [224, 224], half_pixel_centers=True)[0].numpy()
    fast = preprocessing.resize(crop, 224).astype(np.float32)
    assert np.abs(fast - np.clip(half_pixel, 0, 255)).mean() < 1.5
    assert np.abs(fast - tf1_grid).mean() > 3  # the grids differ by 0.39 px on this 400 -> 224 resize


# ------------------------------------------------------------------------------------------------
# Datasets: TFDS array_record and image folders
# ------------------------------------------------------------------------------------------------


def test_synthetic_imagenet_in_array_record_evaluates_every_image_of_every_format(tfds_dir):
    config = image_config("synthetic_imagenet/small", tfds_dir)
    info = data.dataset_info(config)
    assert (info.num_classes, info.num_train, info.num_eval) == (10, 48, 24)
    assert os.path.exists(os.path.join(tfds_dir, "synthetic_imagenet", "small", "1.0.0"))
    batches = list(data.eval_batches(config))
    images = np.concatenate([b["image"] for b in batches])
    assert sum(b["mask"].sum() for b in batches) == 24 and sum(b["skipped"].sum() for b in batches) == 0
    assert images.dtype == np.uint8 and images.shape == (24, RESOLUTION, RESOLUTION, 3)
    assert all(image.std() > 5 for image in images)  # greyscale, CMYK and PNG files decoded, not blank


BENCH_LINE = re.compile(r"(train|eval), (in this process, 1 thread|\d worker process(es)?) +(\d+) img/s")


def test_data_bench_times_the_training_and_evaluation_pipelines(tfds_dir, capsys):
    flags = ["--dataset=synthetic_imagenet/small", f"--data_dir={tfds_dir}", "--resolution=32", "--batch=8"]
    assert run_tool("data_bench", *flags, "--batches=2", "--warmup_batches=1", "--workers=0") is None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("synthetic_imagenet/small: 48 train / 24 eval images, output 32 px, batch 8")
    assert lines[1].startswith("JPEG decoder: ")
    timed = [BENCH_LINE.fullmatch(line) for line in lines[2:]]
    assert [(m.group(1), m.group(2)) for m in timed] == [
        ("train", "in this process, 1 thread"),
        ("eval", "in this process, 1 thread"),
    ]
    assert all(int(m.group(4)) > 0 for m in timed)


def test_image_folder_dataset_labels_from_class_folders(tmp_path):
    write_image_folder(str(tmp_path), {"train": 20, "val": 10}, max_side=120)
    config = image_config(f"folder:{tmp_path}", eval_split="val")
    info = data.dataset_info(config)
    assert (info.num_classes, info.num_train, info.num_eval) == (10, 20, 10)
    source = sources.open_split(config, "eval_split")
    assert source[0]["label"] == 0 and source[9]["label"] == 9  # class_0 .. class_9, sorted
    batch = next(iter(data.train_loader(config)))
    assert batch["image"].shape == (8, RESOLUTION, RESOLUTION, 3) and batch["skipped"].sum() == 0


def test_image_folder_errors_name_the_problem(tmp_path):
    write_image_folder(str(tmp_path), {"train": 10, "val": 10}, max_side=60)
    with pytest.raises(ValueError, match=r"config.dataset: 'folder:/no/such/dir' names no folder"):
        data.dataset_info(image_config("folder:/no/such/dir"))
    with pytest.raises(
        ValueError, match=r"config.eval_split: .* has no split 'validation'; available splits: train, val"
    ):
        data.dataset_info(image_config(f"folder:{tmp_path}"))
    os.makedirs(tmp_path / "val" / "zebra")
    with pytest.raises(ValueError, match=r"config.eval_split: .* classes the training split lacks: zebra"):
        data.dataset_info(image_config(f"folder:{tmp_path}", eval_split="val"))


def test_an_empty_class_folder_is_refused_in_training_and_warned_in_evaluation(tmp_path, caplog):
    # An image-less class folder in the training split: refused, naming it and what is read.
    write_image_folder(str(tmp_path / "a"), {"train": 10, "val": 10}, max_side=60)
    empty = tmp_path / "a" / "train" / "class_9_copy"
    os.makedirs(empty)
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=rf"config.train_split: {empty} holds no images \(\.jpg, .* every class"):
        data.dataset_info(image_config(f"folder:{tmp_path / 'a'}", eval_split="val"))
    # In the eval split: a warning, and the other classes are evaluated.
    write_image_folder(str(tmp_path / "b"), {"train": 10, "val": 10}, max_side=60)
    for image in (tmp_path / "b" / "val" / "class_3").iterdir():
        image.unlink()
    with caplog.at_level(logging.WARNING):
        info = data.dataset_info(image_config(f"folder:{tmp_path / 'b'}", eval_split="val"))
    assert (info.num_classes, info.num_train, info.num_eval) == (10, 10, 9)
    assert f"config.eval_split: {tmp_path / 'b' / 'val' / 'class_3'} holds no images" in caplog.text


def test_a_single_class_dataset_is_refused(tmp_path):
    write_image_folder(str(tmp_path), {"train": 1, "val": 1}, max_side=60)  # class_0 only
    with pytest.raises(UserError, match=r"config.dataset: .*train \(class subfolders: class_0\) has 1 class"):
        data.dataset_info(image_config(f"folder:{tmp_path}", eval_split="val"))


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    write_image_folder(str(tmp_path), {"train": 10, "val": 10}, max_side=60)
    config = image_config(f"folder:{tmp_path}", eval_split="val", batch_size=16)
    expected = (
        f"config.batch_size: batch_size=16 is larger than the training split 'train' of dataset "
        f"'folder:{tmp_path}', which has 10 examples; use a batch_size of at most 10"
    )
    for read in (data.dataset_info, data.train_loader):
        with pytest.raises(UserError, match=re.escape(expected)):
            read(config)


def _write_bad_files(folder, count):
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        with open(os.path.join(folder, f"bad_{index}.jpg"), "wb") as file:
            file.write(photo()[: 2000 + index])  # truncated JPEGs


def _filled_with_sevens(new_array, *args, **kwargs):
    array = new_array(*args, **kwargs)
    array.fill(7)
    return array


def test_an_undecodable_image_is_skipped_counted_and_logged(tmp_path, caplog, monkeypatch):
    # Batches are allocated uninitialised: new arrays that hold 7s show a row left unwritten.
    monkeypatch.setattr(np, "empty", functools.partial(_filled_with_sevens, np.empty))
    write_image_folder(str(tmp_path), {"train": 15, "val": 4}, max_side=60)
    _write_bad_files(tmp_path / "train" / "class_0", 1)
    config = image_config(f"folder:{tmp_path}", eval_split="val", batch_size=16)
    bad_index = next(i for i, path in enumerate(sources.open_split(config, "train_split").paths) if "bad_" in path)
    with caplog.at_level(logging.WARNING):
        batch = next(iter(data.train_loader(config)))  # 16 images: one epoch, shuffled
    assert batch["skipped"].sum() == 1 and batch["mask"].sum() == 15
    assert not batch["image"][batch["skipped"] == 1].any()
    bad_path = tmp_path / "train" / "class_0" / "bad_0.jpg"
    assert f"skipping the image at dataset index {bad_index} ({bad_path}): not a readable image" in caplog.text


def test_a_batch_of_mostly_undecodable_images_stops_the_run_naming_them(tmp_path):
    write_image_folder(str(tmp_path), {"train": 2, "val": 2}, max_side=60)
    _write_bad_files(tmp_path / "train" / "class_0", 6)
    config = image_config(f"folder:{tmp_path}", eval_split="val")
    with pytest.raises(
        ValueError, match=r"split 'train': 6 of the 8 images of a batch could not be decoded \(dataset indices \["
    ):
        next(iter(data.train_loader(config)))


# ------------------------------------------------------------------------------------------------
# Augmentation on real photos, and training with all of it
# ------------------------------------------------------------------------------------------------


def test_the_preview_grid_of_a_real_photo(tmp_path):
    config = image_config("digits", **{"model.resolution": 96, "data.augment": "randaugment(2,10)"})
    grid = preview.preview_grid(config, [photo()], samples=5)
    assert grid.shape == (96, 6 * 96 + 5 * 4, 3)
    tiles = [grid[:, i * 100 : i * 100 + 96] for i in range(6)]
    assert all(not np.array_equal(tiles[0], tile) for tile in tiles[1:])  # every sample differs from eval
    assert len({tile.tobytes() for tile in tiles}) == 6
    np.testing.assert_array_equal(preview.preview_grid(config, [photo()], samples=5), grid)  # seeded
    path = tmp_path / "grid.png"
    Image.fromarray(grid).save(path)
    assert Image.open(path).size == (grid.shape[1], grid.shape[0])


def test_two_training_steps_with_randaugment_mixup_and_cutmix(tfds_dir, tmp_path):
    from effnetx_jax.train import train_and_evaluate

    config = image_config(
        "synthetic_imagenet/small",
        tfds_dir,
        total_epochs=0.0,
        total_steps=2,
        warmup_epochs=0.0,
        eval_every_epochs=0.0,
        eval_every_steps=2,
        checkpoint_every_epochs=0.0,
        checkpoint_every_steps=2,
        log_every_steps=1,
        **{
            "model.blocks": PLUMBING_BLOCKS,
            "model.width": 0.25,
            "model.depth": 1.0,
            "data.augment": "randaugment(2,10)",
            "data.mixup_alpha": 0.2,
            "data.cutmix_alpha": 1.0,
        },
    )
    metrics = train_and_evaluate(config, str(tmp_path))
    assert metrics["step"] == 2
    assert np.isfinite(metrics["train/loss"]) and metrics["train/skipped_images"] == 0
    assert metrics["eval/examples"] == 24


def test_tfds_records_are_tfds_own_image_bytes_and_labels_and_survive_pickling(tfds_dir):
    import pickle

    import tensorflow_datasets as tfds

    config = image_config("synthetic_imagenet/small", tfds_dir)
    records = sources.open_split(config, "eval_split")
    builder = sources.ensure_prepared("synthetic_imagenet/small", tfds_dir)
    tfds_own = builder.as_data_source(split="validation", decoders={"image": tfds.decode.SkipDecoding()})
    unpickled = pickle.loads(pickle.dumps(records))  # as a Grain worker process receives it
    assert len(records) == len(tfds_own) == len(unpickled)
    for index in (0, len(records) - 1):
        expected = {"image": tfds_own[index]["image"], "label": int(tfds_own[index]["label"])}
        assert records[index] == unpickled[index] == expected
