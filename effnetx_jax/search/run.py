"""`run_search`: the whole tool behind `python -m effnetx_jax.search`, callable from Python."""

from __future__ import annotations

import os
import zlib

import jax
import ml_collections
import optuna

from effnetx_jax import studies
from effnetx_jax.search import evolution, experiment, report, worker


def _device() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def make_sampler(config) -> optuna.samplers.BaseSampler:
    algorithm = config.algorithm
    if algorithm.kind == "nsga2":
        # Seeded per worker: with one seed, workers sharing a study would draw the same first generation.
        seed = zlib.crc32(f"{config.seed}:{studies.worker_name()}".encode())
        return optuna.samplers.NSGAIISampler(population_size=algorithm.population, seed=seed)
    space = experiment.space_of(config)
    return evolution.AgingEvolutionSampler(space, algorithm.population, algorithm.sample_size, config.seed)


def open_search_study(config, storage) -> optuna.Study:
    """The study of `config`; its fingerprint leaves the budget out, so a search can be extended."""
    fingerprinted = ml_collections.ConfigDict(config.to_dict())
    del fingerprinted["budget"]
    directions = ("maximize", "minimize") if config.algorithm.kind == "nsga2" else ("maximize",)
    study = studies.open_study(config.name, storage, make_sampler(config), fingerprinted, directions)
    worker.prepare_study(study, config)
    return study


def run_search(
    config, workdir: str, *, storage: str | None = None, timing: studies.Timing | None = None, command="", log=print
) -> dict | None:
    """Creates or joins the search, evaluates candidates until the budget is spent, then writes the report.

    Returns the best candidate's row on process 0 (None elsewhere, or if none completed).
    """
    experiment.check_experiment(config)
    timing = timing or studies.Timing()
    is_leader = jax.process_index() == 0
    study = None
    if is_leader:
        study = open_search_study(config, studies.open_storage(storage, workdir, timing.stale_after_s))
    evaluated = worker.run_worker(config, workdir, study, timing, log)
    if not is_leader:
        return None
    best = report.write_report(config, study, workdir, command, _device())
    log(f"this worker trained {evaluated} candidate(s); wrote history.csv, report.md in {workdir}")
    if best:
        log(
            f"best: trial {best['trial']}, reward {best['reward']:.4f}, {config.objective.metric} "
            f"{best['accuracy']:.4f}, latency {best['latency_ms']:.4g} ms; "
            f"{os.path.join(workdir, 'best.py')} and pareto.png written"
        )
    else:
        log("no candidate completed, so no best.py; see report.md for each candidate's error")
    return best
