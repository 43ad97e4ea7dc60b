"""`run_search`: the whole tool behind `effnetx-search`, callable from Python."""

from __future__ import annotations

import os
import zlib

import ml_collections
import optuna

from effnetx_jax.studies import Timing, lifecycle, loop
from effnetx_jax.studies.search import evolution, experiment, report, worker


def make_sampler(config) -> optuna.samplers.BaseSampler:
    algorithm = config.algorithm
    if algorithm.kind == "nsga2":
        # Seeded per worker: with one seed, workers sharing a study would draw the same first generation.
        seed = zlib.crc32(f"{config.seed}:{lifecycle.worker_name()}".encode())
        return optuna.samplers.NSGAIISampler(population_size=algorithm.population, seed=seed)
    space = experiment.space_of(config)
    return evolution.AgingEvolutionSampler(space, algorithm.population, algorithm.sample_size, config.seed)


def open_search_study(config, storage) -> optuna.Study:
    """The study of `config`; its fingerprint leaves the budget out, so a search can be extended."""
    fingerprinted = ml_collections.ConfigDict(config.to_dict())
    del fingerprinted["budget"]
    directions = ("maximize", "minimize") if config.algorithm.kind == "nsga2" else ("maximize",)
    study = lifecycle.open_study(config.name, storage, make_sampler(config), fingerprinted, directions)
    worker.prepare_study(study, config)
    return study


def run_search(
    config, workdir: str, *, storage: str | None = None, timing: Timing | None = None, command="", log=print
) -> dict | None:
    """Creates or joins the search, evaluates candidates until the budget is spent, then writes the report.

    Returns the best candidate's row on process 0 (None elsewhere, or if none completed).
    """
    experiment.check_experiment(config)
    timing = timing or Timing()
    study = loop.open_on_leader(lambda backend: open_search_study(config, backend), storage, workdir, timing)
    target_ms = loop.from_leader(study, lambda study: worker.target_latency_ms(study, config))
    evaluated = loop.run_worker(worker.Search(config, workdir, target_ms), study, timing, log)
    if study is None:
        return None
    best = report.write_report(config, study, workdir, command, loop.device_name())
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
