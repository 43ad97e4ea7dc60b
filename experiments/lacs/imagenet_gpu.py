"""LACS at full scale on GPUs: EfficientNet-X-B0 on ImageNet, latency measured on the GPU.

  effnetx-lacs --config=experiments/lacs/imagenet_gpu.py --workdir=/shared/lacs-gpu \
      --storage=postgresql://USER:PASS@HOST/lacs        # one worker per 8-GPU host, or a multi-host job

Latency is measured as the paper's GPU setting: inference, bfloat16 (the paper used fp16 TensorRT on
V100), batch 128 on one GPU. The grid is the same as imagenet_tpu.py.

Cost: as imagenet_tpu.py, 12 grid points of 30 ImageNet epochs each, about one full 350-epoch
training of EfficientNet-X-B2; 8 hosts sharing the study through --storage finish in 1/8 of the time.
"""

from effnetx_jax import recipe
from experiments.lacs import imagenet_common


def get_config():
    config = imagenet_common.get_config("imagenet_gpu", recipe.get_config("efficientnet-x-b0"))
    config.latency.update(batch=128, dtype="bfloat16", mode="infer")
    config.proxy.batch_size = 1024
    return config
