"""Where metrics go: clu writers (TensorBoard and the log) and `workdir/metrics.jsonl` for scripts."""

from __future__ import annotations

import contextlib
import json
import os
import time

import jax
import numpy as np
from clu import metric_writers

from effnetx_jax import config_files


class MetricsLog:
    """Writes scalars to clu's default writer and appends one JSON object per call to metrics.jsonl.

    Only process 0 writes TensorBoard summaries and the JSONL file; the others just log.
    """

    def __init__(self, workdir: str):
        self.is_writer = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_writer)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")

    def write(self, step: int, scalars: dict) -> dict[str, float]:
        """Writes `scalars` (arrays or numbers) and returns them as Python floats."""
        scalars = {key: float(np.asarray(value)) for key, value in scalars.items()}
        self.writer.write_scalars(step, scalars)
        if self.is_writer:
            with open(self.jsonl_path, "a") as file:
                file.write(json.dumps({"step": step, **scalars}) + "\n")
        return scalars

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class TrainWindow:
    """The clock of one logging window of training steps: images per second, and the fraction of the
    window's time the loop spent blocked waiting for its next batch (near 0: the input keeps up; near 1:
    the steps wait for the input). Evaluations inside a window are `paused`, not counted."""

    def __init__(self):
        self.start, self.steps, self.waited = time.perf_counter(), 0, 0.0

    @contextlib.contextmanager
    def waiting(self):
        """Around the wait for one batch; counts one step."""
        start = time.perf_counter()
        yield
        self.waited += time.perf_counter() - start
        self.steps += 1

    @contextlib.contextmanager
    def paused(self):
        start = time.perf_counter()
        yield
        self.start += time.perf_counter() - start

    def scalars(self, batch_size: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        return {
            "train/img_per_s": self.steps * batch_size / elapsed,
            "train/input_wait_fraction": self.waited / elapsed,
        }


def write_config(workdir: str, config) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, config_files.CONFIG_JSON), "w") as file:
            file.write(config_files.to_json(config))


def format_metrics(metrics: dict) -> str:
    """One line, e.g. `step 345: eval/top1=0.9861 eval/ema_top1=0.9889 ...`."""
    parts = [f"{key}={value:.4g}" for key, value in sorted(metrics.items()) if key != "step"]
    return f"step {metrics.get('step')}: " + " ".join(parts)
