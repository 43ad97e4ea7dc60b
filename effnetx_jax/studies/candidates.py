"""What every study measures of a candidate model: latency here, proxy accuracy, and the reward.

Latency comes from `models.speed.benchmark`, accuracy from the trainer (`train_and_evaluate`,
nothing special-cased), and the reward is MnasNet's `ACC * (LAT / T) ** w`.
"""

from __future__ import annotations

import json
import os
import time

import ml_collections

from effnetx_jax import config_files
from effnetx_jax.models import architecture, costs


class Interrupted(RuntimeError):
    """The proxy training stopped early on SIGTERM; the candidate is neither finished nor failed."""


def reward(accuracy: float, latency_ms: float, target_ms: float, exponent: float = -0.07) -> float:
    """MnasNet's multi-objective reward. `target_ms` scales every reward by the same factor, so the
    ranking depends on `exponent` alone: -0.07 trades 1% of relative accuracy for ~15% of latency."""
    if latency_ms <= 0 or target_ms <= 0:
        raise ValueError(f"latency and target must be positive, got {latency_ms} and {target_ms}")
    return accuracy * (latency_ms / target_ms) ** exponent


def with_model(trainer_config: ml_collections.ConfigDict, model: ml_collections.ConfigDict):
    """`trainer_config` training `model`; the compute dtype stays the trainer's (it belongs to the recipe)."""
    config = ml_collections.ConfigDict(trainer_config.to_dict(preserve_field_references=True))
    dtype = config.model.dtype
    config.model = ml_collections.ConfigDict(model.to_dict())
    config.model.dtype = dtype
    return config


def gflops(model: ml_collections.ConfigDict) -> float:
    """GFLOPs per image (2 x multiply-accumulates); also validates the model config."""
    return 2 * costs.total_macs(architecture(model), model.resolution) / 1e9


def require_keys(config: ml_collections.ConfigDict, keys, example: str) -> None:
    """Names the first key missing from a study's experiment config (pointing at a complete `example`): the
    study's `name`, `seed` and base `model`, then its own `keys`, then what every study has to measure its
    candidates: the reward's `objective`, how `latency` is measured, and the `proxy` trainer config."""
    objective = (f"objective.{key}" for key in ("metric", "exponent", "target_latency_ms"))
    latency = (f"latency.{key}" for key in ("batch", "dtype", "mode", "steps", "warmup"))
    config_files.require_keys(config, ("name", "seed", "model", *keys, *objective, *latency, "proxy"), example)


def check_objective(objective: ml_collections.ConfigDict) -> None:
    """Rejects a bad `config.objective` section (the reward's w and T), naming the key."""
    if objective.exponent > 0:
        config_files.fail("objective.exponent", f"must be <= 0 (slower models earn less), got {objective.exponent}")
    if objective.target_latency_ms < 0:
        config_files.fail("objective.target_latency_ms", f"must be >= 0, got {objective.target_latency_ms}")


LATENCY_MODES = ("infer", "train")
LATENCY_DTYPES = ("float32", "bfloat16")
LATENCY_SOURCES = ("measured", "analytic")


def check_latency(latency: ml_collections.ConfigDict) -> None:
    """Rejects a bad `config.latency` section, naming the key."""
    if latency.mode not in LATENCY_MODES:
        config_files.fail("latency.mode", f"must be one of {LATENCY_MODES}, got {latency.mode!r}")
    if latency.dtype not in LATENCY_DTYPES:
        config_files.fail("latency.dtype", f"must be one of {LATENCY_DTYPES}, got {latency.dtype!r}")
    if latency.batch < 1 or latency.steps < 1:
        config_files.fail("latency", f"batch and steps must be >= 1, got {latency.batch} and {latency.steps}")
    source = latency.get("source", "measured")
    if source not in LATENCY_SOURCES:
        config_files.fail("latency.source", f"must be one of {LATENCY_SOURCES}, got {source!r}")
    if source == "analytic" and not (latency.get("peak_tflops", 0) > 0 and latency.get("memory_gbs", 0) > 0):
        config_files.fail("latency", "the analytic source needs peak_tflops > 0 and memory_gbs > 0 (the target's)")
    if source == "analytic" and latency.mode != "infer":
        config_files.fail("latency.mode", "the analytic source estimates inference only; use mode='infer'")


def benchmark(model: ml_collections.ConfigDict, latency: ml_collections.ConfigDict) -> dict:
    """`effnetx-bench`'s numbers for `model` on this process's first device."""
    from effnetx_jax.models.speed import benchmark

    timed = ml_collections.ConfigDict(model.to_dict())
    timed.dtype = latency.dtype
    return benchmark(timed, batch=latency.batch, mode=latency.mode, steps=latency.steps, warmup=latency.warmup)


def measure_latency(model: ml_collections.ConfigDict, latency: ml_collections.ConfigDict) -> float:
    """Median step time in ms of `model` on this process's first device."""
    return benchmark(model, latency)["median_ms"]


def analytic_latency_ms(model: ml_collections.ConfigDict, latency: ml_collections.ConfigDict) -> float:
    """A roofline estimate for hardware other than this one: every layer takes the longer of its FLOPs
    at `peak_tflops` and its memory traffic at `memory_gbs`, one after the other (no overlap, no
    fusion), at the configured batch and dtype. Inference only."""
    dtype_bytes = 2 if latency.dtype == "bfloat16" else 4
    seconds = 0.0
    for layer in costs.all_layers(architecture(model), model.resolution):
        compute = costs.flops([layer], latency.batch) / (latency.peak_tflops * 1e12)
        memory = costs.bytes_moved([layer], latency.batch, dtype_bytes) / (latency.memory_gbs * 1e9)
        seconds += max(compute, memory)
    return seconds * 1e3


def proxy_train(trainer_config, model, workdir: str, metric: str) -> dict:
    """Trains `model` with `trainer_config` in `workdir`: the final value of `metric` as `accuracy`, and
    the seconds the run took as `proxy_train_s`.

    A rerun after an interruption resumes from the checkpoint in `workdir`; a run that had already
    finished trains no further, and its metric is read back from `metrics.jsonl`.
    """
    from effnetx_jax.train import train_and_evaluate

    start = time.perf_counter()
    metrics = train_and_evaluate(with_model(trainer_config, model), workdir)
    seconds = round(time.perf_counter() - start, 1)
    if metrics.get("preempted"):
        raise Interrupted(f"the proxy training in {workdir} stopped on SIGTERM at step {metrics['step']}")
    if metric not in metrics:
        metrics = _last_logged(workdir, metric)
    if metric not in metrics:
        raise KeyError(f"the proxy training reported no {metric!r}; it reported {sorted(metrics)}")
    return {"accuracy": metrics[metric], "proxy_train_s": seconds}


def _last_logged(workdir: str, metric: str) -> dict:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        rows = [json.loads(line) for line in file if metric in line]
    return rows[-1] if rows else {}
