"""A model described without code: EfficientNet-X-B0 with a few searched-style edits.

Every field of a registered variant can be overridden; LACS and search write configs like this one.

  effnetx-summary --config=configs/custom_model.py
  effnetx-bench --config=configs/custom_model.py --batch 8

Expected (measured by the summary command): 23 blocks, 12,775,992 parameters, 2.037B MACs at 256 px.
The config keys and the block-string grammar: docs/models.md.
"""

from effnetx_jax.models import model_config


def get_config():
    model = model_config("efficientnet-x-b0")
    model.name = "efficientnet-x-b0-custom"
    model.width, model.depth, model.resolution = 1.0, 1.1, 256
    # Stage 4 becomes fused and every stage after the fused ones runs swish.
    model.stage_conv_types = ("depthwise", "fused", "fused", "fused", "depthwise", "depthwise", "depthwise")
    model.stage_activations = ("relu", "swish", "swish", "swish", "swish", "swish", "swish")
    # Stage 5 with space-to-batch (b2): its 5x5 depthwise convs see a 2x-dilated grid.
    model.blocks = (*model.blocks[:4], "r3_k5_s11_e6_i80_o112_se0.25_b2_a0", *model.blocks[5:])
    return model
