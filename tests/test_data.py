"""Input pipeline on the bundled digits dataset, built once into a temporary TFDS data dir."""

import collections
import hashlib
import io
import re

import grain
import ml_collections
import numpy as np
import pytest
from PIL import Image

from effnetx_jax import data
from effnetx_jax.data import preprocessing, sources
from effnetx_jax.errors import UserError

from conftest import tiny_run_config

RESOLUTION = 16
NUM_TRAIN, NUM_TEST = 1438, 359
PER_CLASS = {  # the documented split: 80% (rounded) of each class, chosen by a seeded permutation
    "train": [142, 146, 142, 146, 145, 146, 145, 143, 139, 144],
    "test": [36, 36, 35, 37, 36, 36, 36, 36, 35, 36],
}
# Training crops that are always the whole image: deterministic, equal to the evaluation view.
WHOLE_IMAGE = {"data.crop_area_range": (1.0, 1.0), "data.aspect_ratio_range": (1.0, 1.0)}


def make_config(data_dir, **overrides):
    config = ml_collections.ConfigDict(
        {
            "dataset": "digits",
            "data_dir": str(data_dir),
            "train_split": "train",
            "eval_split": "test",
            "batch_size": 32,
            "eval_batch_size": 48,
            "seed": 0,
            "model": {"resolution": RESOLUTION},
            "data": {
                "num_workers": 0,
                "prefetch_buffer_size": 8,
                "mean": data.MEAN_RGB,
                "std": data.STDDEV_RGB,
                "augment": "",
                "resize": "bicubic",
                "crop_area_range": (0.5, 1.0),
                "aspect_ratio_range": (3 / 4, 4 / 3),
                "random_flip": False,
                "eval_crop_fraction": 1.0,
            },
        }
    )
    config.update_from_flattened_dict(overrides)
    return config


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def split_labels(data_dir, split):
    import tensorflow_datasets as tfds

    return np.array([example["label"] for example in tfds.data_source("digits", split=split, data_dir=data_dir)])


def image_key(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# The digits dataset
# ------------------------------------------------------------------------------------------------


def test_digits_has_the_documented_splits(data_dir):
    from effnetx_jax.data.digits import SPLIT_SIZES

    info = data.dataset_info(make_config(data_dir))
    assert info == data.DatasetInfo("digits", 10, NUM_TRAIN, NUM_TEST, (RESOLUTION, RESOLUTION, 3))
    assert SPLIT_SIZES == {"train": NUM_TRAIN, "test": NUM_TEST}
    data.ensure_prepared("digits", data_dir)  # a second call finds it prepared


@pytest.mark.parametrize("split", ["train", "test"])
def test_digits_are_stratified_real_images(data_dir, split):
    import tensorflow_datasets as tfds
    from sklearn.datasets import load_digits

    from effnetx_jax.data.digits import split_indices

    source = tfds.data_source("digits", split=split, data_dir=data_dir)
    labels = split_labels(data_dir, split)
    assert np.bincount(labels, minlength=10).tolist() == PER_CLASS[split]
    np.testing.assert_array_equal(labels, load_digits().target[split_indices()[split]])  # scikit-learn's order
    example = source[0]
    assert example["image"].shape == (8, 8, 1) and example["image"].dtype == np.uint8
    images = np.stack([source[i]["image"] for i in range(50)])
    assert images.max() == 255 and images.min() == 0
    # Handwritten strokes: a good part of each image is ink, a good part background.
    ink = (images > 64).mean(axis=(1, 2, 3))
    assert ink.min() > 0.1 and ink.max() < 0.7


# ------------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------------


def test_crop_boxes_are_whole_pixels_inside_the_image_and_cover_a_tenth():
    rng = np.random.default_rng(0)
    assert preprocessing.centre_crop_box(8, 12, 0.5) == (4, 2, 8, 6)
    assert preprocessing.centre_crop_box(375, 500, 224 / 256) == (86, 24, 414, 352)  # side int(0.875 * 375) = 328
    for _ in range(200):
        box = preprocessing.sample_distorted_box(8, 12, rng, (0.08, 1.0), (3 / 4, 4 / 3))
        left, top, right, bottom = box
        assert all(isinstance(v, int) for v in box)
        assert 0 <= left < right <= 12 and 0 <= top < bottom <= 8
        assert 0.1 * 96 <= (right - left) * (bottom - top) <= 96  # min_object_covered 0.1 is above 0.08
    # No attempt can fit the whole area at aspect 2 in a square: TF returns the whole image, and the
    # reference's training crop then takes the evaluation centre crop.
    assert preprocessing.sample_distorted_box(8, 8, rng, (1.0, 1.0), (2.0, 2.0)) == (0, 0, 8, 8)
    crops = preprocessing.CropSettings((1.0, 1.0), (2.0, 2.0), eval_crop_fraction=0.5, random_flip=False)
    assert preprocessing.train_crop_box(8, 8, rng, crops) == (2, 2, 6, 6)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (50, 120), (375, 500)])
def test_crop_boxes_follow_tensorflows_distribution(height, width):
    """Boxes have the distribution of `tf.image.sample_distorted_bounding_box` with the reference's
    arguments (TF draws from its own generator: the same law, not the same values)."""
    import tensorflow as tf
    from scipy import stats

    count = 1500
    rng = np.random.default_rng(0)
    ours = np.array(
        [preprocessing.sample_distorted_box(height, width, rng, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(count)]
    )
    theirs = []
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    for index in range(count):
        begin, size, _ = tf.compat.v1.image.sample_distorted_bounding_box(
            [height, width, 3],
            whole_image,
            seed=1,
            seed2=index,
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
        )
        top, left = int(begin[0]), int(begin[1])
        theirs.append((left, top, left + int(size[1]), top + int(size[0])))
    theirs = np.array(theirs)
    for name, column in [
        ("width", lambda b: b[:, 2] - b[:, 0]),
        ("height", lambda b: b[:, 3] - b[:, 1]),
        ("left", lambda b: b[:, 0]),
    ]:
        assert stats.ks_2samp(column(ours), column(theirs)).pvalue > 0.01, name
    whole = [np.mean((b[:, 2] - b[:, 0] == width) & (b[:, 3] - b[:, 1] == height)) for b in (ours, theirs)]
    assert abs(whole[0] - whole[1]) < 0.02


def test_flip_only_when_asked(data_dir):
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = 255  # left half white
    record = {"image": _png(image), "label": 3, "index": 0, "epoch": 0}

    def outputs(random_flip):
        images = []
        for seed in range(20):
            config = make_config(data_dir, seed=seed, **WHOLE_IMAGE, **{"data.random_flip": random_flip})
            images.append(preprocessing.train_view(config).image(record))
        return images

    unflipped = outputs(False)[0]
    assert unflipped[:, 0].min() > 200 and unflipped[:, -1].max() < 50
    assert all(np.array_equal(image, unflipped) for image in outputs(False))
    flips = [np.array_equal(image, unflipped[:, ::-1]) for image in outputs(True)]
    assert 0 < sum(flips) < len(flips)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# Training stream
# ------------------------------------------------------------------------------------------------


def test_train_batches_shapes_and_values(data_dir):
    batch = next(iter(data.train_loader(make_config(data_dir))))
    assert batch["image"].shape == (32, RESOLUTION, RESOLUTION, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert set(batch["label"]) <= set(range(10))
    assert batch["image"].min() == 0 and batch["image"].max() == 255  # black background, white ink
    np.testing.assert_array_equal(batch["mask"], np.ones(32, np.float32))
    np.testing.assert_array_equal(batch["skipped"], np.zeros(32, np.float32))


def test_train_batches_deterministic_per_seed(data_dir):
    first = take(iter(data.train_loader(make_config(data_dir))), 2)
    again = take(iter(data.train_loader(make_config(data_dir))), 2)
    other = take(iter(data.train_loader(make_config(data_dir, seed=1))), 2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(first[0]["label"], other[0]["label"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_batch_rows_are_the_views_of_the_shuffled_stream_one_example_at_a_time(data_dir):
    # A batch written row by row must equal each record's view made on its own, in the order of Grain's
    # shuffled, repeated index stream (a new permutation each epoch), with its epoch in the seed.
    config = make_config(data_dir, batch_size=64, **{"data.random_flip": True, "data.augment": "randaugment(2,10)"})
    source = sources.open_split(config, "train_split")
    view = preprocessing.train_view(config)
    indices = grain.MapDataset.range(NUM_TRAIN).seed(config.seed).shuffle().repeat()
    assert [indices[i] for i in range(8)] != [indices[NUM_TRAIN + i] for i in range(8)]
    step = NUM_TRAIN // 64  # the batch that straddles epochs 0 and 1
    batch = next(iter(data.train_loader(config, start_step=step)))
    for row, position in enumerate(range(step * 64, (step + 1) * 64)):
        record = {**source[indices[position]], "index": indices[position], "epoch": position // NUM_TRAIN}
        assert batch["label"][row] == record["label"]
        np.testing.assert_array_equal(batch["image"][row], view.image(record))


def test_restored_iterator_yields_the_same_batches(data_dir):
    config = make_config(data_dir)
    iterator = iter(data.train_loader(config))
    take(iterator, 3)
    state = iterator.get_state()
    expected = take(iterator, 3)
    restored = iter(data.train_loader(config))  # a fresh loader, as after a restart
    restored.set_state(state)
    for a, b in zip(expected, take(restored, 3), strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_an_epoch_of_the_stream_covers_the_split_once(data_dir):
    # Whole-image crops let training images be matched against the evaluation view of the split.
    config = make_config(data_dir, batch_size=64, **WHOLE_IMAGE)
    batches = take(iter(data.train_loader(config)), -(-NUM_TRAIN // config.batch_size))
    seen = collections.Counter(image_key(image) for image in np.concatenate([b["image"] for b in batches])[:NUM_TRAIN])
    everything = collections.Counter(
        image_key(image)
        for batch in data.eval_batches(make_config(data_dir, eval_split="train", eval_batch_size=NUM_TRAIN))
        for image in batch["image"]
    )
    assert seen == everything


def test_processes_read_slices_of_the_same_global_batches(data_dir):
    config = make_config(data_dir)
    single = take(iter(data.train_loader(config)), 3)
    parts = [take(iter(data.train_loader(config, process_index=p, process_count=2)), 3) for p in range(2)]
    for step, global_batch in enumerate(single):
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([part[step][key] for part in parts]), global_batch[key])
    # A new iterator can also start at a given global batch (a resume with another process count).
    later = next(iter(data.train_loader(config, process_index=1, process_count=2, start_step=2)))
    np.testing.assert_array_equal(later["image"], parts[1][2]["image"])


@pytest.mark.slow
def test_train_with_worker_processes(data_dir):
    config = make_config(data_dir, **{"data.num_workers": 2})
    iterator = iter(data.train_loader(config))
    batch = next(iterator)
    assert batch["image"].shape == (32, RESOLUTION, RESOLUTION, 3)
    assert np.isfinite(batch["image"]).all()
    state = iterator.get_state()
    expected = next(iterator)
    del iterator  # stops its worker processes
    restored = iter(data.train_loader(config))
    restored.set_state(state)
    np.testing.assert_array_equal(next(restored)["image"], expected["image"])
    del restored


# ------------------------------------------------------------------------------------------------
# Evaluation pass
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eval_batch_size", "process_count"),
    [(48, 2), (51, 3)],  # 359 examples: 179/180 per process; 119/120/120, where 119 = 7 x 17 is a filler batch
)
def test_eval_sees_every_example_once(data_dir, eval_batch_size, process_count):
    config = make_config(data_dir, eval_batch_size=eval_batch_size)
    local_batch = eval_batch_size // process_count
    labels, batch_counts = [], []
    for process_index in range(process_count):
        batches = list(data.eval_batches(config, process_index=process_index, process_count=process_count))
        batch_counts.append(len(batches))
        for batch in batches:
            assert batch["image"].shape == (local_batch, RESOLUTION, RESOLUTION, 3)
            assert batch["mask"].dtype == np.float32 and batch["label"].dtype == np.int32
            real = batch["mask"] == 1
            assert not batch["image"][~real].any()
            labels.extend(batch["label"][real])
    assert len(set(batch_counts)) == 1
    assert len(labels) == NUM_TEST
    assert collections.Counter(labels) == collections.Counter(split_labels(data_dir, "test"))


@pytest.mark.slow
def test_eval_with_worker_processes_matches_in_process(data_dir):
    def second_process(config):
        return list(data.eval_batches(config, process_index=1, process_count=2))

    in_process = second_process(make_config(data_dir))
    workers = second_process(make_config(data_dir, **{"data.num_workers": 2}))
    assert len(workers) == len(in_process)
    for a, b in zip(in_process, workers, strict=True):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(a[key], b[key])


def test_eval_is_deterministic_and_in_order(data_dir):
    config = make_config(data_dir)
    first, again = list(data.eval_batches(config)), list(data.eval_batches(config))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    labels = np.concatenate([batch["label"] for batch in first])[:NUM_TEST]
    np.testing.assert_array_equal(labels, split_labels(data_dir, "test"))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_missing_dataset_fails_with_instructions(data_dir):
    expected = r"'no_such_dataset' is neither .* `tfds build no_such_dataset --file_format=array_record"
    with pytest.raises(ValueError, match=expected):
        data.train_loader(make_config(data_dir, dataset="no_such_dataset"))
    # A registered TFDS dataset that nobody prepared in this data dir: nothing is downloaded.
    with pytest.raises(ValueError, match=rf"'mnist' is not prepared .* --data_dir={data_dir}"):
        data.dataset_info(make_config(data_dir, dataset="mnist"))


def test_unknown_split_names_the_available_ones(data_dir):
    with pytest.raises(ValueError, match=r"config.eval_split: .*'validation'; available splits: test, train"):
        data.eval_batches(make_config(data_dir, eval_split="validation"))
    with pytest.raises(ValueError, match=r"config.train_split: .*'training'"):
        data.train_loader(make_config(data_dir, train_split="training"))


def test_batch_must_divide_between_processes(data_dir):
    with pytest.raises(ValueError, match=r"config.batch_size: the global batch \(32\) .* 3 processes"):
        data.train_loader(make_config(data_dir), process_index=0, process_count=3)
    with pytest.raises(ValueError, match=r"config.eval_batch_size"):
        data.eval_batches(make_config(data_dir, eval_batch_size=49), process_count=2)


def test_the_trainer_refuses_a_batch_larger_than_the_training_split_before_compiling(data_dir, tmp_path):
    from effnetx_jax.train import train_and_evaluate

    workdir = tmp_path / "run"
    expected = (
        f"config.batch_size: batch_size=2048 is larger than the training split 'train' of dataset 'digits', "
        f"which has {NUM_TRAIN} examples; use a batch_size of at most {NUM_TRAIN}"
    )
    with pytest.raises(UserError, match=re.escape(expected)):
        train_and_evaluate(tiny_run_config(data_dir, batch_size=2048), str(workdir))
    assert not workdir.exists()  # refused before the workdir, the model or any program


def test_dataset_in_tfrecord_asks_for_array_record(tmp_path):
    import tensorflow_datasets as tfds

    from effnetx_jax.data import digits  # noqa: F401  (registers the builder)

    tfds.builder("digits", data_dir=str(tmp_path), file_format="tfrecord").download_and_prepare(file_format="tfrecord")
    expected = r"as tfrecord, .* need array_record .* `tfds convert_format --dataset_version_dir=.*digits/\d+\.\d+\.\d+"
    with pytest.raises(ValueError, match=expected):
        sources.ensure_prepared("digits", str(tmp_path))
