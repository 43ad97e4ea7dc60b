"""EfficientNet-X-B4 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b4.py --workdir=DIR                   # EfficientNet-X-B4
  python train.py --config=configs/b4.py:efficientnet --workdir=DIR      # EfficientNet-B4
  python train.py --config=configs/b4.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b4.py:x,smoke --workdir=runs/b4-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B4 21.14M parameters and 10.522B MACs
per 380x380 image; EfficientNet-B4 19.34M and 4.394B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B4 reached
82.9% top-1 with AutoAugment (EfficientNet paper), 82.5% with the baseline preprocessing of this release.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(4, arg)
