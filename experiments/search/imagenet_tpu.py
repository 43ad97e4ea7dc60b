"""The paper's search at full scale on a TPU slice: ImageNet proxy, latency measured on the TPU.

  effnetx-search --config=experiments/search/imagenet_tpu.py --workdir=gs://BUCKET/search-tpu \
      --storage=postgresql://USER:PASS@HOST/search        # the same command on every host of the slice

Space: per stage of EfficientNet-B0's skeleton, depthwise or fused, kernel 3/5, expansion 1/4/6,
ReLU/swish, SE 0/0.25, repeats -1/0/+1, width x0.75/1/1.25; space-to-depth and space-to-batch on the
first stages; SE width 1 or 4 (about 10^27 candidates). Aging evolution, population 50, sample 12.
Latency: inference, bfloat16, batch 128 per device, as the reference's TPU benchmark.

Cost: 300 candidates x 5 ImageNet epochs at about B0's FLOPs = 1,500 B0 epochs, about 4.3 full
350-epoch B0 trainings (cached duplicates cost nothing). Several workers (--storage) share the
budget; on a slice, every host trains each candidate together.
"""

from experiments.search import imagenet_common


def get_config():
    config = imagenet_common.get_config("imagenet_tpu")
    config.proxy.batch_size = 4096
    return config
