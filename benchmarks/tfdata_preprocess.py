"""Our input pipeline against tf.data doing the reference's preprocessing, one core each, in one run.

    python benchmarks/tfdata_preprocess.py [--rounds=3] [--batches=32] [--dataset=synthetic_imagenet/bench]
    python benchmarks/tfdata_preprocess.py --dataset=folder:ROOT --train_split=train --eval_split=train
    python benchmarks/tfdata_preprocess.py --tf_input=memory

Each round times, back to back, our training pipeline (`effnetx_jax.data.train_loader` in this
process with one reader thread, as `effnetx-data-bench` does: the records read from their TFDS
array_record files, or the files of an image folder dataset, decoded, cropped, resized and
batched), tf.data on the same images, then both evaluation pipelines, and prints the ratios; the
last line gives their medians. tf.data reads the same images as the reference's input function
reads ImageNet (`--tf_input=files`, the default): the split's serialized `tf.train.Example`s,
byte for byte those of our records, written once to a TFRecord file that `TFRecordDataset` (8 MiB
buffer) reads, shuffled through a buffer of 1,024 in training, then `parse_single_example` of the
image and label; for an image folder, `read_file` of each file. `--tf_input=memory` gives tf.data
the encoded images from memory instead, so that only its preprocessing is timed. tf.data runs with
TF ops on one core (a private thread pool of one thread, `num_parallel_calls=1`, intra/inter-op
parallelism 1):
- train: `sample_distorted_bounding_box` (min object covered 0.1, aspect 3/4..4/3, area 0.08..1,
  10 attempts) -> `decode_and_crop_jpeg` (only the crop's blocks are decoded), the centre crop when
  the box is the whole image, TF1's `resize_bicubic` to the resolution, random left-right flip;
- eval: `decode_and_crop_jpeg` of the centre `R / (R + 32)` square -> `resize_bicubic`;
then batches as our pipeline does. Written for this comparison from the documented behaviour of
the reference's `preprocessing.py`; TF outputs float32 images (our pipeline: uint8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _centre_crop_window(shape, resolution: int, tf):
    height, width = shape[0], shape[1]
    side = tf.cast(resolution / (resolution + 32) * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def _resize(image, resolution: int, tf):
    return tf.compat.v1.image.resize_bicubic([image], [resolution, resolution])[0]


def train_preprocess(resolution: int, tf):
    def preprocess(data):
        shape = tf.image.extract_jpeg_shape(data)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
        )
        whole = tf.reduce_all(tf.equal(size, shape))
        window = tf.where(
            whole, _centre_crop_window(shape, resolution, tf), tf.stack([begin[0], begin[1], size[0], size[1]])
        )
        image = _resize(tf.image.decode_and_crop_jpeg(data, window, channels=3), resolution, tf)
        return tf.image.random_flip_left_right(image)

    return preprocess


def eval_preprocess(resolution: int, tf):
    def preprocess(data):
        window = _centre_crop_window(tf.image.extract_jpeg_shape(data), resolution, tf)
        return _resize(tf.image.decode_and_crop_jpeg(data, window, channels=3), resolution, tf)

    return preprocess


def tf_records(source, tf_input: str, record_file: str, tf):
    """tf.data's input for the split `source`: a dataset of what it reads per example, and the function
    that turns one element into (encoded image, label). A TFDS split is written to `record_file`."""
    from effnetx_jax.data import sources

    if tf_input == "memory":
        records = [source[i] for i in range(len(source))]
        dataset = tf.data.Dataset.from_tensor_slices(([r["image"] for r in records], [r["label"] for r in records]))
        return dataset, lambda image, label: (image, label)
    if isinstance(source, sources.ImageFolderSplit):  # one file per image
        dataset = tf.data.Dataset.from_tensor_slices((list(source.paths), list(source.labels)))
        return dataset, lambda path, label: (tf.io.read_file(path), label)
    with tf.io.TFRecordWriter(record_file) as writer:
        for index in range(len(source)):
            writer.write(source.serialized[index])
    features = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        return example["image"], example["label"]

    return tf.data.TFRecordDataset(record_file, buffer_size=8 << 20), parse


def images_per_second(records, preprocess, shuffle: bool, batch: int, batches: int, warmup: int, tf) -> float:
    dataset, read = records
    dataset = dataset.repeat()
    if shuffle:
        dataset = dataset.shuffle(1024)

    def example(*element):
        image, label = read(*element)
        return preprocess(image), label

    dataset = dataset.map(example, num_parallel_calls=1).batch(batch).prefetch(1)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    iterator = iter(dataset.with_options(options))
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch * batches / (time.perf_counter() - start)


def make_pipelines(config, args, scratch: str, tf) -> list:
    """(name, tf.data's input, tf.data's preprocessing, our pipeline, batches to time) for train and eval."""
    from effnetx_jax import data
    from effnetx_jax.data import sources

    pipelines = []
    for name, split_key, preprocess, ours in [
        ("train", "train_split", train_preprocess(args.resolution, tf), lambda: data.train_loader(config)),
        ("eval", "eval_split", eval_preprocess(args.resolution, tf), lambda: data.eval_batches(config)),
    ]:
        source = sources.open_split(config, split_key)
        records = tf_records(source, args.tf_input, os.path.join(scratch, f"{name}.tfrecord"), tf)
        # Our eval pipeline is one pass over the split: time at most the batches it has after the warmup.
        batches = min(args.batches, len(source) // args.batch - args.warmup_batches)
        pipelines.append((name, records, preprocess, ours, batches))
    return pipelines


def compare(pipelines, args, tf) -> None:
    """Times both sides of each pipeline back to back, `args.rounds` times; prints each round and the medians."""
    from effnetx_jax.data import speed

    ratios = {name: [] for name, *_ in pipelines}
    for round_index in range(1, args.rounds + 1):
        cells = []
        for name, records, preprocess, ours, batches in pipelines:
            our_rate = speed.images_per_second(ours(), args.warmup_batches, batches)
            shuffle = name == "train" and args.tf_input == "files"
            tf_rate = images_per_second(records, preprocess, shuffle, args.batch, batches, args.warmup_batches, tf)
            ratios[name].append(ratio := our_rate / tf_rate)
            cells.append(f"{name}: ours {our_rate:5.0f} img/s, tf.data {tf_rate:5.0f} img/s, ratio {ratio:.2f}")
        print(f"round {round_index}: " + "   ".join(cells), flush=True)
    medians = ", ".join(f"{name} {statistics.median(values):.2f}" for name, values in ratios.items())
    print(f"median ours / tf.data, 1 core: {medians}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic_imagenet/bench")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--eval_split", default="validation")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--warmup_batches", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tf_input",
        choices=("files", "memory"),
        default="files",
        help="tf.data reads each example from the split's files, as the reference does, or from memory",
    )
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from absl import flags

    from effnetx_jax.data import speed

    flags.FLAGS.mark_as_parsed()  # Grain reads its absl flags; this script parses its own
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    config = speed.bench_config(
        args.dataset,
        args.data_dir,
        resolution=args.resolution,
        batch=args.batch,
        train_split=args.train_split,
        eval_split=args.eval_split,
    )
    with tempfile.TemporaryDirectory(prefix="tfdata_preprocess-") as scratch:
        print(f"tf.data input: {args.tf_input}", flush=True)
        compare(make_pipelines(config, args, scratch, tf), args, tf)


if __name__ == "__main__":
    main()
