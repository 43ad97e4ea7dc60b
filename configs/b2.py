"""EfficientNet-X-B2 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b2.py --workdir=DIR                   # EfficientNet-X-B2
  python train.py --config=configs/b2.py:efficientnet --workdir=DIR      # EfficientNet-B2
  python train.py --config=configs/b2.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b2.py:x,smoke --workdir=runs/b2-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B2 9.97M parameters and 2.307B MACs
per 260x260 image; EfficientNet-B2 9.11M and 0.994B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B2 reached
80.1% top-1 with AutoAugment (EfficientNet paper), 79.8% with the baseline preprocessing of this release.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(2, arg)
