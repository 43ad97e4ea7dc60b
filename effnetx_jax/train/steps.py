"""The jitted train and eval steps, and the clu metric collections they produce.

Batches arrive as the input pipeline makes them (uint8 images); the steps normalise them with
`config.data.mean`/`std`, as the reference's `model_fn` does, so hosts send a quarter of the bytes.
Examples with `mask` 0 (evaluation padding, images that could not be decoded) do not count.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics

from effnetx_jax.train import mixing, optim
from effnetx_jax.train.state import TrainState


@flax.struct.dataclass
class Sum(metrics.Metric):
    """The sum of a per-example output over every batch (a count, for 0/1 values)."""

    total: jax.Array

    @classmethod
    def from_model_output(cls, values, **_):
        return cls(total=jnp.sum(values))

    def merge(self, other):
        return type(self)(total=self.total + other.total)

    def compute(self):
        return self.total


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    cross_entropy: metrics.Average.from_output("cross_entropy")
    top1: metrics.Average.from_output("top1")
    lr: metrics.LastValue.from_output("lr")
    skipped_images: Sum.from_output("skipped")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    top1: metrics.Average.from_output("top1")
    top5: metrics.Average.from_output("top5")
    ema_loss: metrics.Average.from_output("ema_loss")
    ema_top1: metrics.Average.from_output("ema_top1")
    ema_top5: metrics.Average.from_output("ema_top5")
    examples: Sum.from_output("mask")
    skipped_images: Sum.from_output("skipped")


@flax.struct.dataclass
class SingleWeights:
    """One set of weights with no separate EMA (a converted checkpoint): evaluated once, reported as both."""

    params: Any
    batch_stats: Any


def normalize(images, config) -> jax.Array:
    """uint8 (or already float) images -> float32 `(x - mean) / std` with `config.data`'s statistics."""
    mean, std = (jnp.asarray(config.data[key], jnp.float32) for key in ("mean", "std"))
    return (images.astype(jnp.float32) - mean) / std


def _top_k_correct(logits, labels, k: int):
    top = jax.lax.top_k(logits, min(k, logits.shape[-1]))[1]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def _micro_batches(values, count: int):
    """[B, ...] -> [count, B / count, ...], micro-batch k holding examples k, k + count, ...: each device's
    contiguous share of the batch holds an equal share of every micro-batch, so splitting moves no data."""
    return jnp.swapaxes(values.reshape(values.shape[0] // count, count, *values.shape[1:]), 0, 1)


def _whole_batch(values):
    """The inverse of `_micro_batches`: [count, B / count, ...] -> [B, ...] in the batch's order."""
    return jnp.swapaxes(values, 0, 1).reshape(-1, *values.shape[2:])


def make_train_step(model, tx, schedule, config):
    """The train step: one optimizer update (step count, learning rate and EMA advance once) from the
    gradient of the whole batch, computed in `config.grad_accum_steps` micro-batches one after the other.

    Each micro-batch's loss is its share of the batch's: its examples' cross-entropy summed and divided
    by the batch's example count, plus 1/K of the L2 penalty, so the summed gradients are the batch's.
    BatchNorm normalises each micro-batch with its own statistics and updates its running averages once
    per micro-batch (K times per step), as K smaller steps would.
    """
    num_classes = config.model.num_classes
    accum = config.grad_accum_steps
    weight_decay = optim.loss_weight_decay(config) / accum

    def loss_fn(params, batch_stats, images, targets, mask, examples, dropout_rng, decay_mask):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            rngs={"dropout": dropout_rng},
            mutable=["batch_stats"],
        )
        per_example = optax.softmax_cross_entropy(logits, targets)
        cross_entropy = jnp.sum(mask * per_example) / examples
        loss = cross_entropy + weight_decay * optim.l2_penalty(params, decay_mask)
        return loss, (cross_entropy, logits, updates["batch_stats"])

    loss_and_grads = jax.value_and_grad(loss_fn, has_aux=True)

    def batch_loss_and_grads(params, batch_stats, images, targets, mask, dropout_rng, decay_mask):
        examples = jnp.maximum(jnp.sum(mask), 1.0)
        if accum == 1:
            return loss_and_grads(params, batch_stats, images, targets, mask, examples, dropout_rng, decay_mask)

        def micro_step(carry, micro):
            batch_stats, loss, cross_entropy, grads = carry
            index, images, targets, mask = micro
            rng = jax.random.fold_in(dropout_rng, index)
            (micro_loss, (micro_cross_entropy, logits, batch_stats)), micro_grads = loss_and_grads(
                params, batch_stats, images, targets, mask, examples, rng, decay_mask
            )
            summed = (loss + micro_loss, cross_entropy + micro_cross_entropy, jax.tree.map(jnp.add, grads, micro_grads))
            return (batch_stats, *summed), logits

        zero = jnp.zeros((), jnp.float32)
        carry = (batch_stats, zero, zero, jax.tree.map(jnp.zeros_like, params))
        micro = (jnp.arange(accum), *(_micro_batches(values, accum) for values in (images, targets, mask)))
        (batch_stats, loss, cross_entropy, grads), logits = jax.lax.scan(micro_step, carry, micro)
        return (loss, (cross_entropy, _whole_batch(logits), batch_stats)), grads

    def train_step(state: TrainState, batch, rng):
        dropout_rng, mix_rng = jax.random.split(jax.random.fold_in(rng, state.step))
        decay_mask = optim.weight_decay_mask(state.params)
        images, targets = mixing.mix_batch(
            normalize(batch["image"], config),
            batch["label"],
            num_classes,
            config.label_smoothing,
            mix_rng,
            mixup_alpha=config.data.mixup_alpha,
            cutmix_alpha=config.data.cutmix_alpha,
        )
        mask = batch["mask"]
        (loss, (cross_entropy, logits, batch_stats)), grads = batch_loss_and_grads(
            state.params, state.batch_stats, images, targets, mask, dropout_rng, decay_mask
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step = state.step + 1
        stepped = state.replace(
            step=step,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema_params=optim.ema_update(state.ema_params, params, step, config.ema_decay),
            ema_batch_stats=optim.ema_update(state.ema_batch_stats, batch_stats, step, config.ema_decay),
        )
        finite = jnp.isfinite(loss)
        # A non-finite step keeps every value of the old state except the step counter.
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
        new_state = new_state.replace(
            step=step, nonfinite_step=jnp.where(finite | (state.nonfinite_step >= 0), state.nonfinite_step, state.step)
        )
        batch_metrics = TrainMetrics.single_from_model_output(
            loss=loss,
            cross_entropy=cross_entropy,
            top1=_top_k_correct(logits, batch["label"], 1),
            lr=schedule(state.step),
            skipped=batch["skipped"],
            mask=mask,
        )
        return new_state, batch_metrics

    return train_step


def make_eval_step(model, config):
    def outputs(params, batch_stats, batch):
        images = normalize(batch["image"], config)
        logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return loss, _top_k_correct(logits, batch["label"], 1), _top_k_correct(logits, batch["label"], 5)

    def eval_step(state: TrainState | SingleWeights, batch):
        loss, top1, top5 = outputs(state.params, state.batch_stats, batch)
        if isinstance(state, SingleWeights):
            ema_loss, ema_top1, ema_top5 = loss, top1, top5
        else:
            ema_loss, ema_top1, ema_top5 = outputs(state.ema_params, state.ema_batch_stats, batch)
        return EvalMetrics.single_from_model_output(
            loss=loss,
            top1=top1,
            top5=top5,
            ema_loss=ema_loss,
            ema_top1=ema_top1,
            ema_top5=ema_top5,
            skipped=batch["skipped"],
            mask=batch["mask"],
        )

    return eval_step
