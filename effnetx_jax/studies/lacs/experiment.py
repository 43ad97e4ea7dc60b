"""The LACS experiment config: its checks, the grid of coefficients, and the constraint on each point.

Keys (see experiments/lacs/digits_cpu.py for a complete example):
  name                  study name in the storage
  seed                  GridSampler's seed (the same in every worker, so they agree on the grid order)
  model                 the base model (a model config, e.g. `model_config('efficientnet-x-b0')`)
  grid.alpha/beta/gamma depth, width and resolution coefficients to try at phi=1 (each >= 1)
  constraint.kind       'flops': alpha * beta^2 * gamma^2 within `tolerance` of `target` (EfficientNet's
                        rule, FLOPs x2 per unit of phi); 'latency': measured latency within `tolerance`
                        of `target` x the base model's latency
  objective             `metric` (a key the trainer returns, e.g. 'eval/top1'), `exponent` w (-0.07),
                        `target_latency_ms` T (0: the constraint's target x the base latency)
  latency               how latency is measured: batch, dtype, mode ('infer'/'train'), steps, warmup
  proxy                 a trainer config (dataset, short schedule) that trains every point; its model
                        section is replaced by the scaled model, keeping its compute dtype
  family                names, phis (one per name), dropout (one per name, or empty to keep the base's),
                        se_coefficient (likewise), name_prefix, and `trainer`: the trainer config the
                        generated family configs train with (the full recipe)
"""

from __future__ import annotations

import itertools

import ml_collections

from effnetx_jax import config_files
from effnetx_jax.studies import candidates

COEFFICIENTS = ("alpha", "beta", "gamma")
CONSTRAINTS = ("flops", "latency")

Point = tuple[float, float, float]


def check_experiment(config: ml_collections.ConfigDict) -> None:
    """Every problem of the experiment config, named by its key, before anything is measured or trained."""
    candidates.require_keys(
        config,
        (
            *(f"grid.{name}" for name in COEFFICIENTS),
            *(f"constraint.{key}" for key in ("kind", "target", "tolerance")),
            *(f"family.{key}" for key in ("names", "phis", "dropout", "se_coefficient", "name_prefix", "trainer")),
        ),
        "experiments/lacs/digits_cpu.py",
    )
    for name in COEFFICIENTS:
        values = config.grid[name]
        if isinstance(values, str) or not values:
            config_files.fail(f"grid.{name}", f"must be a non-empty list of numbers, got {values!r}")
        if any(not isinstance(v, (int, float)) or v < 1 for v in values):
            config_files.fail(
                f"grid.{name}", f"every coefficient must be a number >= 1 (phi scales the model up), got {values}"
            )
    if config.constraint.kind not in CONSTRAINTS:
        config_files.fail("constraint.kind", f"must be one of {CONSTRAINTS}, got {config.constraint.kind!r}")
    if not config.constraint.target > 1:
        config_files.fail(
            "constraint.target", f"must be > 1 (a multiple of the base model's cost), got {config.constraint.target}"
        )
    if not config.constraint.tolerance >= 0:
        config_files.fail("constraint.tolerance", f"must be >= 0, got {config.constraint.tolerance}")
    candidates.check_objective(config.objective)
    candidates.check_latency(config.latency)
    family = config.family
    if len(family.phis) != len(family.names):
        config_files.fail("family.phis", f"needs one phi per name ({len(family.names)}), got {len(family.phis)}")
    for key in ("dropout", "se_coefficient"):
        if family[key] and len(family[key]) != len(family.names):
            config_files.fail(
                f"family.{key}", f"needs one value per name ({len(family.names)}) or none, got {family[key]!r}"
            )
    if any(phi <= 0 for phi in family.phis):
        config_files.fail("family.phis", f"must be > 0, got {family.phis}")
    _check_flops_constraint_is_met(config)


def _check_flops_constraint_is_met(config: ml_collections.ConfigDict) -> None:
    """A FLOPs constraint that no grid point meets is known from the grid alone: refused before the study is
    created or a latency is measured. (A latency constraint needs every point measured to know it.)"""
    if config.constraint.kind != "flops":
        return
    ratios = {point: flops_ratio(point) for point in grid_points(config)}
    if all(_outside(ratio, config.constraint) for ratio in ratios.values()):
        config_files.fail(
            "constraint",
            f"{nothing_meets(config.constraint, ratios)}; change constraint.target or constraint.tolerance, "
            "or the grid",
        )


def grid_points(config: ml_collections.ConfigDict) -> list[Point]:
    return [tuple(map(float, point)) for point in itertools.product(*(config.grid[name] for name in COEFFICIENTS))]


def flops_ratio(point: Point) -> float:
    """EfficientNet's FLOPs growth of one unit of phi: depth alpha, width beta^2, resolution gamma^2."""
    alpha, beta, gamma = point
    return alpha * beta**2 * gamma**2


def _outside(value: float, constraint) -> bool:
    return abs(value - constraint.target) > constraint.tolerance + 1e-9


def flops_violation(point: Point, constraint) -> str | None:
    """Why `point` fails a 'flops' constraint, or None (always None for a 'latency' constraint)."""
    if constraint.kind != "flops" or not _outside(flops_ratio(point), constraint):
        return None
    return (
        f"alpha*beta^2*gamma^2 = {flops_ratio(point):.3f} is outside {constraint.target:g} +- {constraint.tolerance:g}"
    )


CONSTRAINED_VALUES = {"flops": "alpha*beta^2*gamma^2", "latency": "latency / the base model's"}


def nothing_meets(constraint, values: dict[Point, float]) -> str:
    """Why no point meets `constraint`, given each point's constrained value: the closest point and its value."""
    (alpha, beta, gamma), value = min(values.items(), key=lambda item: abs(item[1] - constraint.target))
    return (
        f"no grid point meets {CONSTRAINED_VALUES[constraint.kind]} = {constraint.target:g} +- "
        f"{constraint.tolerance:g}; the closest, alpha={alpha:g} beta={beta:g} gamma={gamma:g}, has {value:.3f}"
    )


def latency_violation(latency_ms: float, base_latency_ms: float, constraint) -> str | None:
    """Why a measured latency fails a 'latency' constraint, or None (always None for 'flops')."""
    ratio = latency_ms / base_latency_ms
    if constraint.kind != "latency" or not _outside(ratio, constraint):
        return None
    return f"latency {ratio:.3f}x the base model's is outside {constraint.target:g} +- {constraint.tolerance:g}"


def target_latency_ms(config: ml_collections.ConfigDict, base_latency_ms: float) -> float:
    """The reward's T: as configured, or the constraint's target multiple of the base latency."""
    return config.objective.target_latency_ms or config.constraint.target * base_latency_ms
