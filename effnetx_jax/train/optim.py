"""The official EfficientNet optimisation recipe (reference section 6): TF1 RMSprop, the learning-rate
schedule of `utils.build_learning_rate`, L2 weight decay on non-BatchNorm weights and the EMA of weights;
and the large-batch optimizers LARS and LAMB (docs/large_scale.md).

Everything here is a pure function of arrays, so it runs inside the jitted train step unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from effnetx_jax import config_files

LR_SCHEDULES = ("constant", "cosine", "exponential", "polynomial")
# The names of the official `--optimizer` flag, plus adam and the large-batch optimizers.
OPTIMIZERS = ("adam", "lamb", "lars", "momentum", "rmsprop", "sgd")
# The optimizers that apply `config.weight_decay` themselves, inside the trust ratio, as their papers do;
# for the others the trainer adds it to the loss as an L2 penalty (TF's way).
DECAYING_OPTIMIZERS = ("lamb", "lars")

# TF decays every trainable variable whose name lacks 'batch_normalization'; our BN modules are `*_bn`.
BATCH_NORM_SUFFIX = "_bn"


# ---------------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------------


def tf_rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: float = 0.9,
    momentum: float = 0.9,
    epsilon: float = 1e-3,
    initial_accumulator: float = 1.0,
) -> optax.GradientTransformation:
    """TF1 `RMSPropOptimizer` (dense, uncentered), the optimizer of the official recipe.

    Per step, with `lr` the learning rate at the step count before the update:
        ms  = decay * ms + (1 - decay) * g**2          (ms starts at `initial_accumulator`, 1 in TF1)
        mom = momentum * mom + lr * g / sqrt(ms + eps)  (eps inside the sqrt; lr inside the momentum)
        var = var - mom                                 (the returned update is -mom)

    `optax.rmsprop` chains scale_by_rms -> scale_by_learning_rate -> trace, so the learning rate
    scales each step's contribution before it enters the momentum, exactly as TF1 does (a changing
    learning rate leaves earlier contributions at their own rate). The state is
    (ScaleByRmsState(nu=ms), ScaleByScheduleState(count), TraceState(trace=-mom)): `nu` and `trace`
    have the shapes of the params, so they shard like them.
    """
    # A constant is wrapped as a schedule so the state always holds the step count and has one
    # structure whatever the learning rate is (a checkpoint does not depend on that choice).
    schedule = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    return optax.rmsprop(
        schedule,
        decay=decay,
        eps=epsilon,
        initial_scale=initial_accumulator,
        eps_in_sqrt=True,
        centered=False,
        momentum=momentum,
        nesterov=False,
        bias_correction=False,
    )


def create_optimizer(
    config, steps_per_epoch: float, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by `config.optimizer` driven by `learning_rate_schedule`, and that schedule.

    'rmsprop' is the official one (`config.rmsprop_decay`, `config.momentum`, `config.rmsprop_epsilon`);
    'momentum' is heavy-ball momentum (`config.momentum`, TF's `MomentumOptimizer`), 'sgd' plain
    gradient descent (TF's `GradientDescentOptimizer`), as the official flag names them; 'adam' uses
    optax's defaults. For these the weight decay is not part of the optimizer: the trainer adds it to the
    loss (`l2_penalty`, `loss_weight_decay`). 'lars' and 'lamb' (`large_batch_optimizer`) decay themselves.
    """
    schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
    name = config.optimizer
    if name == "rmsprop":
        tx = tf_rmsprop(schedule, decay=config.rmsprop_decay, momentum=config.momentum, epsilon=config.rmsprop_epsilon)
    elif name == "momentum":
        tx = optax.sgd(schedule, momentum=config.momentum)
    elif name == "sgd":
        tx = optax.sgd(schedule)
    elif name == "adam":
        tx = optax.adam(schedule)
    elif name in DECAYING_OPTIMIZERS:
        tx = large_batch_optimizer(name, schedule, config)
    else:
        config_files.fail("optimizer", f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return tx, schedule


def large_batch_optimizer(name: str, schedule: optax.Schedule, config) -> optax.GradientTransformation:
    """LARS (You et al. 2017, arXiv:1708.03888) or LAMB (You et al. 2019, arXiv:1904.00962).

    Both add `config.weight_decay * w` to each update on the recipe's decayed weights (`weight_decay_mask`)
    and scale each array's update by its trust ratio, ||w|| / ||update||, except for BatchNorm parameters
    and biases (`trust_ratio_mask`), which take the plain update, as in the papers' ImageNet recipes.
    LARS is `optax.lars` (trust coefficient `config.trust_coefficient`, momentum `config.momentum`, the
    learning rate applied before the momentum); LAMB is `optax.lamb`'s chain (Adam with optax's defaults,
    then the decay, trust ratio and rate) with the trust ratio masked, which `optax.lamb` does not offer.
    """
    if name == "lars":
        return optax.lars(
            schedule,
            weight_decay=config.weight_decay,
            weight_decay_mask=weight_decay_mask,
            trust_coefficient=config.trust_coefficient,
            trust_ratio_mask=trust_ratio_mask,
            momentum=config.momentum,
        )
    return optax.chain(
        optax.scale_by_adam(),
        optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask),
        optax.masked(optax.scale_by_trust_ratio(), trust_ratio_mask),
        optax.scale_by_learning_rate(schedule),
    )


def loss_weight_decay(config) -> float:
    """The weight of the loss's L2 penalty: `config.weight_decay`, or 0 for an optimizer that decays itself."""
    return 0.0 if config.optimizer in DECAYING_OPTIMIZERS else config.weight_decay


# ---------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------


def learning_rate_schedule(config, steps_per_epoch: float, total_steps: int) -> optax.Schedule:
    """`utils.build_learning_rate` of the official code, as a function of the optimizer step.

    The peak rate is `config.learning_rate * config.batch_size / 256`. `config.lr_schedule` picks the
    decay, always counted from step 0 (warm-up does not delay it):
      exponential: peak * lr_decay_factor ** floor(step / (lr_decay_epochs * steps_per_epoch))
      cosine:      0.5 * peak * (1 + cos(pi * step / total_steps))
      polynomial:  peak * (1 - step / total_steps) ** lr_polynomial_power (LARS's "poly" policy)
      constant:    peak
    For step < int(warmup_epochs * steps_per_epoch) the rate is instead peak * step / warmup_steps
    (linear from 0). As in TF, the arithmetic is float32 and `steps_per_epoch` may be fractional
    (images / batch).
    """
    peak = config.learning_rate * config.batch_size / 256.0
    decayed = _decay_schedule(config, peak, steps_per_epoch, total_steps)
    # TF computes the same int() and then selects with `step < warmup_steps`, so a warm-up that
    # rounds to 0 steps is no warm-up.
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    if warmup_steps <= 0:
        return decayed

    def schedule(step):
        warmup = peak * _as_float(step) / jnp.float32(warmup_steps)
        return jnp.where(step < warmup_steps, warmup, decayed(step))

    return schedule


def _decay_schedule(config, peak: float, steps_per_epoch: float, total_steps: int) -> optax.Schedule:
    name = config.lr_schedule
    if name == "exponential":
        decay_steps = jnp.float32(steps_per_epoch * config.lr_decay_epochs)
        factor = jnp.float32(config.lr_decay_factor)
        return lambda step: peak * factor ** jnp.floor(_as_float(step) / decay_steps)
    if name == "cosine":
        return lambda step: 0.5 * peak * (1.0 + jnp.cos(math.pi * _as_float(step) / jnp.float32(total_steps)))
    if name == "polynomial":
        power = jnp.float32(config.lr_polynomial_power)
        # Held at 0 past total_steps (a run continued beyond its plan), where the base would turn negative.
        return lambda step: peak * (1.0 - jnp.minimum(_as_float(step) / jnp.float32(total_steps), 1.0)) ** power
    if name == "constant":
        return lambda step: jnp.asarray(peak, jnp.float32)
    config_files.fail("lr_schedule", f"unknown schedule {name!r}; expected one of {', '.join(LR_SCHEDULES)}")


def _as_float(step) -> jax.Array:
    return jnp.asarray(step).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------
# Weight decay
# ---------------------------------------------------------------------------------------------------


def weight_decay_mask(params):
    """True for every parameter that is not a BatchNorm scale or bias (any path entry named `*_bn`).

    Like TF's name filter this keeps SE biases, the classifier bias and depthwise kernels.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: not _in_batch_norm(path), params)


def trust_ratio_mask(params):
    """True for every parameter that LARS and LAMB scale by its trust ratio: all but BatchNorm's and biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not _in_batch_norm(path) and _key_name(path[-1]) != "bias", params
    )


def _in_batch_norm(path) -> bool:
    return any(str(_key_name(entry)).endswith(BATCH_NORM_SUFFIX) for entry in path)


def _key_name(entry):
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return entry


def l2_penalty(params, mask) -> jax.Array:
    """Sum of `tf.nn.l2_loss` (sum(v**2) / 2) over the masked leaves, in float32.

    The trainer adds `config.weight_decay * l2_penalty(params, mask)` to the loss, so the decay goes
    through RMSprop as in TF.
    """
    # `where` rather than skipping leaves, so the mask may be Python bools or traced arrays.
    terms = [
        jnp.where(decayed, jnp.sum(jnp.square(leaf.astype(jnp.float32))) / 2, 0.0)
        for leaf, decayed in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True)
    ]
    return sum(terms, jnp.zeros((), jnp.float32))


# ---------------------------------------------------------------------------------------------------
# Exponential moving average of weights
# ---------------------------------------------------------------------------------------------------


def ema_decay(step, decay: float) -> jax.Array:
    """min(decay, (1 + step) / (10 + step)): TF `ExponentialMovingAverage(decay, num_updates=global_step)`.

    `step` is the optimizer step count AFTER the update being averaged (1 for the first update): TF's
    EMA op runs after `minimize` has incremented global_step.
    """
    step = _as_float(step)
    return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def ema_update(ema_tree, new_tree, step, decay: float):
    """decay' * ema + (1 - decay') * new for every leaf, with decay' = ema_decay(step, decay).

    Used for the params and the BatchNorm batch_stats; `step` as in `ema_decay`. Computed as TF's
    `assign_moving_average` does, `ema - (1 - decay') * (ema - new)`: a value that did not move leaves its
    average bit-for-bit unchanged, which the two-term form does not guarantee in float32.
    """
    rate = ema_decay(step, decay)
    return jax.tree.map(lambda ema, new: (ema - (1.0 - rate) * (ema - new)).astype(ema.dtype), ema_tree, new_tree)
