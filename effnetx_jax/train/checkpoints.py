"""Orbax checkpoints of the train state together with the Grain iterator position."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from effnetx_jax.errors import UserError, root_cause
from effnetx_jax.train import multihost

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


# The items of a checkpoint, and the files of each that a readable checkpoint has (orbax 0.12, OCDBT).
ITEMS = ("state", "data", "run")
_JSON_FILES = ("_CHECKPOINT_METADATA", os.path.join("state", "_METADATA"), os.path.join("run", "metadata"))
_REQUIRED_FILES = (*_JSON_FILES, os.path.join("state", "manifest.ocdbt"))
DAMAGED_DIR = "damaged_checkpoints"


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What `Checkpoints.newest` found: the step and what it read there, and the newer steps it skipped
    as damaged, with what is wrong with each."""

    step: int
    value: Any
    damaged: dict[int, str]


# TensorStore's words for a file shorter than the index says it is.
_CUT_SHORT = re.compile(
    r'local file "([^"]+)": Requested byte range \[\d+, (\d+)\) is not valid for value of size (\d+)'
)

# ... and for an array it cannot decode (its file missing or overwritten).
_ARRAY_UNREADABLE = re.compile(r'Error reading "([^"/]+)/[^"]*" in OCDBT database at local file "[^"]*": (.+)')


def _first_line(error: BaseException | str, limit: int = 200) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            # create=False: the folder appears with the first save, so a run refused before it leaves none.
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False)
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

    def newest(self, read: Callable[[int], Any]) -> Resumed | None:
        """`read(step)` of the newest checkpoint it succeeds on; None if there is no checkpoint.

        A checkpoint whose files are damaged (`damage`) or that `read` cannot read is skipped with one
        warning line and reported in `Resumed.damaged`; a `UserError` of `read` (a checkpoint of another
        model) stops the search, and so does a workdir whose every checkpoint is damaged. Every process
        of a run skips the same steps.
        """
        damaged = {}
        for step in sorted(self.manager.all_steps(), reverse=True):
            value, problem = self._read_if_intact(step, read)
            problem = multihost.first_problem(problem)
            if problem is None:
                for bad_step, bad in damaged.items():
                    logging.warning(
                        "The checkpoint at step %d in %s is damaged (%s); using step %d, the newest readable one.",
                        bad_step,
                        self.directory,
                        bad,
                        step,
                    )
                return Resumed(step, value, damaged)
            damaged[step] = problem
        if damaged:
            listed = "; ".join(f"step {step}: {problem}" for step, problem in damaged.items())
            raise UserError(
                f"every checkpoint in {self.directory} is damaged ({listed}). To train from scratch, move "
                "that folder away or give a new --workdir"
            )
        return None

    def read(self, step: int, read: Callable[[int], Any]):
        """`read(step)`, refusing a damaged checkpoint with a `UserError` naming the step and what is wrong."""
        value, problem = self._read_if_intact(step, read)
        if problem is not None:
            raise UserError(f"the checkpoint at step {step} in {self.directory} is damaged: {problem}")
        return value

    def _read_if_intact(self, step: int, read: Callable[[int], Any]):
        """(`read(step)`, None), or (None, what is wrong with the checkpoint)."""
        problem = self.damage(step)
        if problem is not None:
            return None, problem
        try:
            return read(step), None
        except UserError:
            raise
        # Orbax and TensorStore report a truncated or missing file with plain `Exception`s.
        except Exception as error:
            return None, self._read_error(step, error)

    def restore_newest(self, abstract_state) -> Resumed | None:
        """`newest` for the train state, restored into the shardings of `abstract_state`."""
        return self.newest(lambda step: self._restore_state(step, abstract_state))

    def restore_data(self, step: int, data_iterator) -> bool:
        """Restores the input position of `step` into `data_iterator`; False (nothing restored) when the
        checkpoint was written by another number of processes, whose per-process states do not fit."""
        saved_processes = self.manager.restore(step, args=ocp.args.Composite(run=ocp.args.JsonRestore())).run[
            "process_count"
        ]
        if saved_processes != jax.process_count():
            return False
        self.manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)))
        return True

    def restore_state(self, step: int, abstract_state):
        """The train state of `step` alone, in the shardings of `abstract_state`; refuses a checkpoint of
        another model and a damaged one (`UserError` naming the step and what is wrong)."""
        return self.read(step, lambda step: self._restore_state(step, abstract_state))

    def damage(self, step: int) -> str | None:
        """What is wrong with the files of the checkpoint at `step`, seen without reading its arrays
        (a missing or empty file, metadata that is not JSON); None when nothing is."""
        step_dir = os.path.join(self.directory, str(step))
        for item in ITEMS:
            if not os.path.isdir(os.path.join(step_dir, item)):
                return f"its {item}/ folder is missing"
        for name in _REQUIRED_FILES:
            if not os.path.isfile(os.path.join(step_dir, name)):
                return f"{name} is missing"
        if not glob.glob(os.path.join(step_dir, "data", "*.json")):
            return "data/ holds no input position"
        for path in sorted(glob.glob(os.path.join(step_dir, "**"), recursive=True)):
            name = os.path.relpath(path, step_dir)
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                return f"{name} is empty"
            if name in _JSON_FILES or (name.startswith("data") and name.endswith(".json")):
                try:
                    with open(path) as file:
                        json.load(file)
                except ValueError:
                    return f"{name} is not valid JSON (cut short?)"
        return None

    def _restore_state(self, step: int, abstract_state):
        self._check_compatible(step, self.manager.item_metadata(step).state, abstract_state)
        restore = ocp.args.PyTreeRestore(
            abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)
        )
        return self.manager.restore(step, args=ocp.args.Composite(state=restore)).state

    def _read_error(self, step: int, error: BaseException) -> str:
        """What TensorStore says about a failed read, briefly: its deepest cause names the file or array."""
        text = str(root_cause(error)).replace(os.path.join(self.directory, str(step)) + os.sep, "")
        short = _CUT_SHORT.search(text)
        if short:
            name, needed, size = short.groups()
            return f"its arrays cannot be read: {name} is cut short ({size} bytes, {needed} needed)"
        unreadable = _ARRAY_UNREADABLE.search(text)
        if unreadable:
            return f"its arrays cannot be read: {unreadable.group(1)}: {_first_line(unreadable.group(2))}"
        return f"its arrays cannot be read ({_first_line(text)})"

    def _check_compatible(self, step: int, saved_metadata, abstract_state) -> None:
        saved = dict(_shapes(saved_metadata))
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

    def set_aside(self, steps) -> list[str]:
        """Moves the damaged `steps` out of the way of new saves, into `workdir/damaged_checkpoints/`
        (kept, for whoever wants to look; deleting them is the user's call). Returns where they went."""
        moved = []
        for step in steps:
            target = os.path.join(
                os.path.dirname(self.directory), DAMAGED_DIR, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(os.path.join(self.directory, str(step)), target)
            moved.append(target)
        multihost.barrier("checkpoints_set_aside")
        if steps:
            self.manager.reload()
        return moved

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _shapes(tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        yield jax.tree_util.keystr(path, simple=True, separator="/"), tuple(leaf.shape)
