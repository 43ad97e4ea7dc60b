"""Architecture search at laptop scale: aging evolution on the bundled digits, on this CPU.

  effnetx-search --config=experiments/search/digits_cpu.py --workdir=runs/search-digits

The skeleton is the quickstart model (EfficientNet-X-B0's strides and filters at width 0.5, depth
0.5, 32 px); every candidate keeps that scale and is proxy-trained for 5 epochs of digits. The two
reference models, EfficientNet-B0 and EfficientNet-X-B0 at the same scale, are trained first with the
same proxy recipe. Latency: measured here, inference, batch 64, float32. Budget: 36 candidates or 27
minutes, whichever comes first (under 30 minutes on 2 CPU cores). The results of one run are committed
in experiments/search/results/digits_cpu/ and summarised in the README: a proxy-scale result.

`digits_cpu.py:test` is the same search shrunk to seconds per candidate for the test suite: a two-stage
skeleton (so no reference models), population 2, 3 candidates, 2 proxy steps, a 1-step latency.
"""

import ml_collections

from configs import quickstart
from effnetx_jax.studies.search.space import default_choices

# The skeleton of `:test`: two stages (s2d + depthwise, then fused), compiled in seconds.
TEST_BLOCKS = ("r1_k3_s22_e1_i32_o16_se0.25_d1_a0", "r1_k3_s22_e4_i16_o24_f1_a1")


def get_config(arg: str = ""):
    if arg not in ("", "test"):
        raise ValueError(f"config argument {arg!r}: expected none or 'test'")
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
    if arg == "test":
        config.model.update(blocks=TEST_BLOCKS, width=0.25, depth=1.0, head_filters=64)
        config.references = ()  # the references have 7 stages; this skeleton has 2
        config.objective.target_latency_ms = 1.0
        config.algorithm.update(population=2, sample_size=2)
        config.budget.update(max_trials=3, max_hours=0.0)
        config.latency.update(batch=2, steps=1, warmup=0)
        for trainer in (config.proxy, config.final):
            trainer.update(total_epochs=0.0, total_steps=2, batch_size=16, eval_every_epochs=0.0, eval_every_steps=2)
            trainer.update(checkpoint_every_epochs=0.0, checkpoint_every_steps=2, log_every_steps=1)
    return config
