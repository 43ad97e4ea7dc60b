"""From coefficients to models: the base model scaled by phi, and the family's config files.

At compound coefficient phi, depth is multiplied by alpha^phi, width by beta^phi and resolution by
gamma^phi. The two multipliers are rounded to two decimals, the precision of the reference's scaling
tables, and the resolution to the nearest pixel (the reference has no rounding rule for it: its
tables were rounded by hand, e.g. EfficientNet-B2's 260 where 224 x 1.15 = 257.6). Filters and
repeats are then rounded by the model's own rules (round_filters, ceil of repeats).
"""

from __future__ import annotations

import math
import os

import ml_collections

from effnetx_jax import config_files
from effnetx_jax.models import architecture, costs
from effnetx_jax.studies import candidates
from effnetx_jax.studies.lacs.experiment import Point


def scale_model(base: ml_collections.ConfigDict, point: Point, phi: float = 1.0) -> ml_collections.ConfigDict:
    alpha, beta, gamma = point
    model = ml_collections.ConfigDict(base.to_dict())
    model.depth = base.depth * round(alpha**phi, 2)
    model.width = base.width * round(beta**phi, 2)
    model.resolution = math.floor(base.resolution * gamma**phi + 0.5)
    return model


def member_model(config: ml_collections.ConfigDict, point: Point, index: int) -> ml_collections.ConfigDict:
    """Family member `index` (of `config.family.names`): the scaled base with its name, dropout and SE."""
    family = config.family
    model = scale_model(config.model, point, family.phis[index])
    model.name = f"{family.name_prefix}-{family.names[index]}"
    if family.dropout:
        model.dropout = float(family.dropout[index])
    if family.se_coefficient:
        model.se_coefficient = float(family.se_coefficient[index])
    return model


def write_family(config: ml_collections.ConfigDict, point: Point, directory: str, command: str) -> list[dict]:
    """Writes `directory/<name>.py` for every member (trainer config = `config.family.trainer` + the
    member's model); returns one summary per member."""
    os.makedirs(directory, exist_ok=True)
    alpha, beta, gamma = point
    members = []
    for index, name in enumerate(config.family.names):
        model = member_model(config, point, index)
        phi = config.family.phis[index]
        gflops = float(f"{candidates.gflops(model):.4g}")
        path = os.path.join(directory, f"{name}.py")
        docstring = (
            f"{model.name}: {config.model.name} scaled by LACS (alpha={alpha:g}, beta={beta:g}, gamma={gamma:g}) "
            f"at phi={phi:g}.\n\n"
            f"Written by `{command}`.\n"
            f"width {model.width:g}, depth {model.depth:g}, resolution {model.resolution}, "
            f"{gflops:g} GFLOPs per image.\n\n"
            f"  python train.py --config={path} --workdir=DIR"
        )
        with open(path, "w") as file:
            file.write(config_files.render_config(candidates.with_model(config.family.trainer, model), docstring))
        members.append(
            {
                "name": model.name,
                "phi": phi,
                "width": model.width,
                "depth": model.depth,
                "resolution": model.resolution,
                "dropout": model.dropout,
                "gflops": gflops,
                "params": costs.parameter_count(architecture(model)),
                "config": path,
            }
        )
    return members
