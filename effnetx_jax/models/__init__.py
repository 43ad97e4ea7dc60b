"""Model description (block strings, scaling, registry, config) and the Flax modules built from it."""

from __future__ import annotations

import jax.numpy as jnp

from effnetx_jax.models.block_string import BlockArgs, BlockStringError, decode, encode
from effnetx_jax.models.config import architecture, model_config
from effnetx_jax.models.efficientnet import REMAT_MODES, EfficientNet
from effnetx_jax.models.registry import FAMILIES, VARIANTS, family_members, get_variant
from effnetx_jax.models.scaling import Architecture, BlockSpec, round_filters, round_repeats


def create_model(cfg, bn_groups: int = 1, remat: str = "none") -> EfficientNet:
    """The Flax module for a model config (see `model_config`); validates the config first.

    `bn_groups` > 1 computes BatchNorm statistics separately on that many contiguous batch slices;
    `remat` (the trainer's `config.remat`, one of `REMAT_MODES`) what the backward pass recomputes.
    """
    return EfficientNet(
        architecture(cfg),
        dtype=jnp.dtype(cfg.dtype),
        depthwise_impl=cfg.depthwise_impl,
        batch_norm_impl=cfg.batch_norm_impl,
        bn_groups=bn_groups,
        remat=remat,
    )


__all__ = [
    "FAMILIES",
    "REMAT_MODES",
    "VARIANTS",
    "Architecture",
    "BlockArgs",
    "BlockSpec",
    "BlockStringError",
    "EfficientNet",
    "architecture",
    "create_model",
    "decode",
    "encode",
    "family_members",
    "get_variant",
    "model_config",
    "round_filters",
    "round_repeats",
]
