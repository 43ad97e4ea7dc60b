"""EfficientNet-X-B7 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b7.py --workdir=DIR                   # EfficientNet-X-B7
  python train.py --config=configs/b7.py:efficientnet --workdir=DIR      # EfficientNet-B7
  python train.py --config=configs/b7.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b7.py:x,smoke --workdir=runs/b7-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B7 73.16M parameters and 91.787B MACs
per 600x600 image; EfficientNet-B7 66.35M and 37.746B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B7 reached
84.3% top-1 with AutoAugment (EfficientNet paper), no baseline-preprocessing checkpoint was released.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(7, arg)
