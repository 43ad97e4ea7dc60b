"""EfficientNet-X-B5 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b5.py --workdir=DIR                   # EfficientNet-X-B5
  python train.py --config=configs/b5.py:efficientnet --workdir=DIR      # EfficientNet-B5
  python train.py --config=configs/b5.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b5.py:x,smoke --workdir=runs/b5-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B5 33.43M parameters and 24.556B MACs
per 456x456 image; EfficientNet-B5 30.39M and 10.266B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B5 reached
83.6% top-1 with AutoAugment (EfficientNet paper), 83.1% with the baseline preprocessing of this release.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(5, arg)
