"""EfficientNet-X-B3 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b3.py --workdir=DIR                   # EfficientNet-X-B3
  python train.py --config=configs/b3.py:efficientnet --workdir=DIR      # EfficientNet-B3
  python train.py --config=configs/b3.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b3.py:x,smoke --workdir=runs/b3-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B3 13.29M parameters and 4.334B MACs
per 300x300 image; EfficientNet-B3 12.23M and 1.827B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B3 reached
81.6% top-1 with AutoAugment (EfficientNet paper), 81.1% with the baseline preprocessing of this release.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(3, arg)
