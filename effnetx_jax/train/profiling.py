"""`config.profile_steps`: a `jax.profiler` trace of a range of training steps, for TensorBoard's profile
plugin or Perfetto, written by process 0 under `workdir/profile/`."""

from __future__ import annotations

import os

import jax
from absl import logging

from effnetx_jax import config_files

PROFILE_DIR = "profile"


def check_steps(steps) -> None:
    """Empty (no trace) or `(first, last)`, steps counted from 1 as the logs count them, first <= last."""
    if not steps:
        return
    valid = (
        isinstance(steps, (tuple, list))
        and len(steps) == 2
        and all(isinstance(step, int) and not isinstance(step, bool) for step in steps)
        and 1 <= steps[0] <= steps[1]
    )
    if not valid:
        config_files.fail("profile_steps", f"must be () or (first, last) with 1 <= first <= last, got {steps!r}")


class StepProfiler:
    """Starts the trace before step `first` and stops it once step `last` has finished on the device
    (the loop only dispatches steps, so it waits for that step's state first). Only process 0 traces: one
    host's trace shows the program every host runs. `close` stops a trace the run left early."""

    def __init__(self, steps, workdir: str):
        self.first, self.last = steps if steps and jax.process_index() == 0 else (None, None)
        self.directory = os.path.join(workdir, PROFILE_DIR)
        self.tracing = False

    def before(self, step: int) -> None:
        if step == self.first:
            jax.profiler.start_trace(self.directory)
            self.tracing = True

    def after(self, step: int, state) -> None:
        if step == self.last and self.tracing:
            jax.block_until_ready(state)
            self.close()
            logging.info("Wrote the profile of steps %d to %d under %s", self.first, self.last, self.directory)

    def close(self) -> None:
        if self.tracing:
            jax.profiler.stop_trace()
            self.tracing = False
