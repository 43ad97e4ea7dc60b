"""EfficientNet / EfficientNet-X as a pure-functional Flax (linen) module built from an `Architecture`.

Submodule names follow the reference's layer roles (stem, blocks_N/{space2depth,expand,fused,
depthwise,se_reduce,se_expand,project}, head) so that TF checkpoints map onto them one to one; each
block is the module of its block type (`models/blocks.py`).

`remat` trades compute for memory in training without touching that tree: "blocks" recomputes each
block's activations in the backward pass (only block inputs are kept), "full" the whole forward.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from effnetx_jax.models import layers
from effnetx_jax.models.blocks import BLOCK_TYPES
from effnetx_jax.models.scaling import Architecture

# The values of the trainer's `config.remat`.
REMAT_MODES = ("none", "blocks", "full")
# Inside a rematerialised region nothing is saved for the backward pass: only its inputs (a block's input
# is the previous block's output) stay alive, everything else is recomputed.
_REMAT_POLICY = jax.checkpoint_policies.nothing_saveable


def _rematerialised(target):
    # `train` (argument 2, after the module) selects Python branches, so it must be static.
    return nn.remat(target, static_argnums=(2,), policy=_REMAT_POLICY)


class EfficientNet(nn.Module):
    """Stem (3x3/s2 conv, BN, act) -> blocks -> head (1x1 conv, BN, act, mean pool, dropout, dense).

    `dtype` is the compute dtype; parameters and BN statistics stay float32, logits are float32.
    `bn_groups` splits the batch into that many contiguous slices with their own BatchNorm statistics
    (the trainer's `bn_group_size`); 1 normalises over the whole batch. `remat` is one of `REMAT_MODES`.
    """

    arch: Architecture
    dtype: jnp.dtype = jnp.float32
    depthwise_impl: str = "auto"
    batch_norm_impl: str = "auto"
    bn_groups: int = 1
    remat: str = "none"

    def __call__(self, images, train: bool = False):
        if self.remat == "full":
            # Lifted over the method, not the module: the variables stay in this module's scope.
            return _rematerialised(type(self)._forward)(self, images, train)
        return self._forward(images, train)

    @nn.compact
    def _forward(self, images, train: bool):
        arch = self.arch

        def bn_act(name):
            return layers.batch_norm(
                train,
                arch.bn_momentum,
                arch.bn_epsilon,
                self.dtype,
                self.bn_groups,
                arch.activation,
                self.batch_norm_impl,
                name=name,
            )

        x = images.astype(self.dtype)
        x = bn_act("stem_bn")(layers.conv(arch.stem_filters, 3, (2, 2), dtype=self.dtype, name="stem_conv")(x))
        for spec in arch.blocks:
            block_type = BLOCK_TYPES[spec.block_type]
            block = (_rematerialised(block_type) if self.remat == "blocks" else block_type)(
                spec,
                arch.bn_momentum,
                arch.bn_epsilon,
                self.depthwise_impl,
                self.dtype,
                self.bn_groups,
                self.batch_norm_impl,
                name=f"blocks_{spec.index}",
            )
            x = block(x, train)
        x = bn_act("head_bn")(layers.conv(arch.head_filters, 1, dtype=self.dtype, name="head_conv")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(arch.dropout, deterministic=not train)(x)
        logits = nn.Dense(
            arch.num_classes,
            kernel_init=layers.dense_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="classifier",
        )(x)
        return logits.astype(jnp.float32)
