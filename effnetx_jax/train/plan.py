"""Durations and intervals of a run, resolved from steps or epochs, and the config checks that must
fail before anything expensive starts."""

from __future__ import annotations

import dataclasses
import math

import jax

from effnetx_jax import config_files
from effnetx_jax.models import REMAT_MODES, architecture
from effnetx_jax.train.profiling import check_steps as check_profile_steps


def _positive(value) -> bool:
    return value is not None and value > 0


def _steps(config, name: str, steps_per_epoch: float, required: bool) -> int:
    """`<name>_steps` or `<name>_epochs`: exactly one positive (0 or unset means absent)."""
    steps, epochs = config.get(f"{name}_steps"), config.get(f"{name}_epochs")
    if _positive(steps) and _positive(epochs):
        config_files.fail(
            f"{name}_steps",
            f"both {name}_steps={steps} and {name}_epochs={epochs} are set; give exactly one "
            f"(on the command line, zero the other: --config.{name}_epochs=0)",
        )
    if _positive(steps):
        return int(steps)
    if _positive(epochs):
        return max(1, math.ceil(epochs * steps_per_epoch))
    if required:
        config_files.fail(f"{name}_steps", f"set {name}_steps or {name}_epochs")
    return 0


@dataclasses.dataclass(frozen=True)
class Plan:
    steps_per_epoch: float
    total_steps: int
    log_every: int
    eval_every: int  # 0: only at the end
    checkpoint_every: int  # 0: only at the end


def make_plan(config, num_train_examples: int) -> Plan:
    steps_per_epoch = num_train_examples / config.batch_size
    total = _steps(config, "total", steps_per_epoch, required=True)
    return Plan(
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        log_every=max(1, int(config.log_every_steps)),
        eval_every=_steps(config, "eval_every", steps_per_epoch, required=False),
        checkpoint_every=_steps(config, "checkpoint_every", steps_per_epoch, required=False),
    )


def bn_groups(config) -> int:
    """How many BatchNorm groups the global batch splits into: `bn_group_size` devices per group.

    The batch is laid out device after device along the mesh's data axis, so each group is the
    images of `bn_group_size` consecutive devices, as TF's grouped cross-replica BatchNorm.
    """
    return jax.device_count() // config.bn_group_size if config.bn_group_size else 1


def check_config(config, num_classes: int) -> None:
    """Checks that need no data and no compilation; raises `UserError` naming the key."""
    architecture(config.model)
    devices = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        value = config[key]
        if not isinstance(value, int) or value < 1:
            config_files.fail(key, f"must be a positive integer, got {value!r}")
        if value % devices:
            config_files.fail(
                key, f"{key}={value} is not divisible by the {devices} devices; use a multiple of {devices}"
            )
    if config.model.num_classes != num_classes:
        config_files.fail(
            "model.num_classes",
            f"is {config.model.num_classes} but dataset {config.dataset!r} has {num_classes} classes",
        )
    fsdp = config.fsdp_size
    if not isinstance(fsdp, int) or fsdp < 1 or devices % fsdp:
        config_files.fail(
            "fsdp_size", f"fsdp_size={fsdp!r} must be a positive divisor of the {devices} devices (1: replicated)"
        )
    group = config.bn_group_size
    if not isinstance(group, int) or group < 0 or (group and devices % group):
        config_files.fail(
            "bn_group_size",
            f"bn_group_size={group!r} must be 0 (statistics over the global batch) or a divisor of the "
            f"{devices} devices",
        )
    accum = config.grad_accum_steps
    if isinstance(accum, bool) or not isinstance(accum, int) or accum < 1:
        config_files.fail("grad_accum_steps", f"must be a positive integer (1: no accumulation), got {accum!r}")
    if config.batch_size % (accum * devices):
        config_files.fail(
            "batch_size",
            f"batch_size={config.batch_size} does not split into grad_accum_steps={accum} micro-batches of a "
            f"multiple of the {devices} devices; use a multiple of {accum * devices}",
        )
    if config.remat not in REMAT_MODES:
        config_files.fail("remat", f"unknown remat {config.remat!r}; expected one of {', '.join(REMAT_MODES)}")
    check_profile_steps(config.profile_steps)
    _check_recipe(config)
    if config.keep_checkpoints < 1:
        config_files.fail("keep_checkpoints", f"must be >= 1, got {config.keep_checkpoints}")


# The optimiser, schedule and regularisation values: (key, low, high, low allowed, high allowed).
# learning_rate 0 is allowed on purpose: it freezes the weights (a fine-tuning test proves with it that
# loaded weights arrive unchanged); a negative rate would climb the loss. No upper bound on it: the
# non-finite-loss tests train at 1e30.
_RECIPE_RANGES = (
    ("learning_rate", 0.0, math.inf, True, False),
    ("weight_decay", 0.0, 1.0, True, False),
    ("label_smoothing", 0.0, 1.0, True, False),
    ("ema_decay", 0.0, 1.0, True, False),
    ("momentum", 0.0, 1.0, True, False),
    ("rmsprop_decay", 0.0, 1.0, True, False),
    ("rmsprop_epsilon", 0.0, math.inf, False, False),
    ("trust_coefficient", 0.0, math.inf, False, False),
    ("lr_polynomial_power", 0.0, math.inf, False, False),
    ("warmup_epochs", 0.0, math.inf, True, False),
    # A factor above 1 would grow the rate every lr_decay_epochs; 0 would stop training after the first.
    ("lr_decay_factor", 0.0, 1.0, False, True),
    ("lr_decay_epochs", 0.0, math.inf, False, False),
)


# Why a bound is what it is, where the message alone would not say.
_WHY = {"learning_rate": " (0 keeps the weights frozen; a negative rate would climb the loss)"}


def _interval(low: float, high: float, low_allowed: bool, high_allowed: bool) -> str:
    if high == math.inf:
        return f"a finite number {'>=' if low_allowed else '>'} {low:g}"
    return f"in {'[' if low_allowed else '('}{low:g}, {high:g}{']' if high_allowed else ')'}"


def _in_range(value, low: float, high: float, low_allowed: bool, high_allowed: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    above_low = value >= low if low_allowed else value > low
    below_high = value <= high if high_allowed else value < high
    return above_low and below_high  # NaN is neither


def _check_recipe(config) -> None:
    for key, *bounds in _RECIPE_RANGES:
        if not _in_range(config[key], *bounds):
            config_files.fail(key, f"must be {_interval(*bounds)}{_WHY.get(key, '')}, got {config[key]!r}")
    # In epochs a warm-up as long as the run is a mistake (the rate never peaks). In steps it is allowed:
    # short debugging runs of a real recipe (`--config.total_steps=1`) keep the recipe's warm-up.
    in_epochs = not _positive(config.get("total_steps")) and _positive(config.total_epochs)
    if in_epochs and config.warmup_epochs >= config.total_epochs:
        config_files.fail(
            "warmup_epochs",
            f"must be below total_epochs={config.total_epochs:g} (the rate would never reach its peak), "
            f"got {config.warmup_epochs:g}",
        )
