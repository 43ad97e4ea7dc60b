"""EfficientNet-X-B1 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b1.py --workdir=DIR                   # EfficientNet-X-B1
  python train.py --config=configs/b1.py:efficientnet --workdir=DIR      # EfficientNet-B1
  python train.py --config=configs/b1.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b1.py:x,smoke --workdir=runs/b1-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B1 9.57M parameters and 1.606B MACs
per 240x240 image; EfficientNet-B1 7.79M and 0.687B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B1 reached
79.1% top-1 with AutoAugment (EfficientNet paper), 78.7% with the baseline preprocessing of this release.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(1, arg)
