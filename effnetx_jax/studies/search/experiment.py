"""The search experiment config: its checks, the space it describes, and the reference models.

Keys (see experiments/search/digits_cpu.py for a complete example):
  name, seed            study name in the storage; the seed of every random choice
  model                 the skeleton: a model config whose block strings give each stage's stride,
                        repeats and filters, and whose width/depth/resolution every candidate keeps
  space                 the choice lists (`space.default_choices()`): conv, kernel, expand, activation,
                        se, repeats (added to the skeleton's), width (multiplies output filters),
                        space_to_depth, space_to_batch, se_coefficient
  references            registered variants (e.g. 'efficientnet-b0', 'efficientnet-x-b0') trained first
                        at the skeleton's scale, for comparison; they are points of the space
  algorithm             kind 'aging' (regularized evolution, maximises the reward) or 'nsga2' (Optuna's
                        NSGA-II, Pareto front of accuracy and latency); population, sample_size (aging)
  budget                max_trials (candidates, cached ones included; 0: no limit) and max_hours (wall
                        time since the search started; 0: no limit). Not part of the study's
                        fingerprint: raise either and rerun to extend a finished search
  objective             metric (a key the trainer returns), exponent w (-0.07), target_latency_ms T
                        (0: the first reference model's latency)
  latency               source 'measured' (bench on this device: batch, dtype, mode, steps, warmup) or
                        'analytic' (roofline at the target's peak_tflops and memory_gbs)
  proxy                 the trainer config every candidate is trained with (its model is replaced)
  final                 the trainer config written to best.py with the best candidate (the full recipe)
"""

from __future__ import annotations

import ml_collections
import numpy as np

from effnetx_jax import config_files
from effnetx_jax.models import registry
from effnetx_jax.studies import candidates
from effnetx_jax.studies.search.space import GLOBAL_CHOICES, STAGE_CHOICES, SearchSpace

ALGORITHMS = ("aging", "nsga2")


def check_experiment(config: ml_collections.ConfigDict) -> None:
    """Every problem of the experiment config, named by its key, before anything is measured or trained."""
    candidates.require_keys(
        config,
        (
            "references",
            *(f"space.{choice}" for choice in STAGE_CHOICES + GLOBAL_CHOICES),
            *(f"algorithm.{key}" for key in ("kind", "population", "sample_size")),
            "budget.max_trials",
            "budget.max_hours",
            "latency.source",
            "final",
        ),
        "experiments/search/digits_cpu.py",
    )
    for choice in STAGE_CHOICES + GLOBAL_CHOICES:
        values = config.space[choice]
        if isinstance(values, str) or not values:
            config_files.fail(f"space.{choice}", f"must be a non-empty list of choices, got {values!r}")
    if config.algorithm.kind not in ALGORITHMS:
        config_files.fail("algorithm.kind", f"must be one of {ALGORITHMS}, got {config.algorithm.kind!r}")
    if not 1 <= config.algorithm.sample_size <= config.algorithm.population:
        config_files.fail("algorithm.sample_size", f"must be in [1, population={config.algorithm.population}]")
    if config.budget.max_trials < 0 or config.budget.max_hours < 0:
        config_files.fail("budget", "max_trials and max_hours must be >= 0 (0: no limit)")
    if not (config.budget.max_trials or config.budget.max_hours):
        config_files.fail("budget", "set max_trials, max_hours or both: a search without a budget never ends")
    candidates.check_objective(config.objective)
    if not config.objective.target_latency_ms and not config.references:
        config_files.fail("objective.target_latency_ms", "must be > 0 when there are no references to take it from")
    candidates.check_latency(config.latency)
    space = space_of(config)
    try:
        space.random(np.random.default_rng(config.seed))
    except ValueError as error:
        config_files.fail("space", str(error))
    for name in config.references:
        try:
            space.from_model(reference_model(config, name))
        except ValueError as error:
            config_files.fail("references", f"{name!r} is not a point of the space: {error}")


def space_of(config: ml_collections.ConfigDict) -> SearchSpace:
    return SearchSpace(config.model, config.space)


def reference_model(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Registered variant `name` at the skeleton's scale: its blocks, activation and SE width on the
    skeleton's width, depth, resolution, classes and head, so it competes with the candidates as equals."""
    variant = registry.get_variant(name)
    model = ml_collections.ConfigDict(config.model.to_dict())
    model.update(
        name=name,
        blocks=tuple(variant.blocks),
        activation=variant.activation,
        se_coefficient=float(variant.se_coefficient),
        stage_activations=(),
        stage_conv_types=(),
    )
    return model
