"""Architecture search at laptop scale: aging evolution on the bundled digits, on this CPU.

  python -m effnetx_jax.search --config=experiments/search/digits_cpu.py --workdir=runs/search-digits

The skeleton is the quickstart model (EfficientNet-X-B0's strides and filters at width 0.5, depth
0.5, 32 px); every candidate keeps that scale and is proxy-trained for 5 epochs of digits. The two
reference models, EfficientNet-B0 and EfficientNet-X-B0 at the same scale, are trained first with the
same proxy recipe. Latency: measured here, inference, batch 64, float32. Budget: 36 candidates or 27
minutes, whichever comes first (under 30 minutes on 2 CPU cores). The results of one run are committed
in experiments/search/results/digits_cpu/ and summarised in the README: a proxy-scale result.
"""

import ml_collections

from configs import quickstart
from effnetx_jax.search.space import default_choices


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "digits_cpu"
    config.seed = 0
    config.model = quickstart.get_config().model  # the skeleton
    config.space = default_choices()
    config.references = ("efficientnet-b0", "efficientnet-x-b0")
    config.algorithm = ml_collections.ConfigDict({"kind": "aging", "population": 12, "sample_size": 4})
    config.budget = ml_collections.ConfigDict({"max_trials": 36, "max_hours": 0.45})
    config.objective = ml_collections.ConfigDict({"metric": "eval/top1", "exponent": -0.07, "target_latency_ms": 0.0})
    config.latency = ml_collections.ConfigDict(
        {
            "source": "measured",
            "batch": 64,
            "dtype": "float32",
            "mode": "infer",
            "steps": 10,
            "warmup": 2,
            # Used by source='analytic' only: the roofline of the target hardware.
            "peak_tflops": 0.0,
            "memory_gbs": 0.0,
        }
    )

    config.proxy = quickstart.get_config()
    config.proxy.total_epochs = 5.0
    config.proxy.eval_every_epochs = 5.0
    config.proxy.checkpoint_every_epochs = 5.0

    config.final = quickstart.get_config()  # best.py trains with the quickstart recipe (15 epochs)
    return config
