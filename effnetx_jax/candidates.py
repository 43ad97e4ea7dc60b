"""What LACS and the search measure for every candidate model: latency here, proxy accuracy, and the reward.

Latency comes from the bench code (`bench.benchmark`), accuracy from the trainer (`train_and_evaluate`,
nothing special-cased), and the reward is MnasNet's `ACC * (LAT / T) ** w`.
"""

from __future__ import annotations

import json
import os

import ml_collections

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


def measure_latency(model: ml_collections.ConfigDict, latency: ml_collections.ConfigDict) -> float:
    """Median step time in ms of `model` on this process's first device, as `python -m effnetx_jax.bench`."""
    from effnetx_jax import bench

    timed = ml_collections.ConfigDict(model.to_dict())
    timed.dtype = latency.dtype
    result = bench.benchmark(timed, batch=latency.batch, mode=latency.mode, steps=latency.steps, warmup=latency.warmup)
    return result["median_ms"]


def proxy_accuracy(trainer_config, model, workdir: str, metric: str) -> float:
    """Trains `model` with `trainer_config` in `workdir` and returns the final value of `metric`.

    A rerun after an interruption resumes from the checkpoint in `workdir`; a run that had already
    finished trains no further, and its metric is read back from `metrics.jsonl`.
    """
    from effnetx_jax.train import train_and_evaluate

    metrics = train_and_evaluate(with_model(trainer_config, model), workdir)
    if metrics.get("preempted"):
        raise Interrupted(f"the proxy training in {workdir} stopped on SIGTERM at step {metrics['step']}")
    if metric not in metrics:
        metrics = _last_logged(workdir, metric)
    if metric not in metrics:
        raise KeyError(f"the proxy training reported no {metric!r}; it reported {sorted(metrics)}")
    return metrics[metric]


def _last_logged(workdir: str, metric: str) -> dict:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        rows = [json.loads(line) for line in file if metric in line]
    return rows[-1] if rows else {}
