"""LACS at full scale on a TPU slice: EfficientNet-X-B0 on ImageNet, latency measured on the TPU.

  effnetx-lacs --config=experiments/lacs/imagenet_tpu.py --workdir=gs://BUCKET/lacs-tpu \
      --storage=postgresql://USER:PASS@HOST/lacs        # the same command on every host of the slice

The grid holds depth coefficients up to 2.0 because the paper's finding is that depth should grow
faster than width and resolution on accelerators (the released x-tpu family fits alpha~1.30,
beta~1.14, gamma~1.09 under the FLOPs rule; reference §3.3, DERIVED, not the paper's reported values).
Latency is measured as the reference's TPU benchmark: inference, bfloat16, batch 128 per device.

Cost: 12 of the 225 grid points meet alpha * beta^2 * gamma^2 = 2 +- 0.05. Each is proxy-trained for
30 epochs of ImageNet (the recipe's schedule, stopped early) at about 2x B0's FLOPs, so the sweep costs
360 ImageNet epochs of a B1/B2-sized model: about one full 350-epoch training of EfficientNet-X-B2.
Several workers (--storage) split the points; on a slice, every host trains each point together.
"""

from effnetx_jax import recipe
from experiments.lacs import imagenet_common


def get_config():
    config = imagenet_common.get_config("imagenet_tpu", recipe.get_config("efficientnet-x-b0"))
    config.latency.update(batch=128, dtype="bfloat16", mode="infer")
    config.proxy.batch_size = 4096
    return config
