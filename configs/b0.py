"""EfficientNet-X-B0 on ImageNet with the official recipe (`effnetx_jax.recipe`).

  python train.py --config=configs/b0.py --workdir=DIR                   # EfficientNet-X-B0
  python train.py --config=configs/b0.py:efficientnet --workdir=DIR      # EfficientNet-B0
  python train.py --config=configs/b0.py:x-tpu --workdir=DIR             # LACS-scaled for TPU (:x-gpu for GPU)
  python train.py --config=configs/b0.py:x,smoke --workdir=runs/b0-smoke  # 20 steps on digits, laptop

Needs ImageNet prepared for TFDS in array_record (`imagenet2012`, see docs/data.md) and, at the
recipe's global batch 2048, accelerators whose memory holds it (a TPU pod slice or a multi-GPU
cluster, see docs/multihost.md); with a lower `batch_size` the learning rate scales with it.
The recipe itself: docs/training.md.

Cost (measured by `effnetx-summary`): EfficientNet-X-B0 7.58M parameters and 0.920B MACs
per 224x224 image; EfficientNet-B0 5.29M and 0.386B.
Result: not measured here (no ImageNet run yet). Taken from the reference: EfficientNet-B0 reached
77.1% top-1 with AutoAugment (EfficientNet paper), 76.7% with the baseline preprocessing of this release.
The EfficientNet-X paper's own accuracy table could not be consulted (UNVERIFIED).
"""

from effnetx_jax import recipe


def get_config(arg: str = ""):
    return recipe.variant_config(0, arg)
