"""Named variants: the scaling tables of the official TF code (reference §1.2, §1.5)."""

from __future__ import annotations

import dataclasses

from effnetx_jax.errors import UserError

# `efficientnet_builder._DEFAULT_BLOCKS_ARGS`: swish everywhere, depthwise MBConv, no s2d.
EFFICIENTNET_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

# `tpu/efficientnet_x_builder.py`, version 1: s2d stage 1, fused stages 2-3, ReLU except stages 2-3.
EFFICIENTNET_X_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25_d1_a0",
    "r2_k3_s22_e6_i16_o24_se0.25_f1_d2_a1",
    "r2_k5_s22_e6_i24_o40_se0.25_f1_a1",
    "r3_k3_s22_e6_i40_o80_se0.25_a0",
    "r3_k5_s11_e6_i80_o112_se0.25_a0",
    "r4_k5_s22_e6_i112_o192_se0.25_a0",
    "r1_k3_s11_e6_i192_o320_se0.25_a0",
)


@dataclasses.dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    resolution: int
    dropout: float
    se_coefficient: float
    blocks: tuple[str, ...]
    activation: str


# (width, depth, resolution, dropout) shared by efficientnet-bN and efficientnet-x-bN.
_COMPOUND = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}
# Latency-aware (LACS) scaling for TPUv3 and GPUv100, (width, depth) order as fixed upstream in a7f92f0.
_X_TPU = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.05, 1.09, 229, 0.2),
    "b2": (1.13, 1.29, 244, 0.3),
    "b3": (1.27, 1.62, 263, 0.3),
    "b4": (1.54, 2.38, 299, 0.4),
    "b5": (1.96, 2.76, 332, 0.4),
    "b6": (2.75, 3.01, 328, 0.5),
    "b7": (3.26, 3.44, 350, 0.5),
}
_X_GPU = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.05, 1.09, 229, 0.2),
    "b2": (1.13, 1.24, 237, 0.3),
    "b3": (1.31, 1.63, 255, 0.3),
    "b4": (1.63, 2.4, 282, 0.4),
    "b5": (1.94, 3.29, 306, 0.4),
    "b6": (2.25, 4.28, 328, 0.5),
    "b7": (2.58, 5.46, 350, 0.5),
}
# SE width multiplier of the X families: B0 4 (SE as wide as the block input), B1 2, then 1.
_X_SE_COEFFICIENT = {"b0": 4.0, "b1": 2.0}


def _family(prefix: str, table: dict, blocks: tuple[str, ...], activation: str, x_se: bool) -> dict:
    return {
        f"{prefix}-{size}": Variant(
            *values,
            se_coefficient=_X_SE_COEFFICIENT.get(size, 1.0) if x_se else 1.0,
            blocks=blocks,
            activation=activation,
        )
        for size, values in table.items()
    }


VARIANTS: dict[str, Variant] = {
    **_family("efficientnet", _COMPOUND, EFFICIENTNET_BLOCKS, "swish", x_se=False),
    **_family("efficientnet-x", _COMPOUND, EFFICIENTNET_X_BLOCKS, "relu", x_se=True),
    **_family("efficientnet-x-tpu", _X_TPU, EFFICIENTNET_X_BLOCKS, "relu", x_se=True),
    **_family("efficientnet-x-gpu", _X_GPU, EFFICIENTNET_X_BLOCKS, "relu", x_se=True),
}

FAMILIES = ("efficientnet", "efficientnet-x", "efficientnet-x-tpu", "efficientnet-x-gpu")


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; registered models: {', '.join(VARIANTS)}") from None


def family_members(family: str) -> list[str]:
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    return [f"{family}-b{i}" for i in range(8)]
