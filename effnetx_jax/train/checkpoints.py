"""Orbax checkpoints of the train state together with the Grain iterator position."""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """`workdir/checkpoints/<step>/{state,data,run}`; keeps the last `keep`.

    `data` holds each process's Grain iterator state and `run` the number of processes that wrote it.
    """

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        # Handlers named up front, so a new process can read an existing checkpoint's metadata.
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
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
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                run=ocp.args.JsonSave({"process_count": jax.process_count()}),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state, data_iterator):
        """Restores into the shardings of `abstract_state`; refuses a checkpoint of another model.

        Returns the state and whether `data_iterator` was restored too: the per-process iterator
        states only fit a run with as many processes as the one that saved them.
        """
        self._check_compatible(step, abstract_state)
        saved_processes = self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run[
            "process_count"
        ]
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if saved_processes == jax.process_count():
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored.state, "data" in items

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
            raise ValueError(
                f"the checkpoint at step {step} in {self.directory} was written for another config: {listed}. "
                "Use a new --workdir for a different model."
            )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _shapes(tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        yield jax.tree_util.keystr(path, simple=True, separator="/"), tuple(leaf.shape)
