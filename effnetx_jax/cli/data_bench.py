"""`effnetx-data-bench` (or `python -m effnetx_jax.cli.data_bench`): images/s of the training and evaluation
input pipelines.

Reads `--dataset` (default `synthetic_imagenet/bench`: 1,024 + 256 random-content JPEGs with
ImageNet's sizes, built on first use in `--data_dir`) and times the batches the trainer would get
at `--resolution`: training (random crop, resize, flip, `--augment`) in this process with one
thread (one core) and with 1 and 2 Grain worker processes, then evaluation (centre crop, resize)
with one thread. Each measurement skips `--warmup_batches`, then times `--batches` batches.
`benchmarks/tfdata_preprocess.py` times tf.data doing the reference's preprocessing on the same
files, for comparison.
"""

from absl import flags

from effnetx_jax import cli

_DATASET = flags.DEFINE_string("dataset", "synthetic_imagenet/bench", "TFDS name or folder:ROOT.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's).")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train", "Split read by the training pipeline.")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", "validation", "Split read by the evaluation pipeline.")
_RESOLUTION = flags.DEFINE_integer("resolution", 224, "Output image size.")
_BATCH = flags.DEFINE_integer("batch", 64, "Images per batch.")
_BATCHES = flags.DEFINE_integer("batches", 12, "Batches timed per measurement.")
_WARMUP = flags.DEFINE_integer("warmup_batches", 2, "Batches read before timing (worker start-up, caches).")
_AUGMENT = flags.DEFINE_string("augment", "", "config.data.augment of the training pipeline, e.g. randaugment(2,10).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker-process counts of the training measurements.")


def _config(num_workers: int):
    from effnetx_jax.data import speed

    return speed.bench_config(
        _DATASET.value,
        _DATA_DIR.value,
        resolution=_RESOLUTION.value,
        batch=_BATCH.value,
        num_workers=num_workers,
        augment=_AUGMENT.value,
        train_split=_TRAIN_SPLIT.value,
        eval_split=_EVAL_SPLIT.value,
    )


def _main(argv: list[str]) -> None:
    cli.refuse_arguments(argv)
    import os

    from effnetx_jax import data
    from effnetx_jax.data import decode, speed

    info = data.dataset_info(_config(0))  # builds the synthetic dataset on first use
    print(
        f"{info.name}: {info.num_train} train / {info.num_eval} eval images, output {_RESOLUTION.value} px, "
        f"batch {_BATCH.value}, {os.cpu_count()} CPU cores, augment {_AUGMENT.value or 'none'}"
    )
    print(f"JPEG decoder: {decode.JPEG_DECODER}")
    rows = []
    for workers in map(int, _WORKERS.value):
        label = "in this process, 1 thread" if workers == 0 else f"{workers} worker process{'es' * (workers > 1)}"
        rate = speed.images_per_second(data.train_loader(_config(workers)), _WARMUP.value, _BATCHES.value)
        rows.append((f"train, {label}", rate))
    eval_batches = _BATCHES.value if _BATCHES.value * _BATCH.value <= info.num_eval else info.num_eval // _BATCH.value
    rate = speed.images_per_second(data.eval_batches(_config(0)), 0, max(eval_batches, 1))
    rows.append(("eval, in this process, 1 thread", rate))
    for name, rate in rows:
        print(f"{name:<38} {rate:8.0f} img/s")


def main(argv: list[str] | None = None) -> None:
    """The `effnetx-data-bench` console script."""
    cli.run(_main, argv, config_flags=())


if __name__ == "__main__":
    main()
