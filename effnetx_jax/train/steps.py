"""The jitted train and eval steps, and the clu metric collections they produce."""

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics

from effnetx_jax.train import optim
from effnetx_jax.train.state import TrainState


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    cross_entropy: metrics.Average.from_output("cross_entropy")
    top1: metrics.Average.from_output("top1")
    lr: metrics.LastValue.from_output("lr")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    top1: metrics.Average.from_output("top1")
    top5: metrics.Average.from_output("top5")
    ema_loss: metrics.Average.from_output("ema_loss")
    ema_top1: metrics.Average.from_output("ema_top1")
    ema_top5: metrics.Average.from_output("ema_top5")


def _top_k_correct(logits, labels, k: int):
    top = jax.lax.top_k(logits, min(k, logits.shape[-1]))[1]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def make_train_step(model, tx, schedule, config):
    num_classes = config.model.num_classes

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        decay_mask = optim.weight_decay_mask(state.params)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"],
                train=True,
                rngs={"dropout": rng},
                mutable=["batch_stats"],
            )
            targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), config.label_smoothing)
            cross_entropy = optax.softmax_cross_entropy(logits, targets).mean()
            loss = cross_entropy + config.weight_decay * optim.l2_penalty(params, decay_mask)
            return loss, (cross_entropy, logits, updates["batch_stats"])

        (loss, (cross_entropy, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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
        )
        return new_state, batch_metrics

    return train_step


def make_eval_step(model):
    def outputs(params, batch_stats, batch):
        logits = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return loss, _top_k_correct(logits, batch["label"], 1), _top_k_correct(logits, batch["label"], 5)

    def eval_step(state: TrainState, batch):
        loss, top1, top5 = outputs(state.params, state.batch_stats, batch)
        ema_loss, ema_top1, ema_top5 = outputs(state.ema_params, state.ema_batch_stats, batch)
        return EvalMetrics.single_from_model_output(
            loss=loss, top1=top1, top5=top5, ema_loss=ema_loss, ema_top1=ema_top1, ema_top5=ema_top5, mask=batch["mask"]
        )

    return eval_step
