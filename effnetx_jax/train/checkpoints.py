"""Orbax checkpoints of the train state together with the Grain iterator position."""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from effnetx_jax.errors import UserError

# Orbax saves a replicated array "replica-parallel": each of R replicas writes 1/R of it, which takes one
# small compiled slice per array and device before the first save (hundreds on 8 devices, a minute on
# CPU). Only slices of at least this size are worth it; smaller arrays are written whole by one replica.
MIN_REPLICA_SLICE_BYTES = 256 * 1024


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's standard handling of the train state, with `MIN_REPLICA_SLICE_BYTES`."""
    types = ocp.type_handlers
    registry = types.create_type_handler_registry(
        *((kind, types.ScalarHandler()) for kind in (int, float, bytes, np.number)),
        (np.ndarray, types.NumpyHandler()),
        (jax.Array, types.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES)),
        (str, types.StringHandler()),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class Checkpoints:
    """`workdir/checkpoints/<step>/{state,data,run}`, written by the trainer and read by it and by evaluation.

    `data` holds each process's Grain iterator state and `run` the number of processes that wrote it.
    """

    def __init__(self, workdir: str, keep: int | None = None, *, read_only: bool = False):
        """Keeps the last `keep` checkpoints (None: all). `read_only` (evaluation): orbax saves, deletes and
        cleans up nothing and creates no directory."""
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        # Handlers named up front, so a new process can read an existing checkpoint's metadata.
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": _state_handler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "run": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                run=ocp.args.JsonSave({"process_count": jax.process_count()}),
            ),
            force=True,
        )

    def resolve_step(self, step: int | None) -> int:
        """`step`, or the latest step when None; an error that names the directory if there is no such checkpoint."""
        steps = sorted(self.manager.all_steps())
        if not steps:
            raise FileNotFoundError(
                f"no checkpoint in {self.directory}: train.py writes them there when given this --workdir"
            )
        if step is None:
            return steps[-1]
        if step not in steps:
            raise UserError(
                f"no checkpoint at step {step} in {self.directory}; available steps: {', '.join(map(str, steps))}"
            )
        return step

    def restore(self, step: int, abstract_state, data_iterator):
        """Restores the state (see `restore_state`) and, where it fits, the input position into `data_iterator`.

        Returns the state and whether `data_iterator` was restored too: the per-process iterator
        states only fit a run with as many processes as the one that saved them.
        """
        state = self.restore_state(step, abstract_state)
        saved_processes = self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run[
            "process_count"
        ]
        if saved_processes != jax.process_count():
            return state, False
        self.manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)))
        return state, True

    def restore_state(self, step: int, abstract_state):
        """The train state alone, in the shardings of `abstract_state`; refuses a checkpoint of another model."""
        self._check_compatible(step, abstract_state)
        restore = ocp.args.PyTreeRestore(
            abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)
        )
        return self.manager.restore(step, args=ocp.args.Composite(state=restore)).state

    def _check_compatible(self, step: int, abstract_state) -> None:
        saved = dict(_shapes(self.manager.item_metadata(step).state))
        expected = dict(_shapes(abstract_state))
        problems = [f"{key} is missing from the checkpoint" for key in expected if key not in saved]
        problems += [f"{key} is in the checkpoint but not in this model" for key in saved if key not in expected]
        problems += [
            f"{key} has shape {saved[key]} in the checkpoint but {shape} in this model"
            for key, shape in expected.items()
            if key in saved and saved[key] != shape
        ]
        if problems:
            listed = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise UserError(
                f"the checkpoint at step {step} in {self.directory} was written for another config: {listed}. "
                "Use the config it was trained with, or a new --workdir for another model."
            )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _shapes(tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        yield jax.tree_util.keystr(path, simple=True, separator="/"), tuple(leaf.shape)
