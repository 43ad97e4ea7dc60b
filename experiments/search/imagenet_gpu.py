"""The paper's search at full scale on GPUs: ImageNet proxy, latency measured on the GPU.

  effnetx-search --config=experiments/search/imagenet_gpu.py --workdir=/shared/search-gpu \
      --storage=postgresql://USER:PASS@HOST/search        # one worker per GPU node, any number of nodes

The space, algorithm and budget of imagenet_tpu.py; latency is inference, bfloat16, batch 128 on one
GPU. To search on other hardware than the target (a CPU cluster for a TPU target, say), set
`latency.source='analytic'` with the target's `peak_tflops` and `memory_gbs`: the latency is then a
roofline estimate and the measured time is recorded beside it.

Cost: 300 candidates x 5 ImageNet epochs at about B0's FLOPs = 1,500 B0 epochs, about 4.3 full
350-epoch B0 trainings; on one 8-GPU node at ~10,000 img/s for B0 in bfloat16 (an estimate, not a
measurement), about 55 hours.
"""

from experiments.search import imagenet_common


def get_config():
    config = imagenet_common.get_config("imagenet_gpu")
    config.proxy.batch_size = 1024
    return config
