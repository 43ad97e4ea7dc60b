"""`train_and_evaluate(config, workdir)`: the one way to train, used by train.py, LACS and search."""

from __future__ import annotations

import contextlib

import jax
from absl import logging
from clu import parameter_overview, periodic_actions

from effnetx_jax import cpu_codegen, data
from effnetx_jax.models import memory
from effnetx_jax.train import init_from, multihost, workdir_lock
from effnetx_jax.train.checkpoints import Checkpoints
from effnetx_jax.train.components import build_components
from effnetx_jax.train.evaluation import make_evaluator
from effnetx_jax.train.profiling import StepProfiler
from effnetx_jax.train.reporting import MetricsLog, TrainWindow, write_config
from effnetx_jax.train.state import create_train_state
from effnetx_jax.train.steps import make_train_step


class NonFiniteLossError(FloatingPointError):
    pass


def _train_iterator(config, start_step: int = 0):
    loader = data.train_loader(
        config, process_index=jax.process_index(), process_count=jax.process_count(), start_step=start_step
    )
    return iter(loader)


def _check_finite(state, checkpoints: Checkpoints) -> None:
    """Stops the run at the first non-finite loss, naming the checkpoint it keeps (saves happen only after
    this check, so every checkpoint predates the bad step)."""
    bad_step = int(state.nonfinite_step)
    if bad_step >= 0:
        checkpoints.wait()  # the kept checkpoint is complete before the run stops
        kept = checkpoints.latest_step()
        if kept is None:
            outcome = "no checkpoint was written before it, so there is none to resume from"
        else:
            outcome = f"its last checkpoint, step {kept}, is kept"
        raise NonFiniteLossError(
            f"the training loss became non-finite at step {bad_step}; the run stops and {outcome}. "
            "Lower the learning rate or check the input data."
        )


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its newest readable checkpoint) and returns the final
    metrics. One run per workdir at a time (`workdir_lock`); a run refused for its config, its
    checkpoints or its `init_from` has written nothing."""
    components = build_components(config)
    with workdir_lock.hold(workdir):
        return _train(components, workdir)


def _resume_or_start(components, checkpoints: Checkpoints, abstract_state):
    """The resumed checkpoint (`checkpoints.Resumed`) or None, and the `init_from` weights for a fresh
    start: every check of the workdir and of `init_from`, before the run writes anything."""
    config = components.config
    resumed = checkpoints.restore_newest(abstract_state)
    pretrained = None
    if resumed is None and config.init_from:
        pretrained = init_from.read_pretrained(config, abstract_state)
    return resumed, pretrained


# What a user can change when a train step does not fit a device.
_MEMORY_LEVERS = (
    "lower config.batch_size (config.grad_accum_steps keeps the global batch), set config.remat=blocks, "
    "or shard the parameters over more devices with config.fsdp_size"
)


def _compiled_train_step(components, state, state_sharding, rng):
    """The train step compiled ahead of the first batch, so its memory is known (and logged) before the
    first step; a step that cannot fit a device stops the run here."""
    compiled = (
        jax.jit(
            make_train_step(components.model, components.tx, components.schedule, components.config),
            in_shardings=(state_sharding, components.batch_sharding, components.replicated),
            out_shardings=(state_sharding, components.replicated),
            donate_argnums=0,
            compiler_options=cpu_codegen.compiler_options(),
        )
        .lower(state, components.abstract_batch(), rng)
        .compile()
    )
    estimate = memory.MemoryEstimate.of(compiled)
    for line in memory.report(estimate, jax.local_devices(), "train step memory"):
        logging.info("%s", line)
    memory.check_fits(estimate, jax.local_devices(), "the train step", _MEMORY_LEVERS)
    return compiled


def _train(components, workdir: str) -> dict:
    config, plan = components.config, components.plan
    checkpoints = Checkpoints(workdir, config.keep_checkpoints)
    abstract_state = components.abstract_state()
    resumed, pretrained = _resume_or_start(components, checkpoints, abstract_state)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    # Compiled from the state's shapes and shardings, so a step that cannot fit is refused before the
    # run writes anything, like every other check.
    state_sharding = jax.tree.map(lambda leaf: leaf.sharding, abstract_state)
    train_step = _compiled_train_step(components, abstract_state, state_sharding, train_rng)
    write_config(workdir, config)  # the run's first write
    train_iter = _train_iterator(config)
    if resumed is not None:
        for step, moved_to in zip(resumed.damaged, checkpoints.set_aside(resumed.damaged), strict=True):
            logging.warning(
                "Moved the damaged checkpoint at step %d to %s, out of the way of new saves.", step, moved_to
            )
        logging.info("Resuming from the checkpoint at step %d in %s", resumed.step, checkpoints.directory)
        state, start_step = resumed.value, resumed.step
        if not checkpoints.restore_data(start_step, train_iter):
            logging.warning(
                "The checkpoint was written by a run with another number of processes: the input position "
                "is recomputed from the step (the global stream does not depend on the process count)."
            )
            train_iter.close()
            train_iter = _train_iterator(config, start_step)
    else:
        start_step = 0
        state, _ = create_train_state(
            components.model, components.tx, init_rng, components.image_shape, components.mesh
        )
        if pretrained is not None:
            state = init_from.initialize(state, pretrained)
            logging.info(
                "Initialised %d variables from %s; kept the fresh initialisation of those matching init_exclude=%r.",
                len(pretrained),
                config.init_from,
                config.init_exclude,
            )
        parameter_overview.log_parameter_overview(state.params)

    evaluate = make_evaluator(components, state_sharding)

    log = MetricsLog(workdir)
    report_progress = periodic_actions.ReportProgress(num_train_steps=plan.total_steps, writer=log.writer)
    final: dict = {}
    train_metrics, window = None, TrainWindow()
    profiler = StepProfiler(config.profile_steps, workdir)
    # Closing the iterator stops its Grain worker processes, also when the loop raises.
    with (
        multihost.preemption_check() as preempted,
        multihost.explain_peer_failures(checkpoints.directory),
        contextlib.closing(train_iter),
        contextlib.closing(profiler),
    ):
        for step in range(start_step + 1, plan.total_steps + 1):
            profiler.before(step)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                with window.waiting():
                    batch = components.global_batch(next(train_iter))
                state, batch_metrics = train_step(state, batch, train_rng)
            profiler.after(step, state)
            train_metrics = batch_metrics if train_metrics is None else train_metrics.merge(batch_metrics)
            report_progress(step)

            if _due(step, plan.log_every, plan.total_steps):
                _check_finite(state, checkpoints)
                scalars = {f"train/{key}": value for key, value in train_metrics.compute().items()}
                scalars.update(window.scalars(config.batch_size))
                final.update(log.write(step, scalars))
                train_metrics, window = None, TrainWindow()
            if _due(step, plan.eval_every, plan.total_steps):
                _check_finite(state, checkpoints)
                with report_progress.timed("eval"), window.paused():
                    eval_scalars = {f"eval/{key}": value for key, value in evaluate(state).compute().items()}
                final.update(log.write(step, eval_scalars))
            stop = preempted(step)
            if _due(step, plan.checkpoint_every, plan.total_steps) or stop:
                _check_finite(state, checkpoints)
                checkpoints.save(step, state, train_iter)
            if stop:
                logging.warning("SIGTERM received: saved the checkpoint at step %d and stopping.", step)
                final["preempted"] = 1.0
                break
    checkpoints.wait()
    checkpoints.close()
    log.close()
    final["step"] = int(state.step)
    return final
