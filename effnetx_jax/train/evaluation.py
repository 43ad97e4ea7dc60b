"""Evaluation over the whole eval split: the trainer's periodic evaluation, and `evaluate_checkpoint` for
the checkpoints a run left in its workdir (eval.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax

from effnetx_jax import cpu_codegen, data
from effnetx_jax import weights as weights_lib
from effnetx_jax.errors import UserError
from effnetx_jax.train import sharding
from effnetx_jax.train.checkpoints import Checkpoints
from effnetx_jax.train.components import Components, build_components
from effnetx_jax.train.steps import EvalMetrics, SingleWeights, make_eval_step

# The weights one can evaluate, and the prefix of their names in EvalMetrics: the exponential moving average
# (what the paper reports) or the raw, trained weights.
WEIGHTS = {"ema": "ema_", "raw": ""}


def make_evaluator(components: Components, state_sharding) -> Callable[..., EvalMetrics]:
    """`evaluate(state)`: raw and EMA metrics over every example of `config.eval_split` exactly once.

    The step is compiled once, for states laid out as `state_sharding`. Every process must call
    `evaluate` (each reads its own shard); all get the same metrics, whose `count` is the number of
    examples.
    """
    eval_step = jax.jit(
        make_eval_step(components.model, components.config),
        in_shardings=(state_sharding, components.batch_sharding),
        out_shardings=components.replicated,
        compiler_options=cpu_codegen.compiler_options(),
    )

    def evaluate(state) -> EvalMetrics:
        collected = None
        for local_batch in data.eval_batches(
            components.config, process_index=jax.process_index(), process_count=jax.process_count()
        ):
            batch_metrics = eval_step(state, components.global_batch(local_batch))
            collected = batch_metrics if collected is None else collected.merge(batch_metrics)
        return collected

    return evaluate


def evaluate_checkpoint(config, workdir: str, step: int | None = None, weights: str = "ema") -> dict:
    """Evaluates a checkpoint over the whole `config.eval_split`: one that `train_and_evaluate` wrote in
    `workdir`, or a converted checkpoint (`effnetx-convert`, see `effnetx_jax.weights`).

    `step` selects the checkpoint (default: the latest readable one, with a warning for each newer,
    damaged one; a damaged `step` is refused) and `weights` the EMA (default) or the raw weights; a
    converted checkpoint has one set of weights and no steps (`step` is returned as None). Returns
    `step`, `top1`, `top5`, `loss`, `num_examples` (evaluated) and `skipped_images` (undecodable, not
    counted). The checkpoints are opened read-only and only the train state is read (not the input
    position). Bad arguments and a
    checkpoint of another model fail before anything is restored or compiled.
    """
    if weights not in WEIGHTS:
        raise UserError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights_lib.is_converted(workdir):
        state, state_sharding, components = _converted_weights(config, workdir, step, weights)
    else:
        with contextlib.closing(Checkpoints(workdir, read_only=True)) as checkpoints:
            checkpoints.resolve_step(step)  # no checkpoints, or no such step: fails before building anything
            components = build_components(config)
            abstract_state = components.abstract_state()
            if step is None:
                resumed = checkpoints.restore_newest(abstract_state)
                step, state = resumed.step, resumed.value
            else:
                state = checkpoints.restore_state(step, abstract_state)
        state_sharding = jax.tree.map(lambda leaf: leaf.sharding, abstract_state)
    evaluate = make_evaluator(components, state_sharding)
    metrics = evaluate(state)
    prefix = WEIGHTS[weights]
    values = metrics.compute()
    return {
        "step": step,
        **{name: float(values[prefix + name]) for name in ("top1", "top5", "loss")},
        "num_examples": int(values["examples"]),
        "skipped_images": int(values["skipped_images"]),
    }


def _converted_weights(config, directory: str, step, weights: str):
    """A converted checkpoint's weights, replicated, after the same checks as a trained one's."""
    variables = weights_lib.read_variables(directory, weights=weights, step=step)
    components = build_components(config)
    expected = components.abstract_state()
    for collection in ("params", "batch_stats"):
        saved, wanted = (
            jax.tree.map(lambda leaf: leaf.shape, tree)
            for tree in (variables[collection], getattr(expected, collection))
        )
        if saved != wanted:
            raise UserError(
                f"the converted checkpoint in {directory} holds another model than config.model "
                f"({config.model.name}); evaluate it with the config stored with it: "
                f"python eval.py --workdir={directory} (without --config)"
            )
    state = SingleWeights(params=variables["params"], batch_stats=variables["batch_stats"])
    state_sharding = jax.tree.map(lambda _: components.replicated, state)
    placed = jax.tree.map(
        lambda value: sharding.global_array(
            value, jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=components.replicated)
        ),
        state,
    )
    return placed, state_sharding, components
