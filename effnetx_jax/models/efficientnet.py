"""EfficientNet / EfficientNet-X as a pure-functional Flax (linen) module built from an `Architecture`.

Submodule names follow the reference's layer roles (stem, blocks_N/{space2depth,expand,fused,
depthwise,se_reduce,se_expand,project}, head) so that TF checkpoints map onto them one to one; each
block is the module of its block type (`models/blocks.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from effnetx_jax.models import layers
from effnetx_jax.models.blocks import BLOCK_TYPES
from effnetx_jax.models.scaling import Architecture


class EfficientNet(nn.Module):
    """Stem (3x3/s2 conv, BN, act) -> blocks -> head (1x1 conv, BN, act, mean pool, dropout, dense).

    `dtype` is the compute dtype; parameters and BN statistics stay float32, logits are float32.
    `bn_groups` splits the batch into that many contiguous slices with their own BatchNorm statistics
    (the trainer's `bn_group_size`); 1 normalises over the whole batch.
    """

    arch: Architecture
    dtype: jnp.dtype = jnp.float32
    depthwise_impl: str = "auto"
    bn_groups: int = 1

    @nn.compact
    def __call__(self, images, train: bool = False):
        arch = self.arch
        act = layers.ACTIVATION_FNS[arch.activation]

        def bn(name):
            return layers.batch_norm(train, arch.bn_momentum, arch.bn_epsilon, self.dtype, self.bn_groups, name=name)

        x = images.astype(self.dtype)
        x = act(bn("stem_bn")(layers.conv(arch.stem_filters, 3, (2, 2), dtype=self.dtype, name="stem_conv")(x)))
        for spec in arch.blocks:
            block = BLOCK_TYPES[spec.block_type](
                spec,
                arch.bn_momentum,
                arch.bn_epsilon,
                self.depthwise_impl,
                self.dtype,
                self.bn_groups,
                name=f"blocks_{spec.index}",
            )
            x = block(x, train)
        x = act(bn("head_bn")(layers.conv(arch.head_filters, 1, dtype=self.dtype, name="head_conv")(x)))
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
