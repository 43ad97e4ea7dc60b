"""The official EfficientNet training recipe (reference §6), shared by every config.

A config file anywhere starts from it with one import (docs/training.md has a complete example):

    from effnetx_jax import recipe

    def get_config():
        config = recipe.get_config("efficientnet-x-b3")  # any registered variant
        config.batch_size = 256  # then any key, as on the command line (--config.batch_size=256)
        return config

Durations and intervals are given in steps or epochs: exactly one of each pair is positive (unset
or 0 means absent, so `--config.total_steps=200 --config.total_epochs=0` switches units on the
command line). `batch_size` is the global batch over all devices and hosts.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from effnetx_jax.models import model_config

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def get_config(model: str = "efficientnet-x-b0") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config(model)
    config.model.dtype = "bfloat16"  # compute dtype; parameters and BN statistics stay float32

    config.dataset = "imagenet2012"
    config.data_dir = placeholder(str)  # None: TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets)
    config.train_split = "train"
    config.eval_split = "validation"
    config.batch_size = 2048
    config.eval_batch_size = 1024
    config.seed = 0
    # Pretrained weights to start from (a converted checkpoint or a train.py workdir) when the workdir has no
    # checkpoint yet, and a regular expression of variable paths to leave freshly initialised ("classifier").
    config.init_from = placeholder(str)
    config.init_exclude = ""

    # ~350 epochs of ImageNet (train_steps 218,949 at batch 2048 in the reference).
    config.total_steps = placeholder(int)
    config.total_epochs = 350.0

    # TF1 RMSPropOptimizer: ms initialised to 1, eps inside the sqrt, lr inside the momentum.
    config.optimizer = "rmsprop"  # or "momentum", "sgd" (plain), "adam", "lars", "lamb" (docs/large_scale.md)
    config.rmsprop_decay = 0.9
    config.momentum = 0.9
    config.rmsprop_epsilon = 1e-3
    config.trust_coefficient = 0.001  # LARS's eta: the trust ratio is eta * ||w|| / ||update||
    config.learning_rate = 0.016  # per 256 images, scaled by batch_size / 256
    config.lr_schedule = "exponential"  # or "cosine", "constant", "polynomial"
    config.lr_polynomial_power = 2.0  # "polynomial": peak * (1 - step / total_steps) ** power
    config.warmup_epochs = 5.0
    config.lr_decay_factor = 0.97
    config.lr_decay_epochs = 2.4
    config.label_smoothing = 0.1
    config.weight_decay = 1e-5  # times sum(w^2)/2 over every weight except BatchNorm's
    config.ema_decay = 0.9999  # min(decay, (1 + t) / (10 + t)) over params and BN statistics
    # Devices per BatchNorm group; 0 = statistics over the global batch.
    config.bn_group_size = 0
    # Devices that share one copy of the parameters, optimizer state and EMA (the mesh's fsdp axis):
    # 1 replicates them on every device; 8 shards each large array 8 ways (for the largest variants).
    config.fsdp_size = 1
    # Memory against compute (docs/large_scale.md): "none", "blocks" (each block recomputed in the backward
    # pass) or "full" (the whole forward recomputed); the variables and results are the same.
    config.remat = "none"
    # Micro-batches per step: the global batch's gradient is summed over this many in turn, then applied once.
    config.grad_accum_steps = 1

    config.data = ml_collections.ConfigDict()
    config.data.num_workers = 8
    config.data.prefetch_buffer_size = 2
    config.data.mean = IMAGENET_MEAN
    config.data.std = IMAGENET_STD
    config.data.crop_area_range = (0.08, 1.0)
    config.data.aspect_ratio_range = (3 / 4, 4 / 3)
    config.data.random_flip = True
    # The paper-era reference crops R / (R + 32) of the shorter side (0.875 at 224, 0.949 at 600);
    # the reference switched to a fixed 0.875 in Nov 2021. Set after changing the resolution.
    config.data.eval_crop_fraction = eval_crop_fraction(config.model.resolution)
    # "bicubic" (half-pixel grid, fast) or "bicubic_tf1" (TF1 resize_bicubic's grid, exact, slower).
    config.data.resize = "bicubic"
    # "" (none, the reference's default), "randaugment", "randaugment(N,M)", "autoaugment(v0)".
    config.data.augment = ""
    config.data.mixup_alpha = 0.0  # > 0: mixup with lambda ~ Beta(alpha, alpha)
    config.data.cutmix_alpha = 0.0  # > 0: CutMix; with mixup too, one of the two per batch

    config.log_every_steps = 100
    config.eval_every_steps = placeholder(int)
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 5000
    config.checkpoint_every_epochs = placeholder(float)
    config.keep_checkpoints = 3
    # (first, last): a jax.profiler trace of those training steps under workdir/profile/; () for none.
    config.profile_steps = ()
    return config


# Keys added after workdirs were first written (dotted for nested ones): a config.json from before
# (tests/data/workdir_v0) lacks them, and their recipe values keep such a run doing what it did.
ADDED_KEYS = (
    "remat",
    "grad_accum_steps",
    "trust_coefficient",
    "lr_polynomial_power",
    "profile_steps",
    "model.batch_norm_impl",
)


def with_added_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config`, or a copy of it with the recipe's value for each of `ADDED_KEYS` it lacks."""
    missing = [key for key in ADDED_KEYS if _lookup(config, key) is _ABSENT]
    if not missing:
        return config
    defaults = get_config()
    config = config.copy_and_resolve_references()
    with config.unlocked():
        for key in missing:
            parent, _, name = key.rpartition(".")
            target = _lookup(config, parent) if parent else config
            if target is not _ABSENT:
                target[name] = _lookup(defaults, key)
    return config


_ABSENT = object()


def _lookup(config, dotted: str):
    """The value at a dotted key, or `_ABSENT` where any part of the path is missing."""
    for part in dotted.split("."):
        if part not in config:
            return _ABSENT
        config = config[part]
    return config


def eval_crop_fraction(resolution: int, padding: int = 32) -> float:
    """The paper-era reference's centre crop: `resolution / (resolution + padding)` of the shorter side."""
    return resolution / (resolution + padding)


FAMILY_PREFIXES = {
    "x": "efficientnet-x",
    "efficientnet": "efficientnet",
    "x-tpu": "efficientnet-x-tpu",
    "x-gpu": "efficientnet-x-gpu",
}


def variant_config(size: int, arg: str = "") -> ml_collections.ConfigDict:
    """ImageNet config of one B<size> variant; `arg` = `[family][,smoke]`, family one of FAMILY_PREFIXES.

    `smoke` keeps the variant's block structure but shrinks width, depth and resolution and trains
    a few steps on the bundled digits dataset, so the command runs end to end on a laptop.
    """
    family, *options = (arg or "x").split(",")
    if family not in FAMILY_PREFIXES or set(options) - {"smoke"}:
        raise ValueError(
            f"config argument {arg!r}: expected [family][,smoke] with family one of {list(FAMILY_PREFIXES)}"
        )
    config = get_config(f"{FAMILY_PREFIXES[family]}-b{size}")
    if "smoke" in options:
        _shrink_for_smoke_run(config)
    return config


def use_digits(config: ml_collections.ConfigDict) -> None:
    """Trains on the bundled digits dataset (laptop configs), with the crops its 8x8 images need."""
    config.dataset, config.train_split, config.eval_split = "digits", "train", "test"
    config.data.num_workers = 0
    config.data.crop_area_range = (0.7, 1.0)  # digits fill the 8x8 frame: keep most of it
    config.data.random_flip = False  # a flipped digit is another digit (or none)
    config.data.eval_crop_fraction = 1.0


def _shrink_for_smoke_run(config: ml_collections.ConfigDict) -> None:
    config.model.update(width=0.25, depth=0.25, resolution=32, num_classes=10, dtype="float32")
    use_digits(config)
    config.batch_size, config.eval_batch_size = 32, 64
    config.total_epochs, config.total_steps = 0.0, 20
    config.warmup_epochs = 0.0
    config.eval_every_epochs, config.eval_every_steps = 0.0, 20
    config.checkpoint_every_steps = 10
    config.log_every_steps = 5
