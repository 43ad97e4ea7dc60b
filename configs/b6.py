"""EfficientNet-X-B6 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b6.py --workdir=DIR                   # EfficientNet-X-B6
  python train.py --config=configs/b6.py:efficientnet --workdir=DIR      # EfficientNet-B6
  python train.py --config=configs/b6.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b6.py:x,smoke --workdir=runs/b6-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B6 47.65M parameters and 47.477B MACs
per 528x528 image; EfficientNet-B6 43.04M and 19.068B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B6 reached
84.0% top-1 with AutoAugment (EfficientNet paper), no baseline-preprocessing checkpoint was released.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(6, arg)
