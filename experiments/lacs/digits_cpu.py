"""LACS at laptop scale: scale the quickstart's EfficientNet-X on the bundled digits, on this CPU.

  effnetx-lacs --config=experiments/lacs/digits_cpu.py --workdir=runs/lacs-digits

11 of the 72 grid points meet EfficientNet's FLOPs rule (alpha * beta^2 * gamma^2 = 2 +- 0.1); each
is proxy-trained for 6 epochs of digits (~1 minute on 2 CPU cores) after its latency is measured
(inference, batch 64, float32). Expected cost: under 20 minutes on 2 cores. The results of one run are
committed in experiments/lacs/results/digits_cpu/ and summarised in the README: a proxy-scale result,
where accuracy differences between points are within run-to-run noise.

`digits_cpu.py:test` is the same experiment shrunk to seconds per point for the test suite: a two-stage
base model, 2 proxy steps, a 1-step latency measurement.
"""

import ml_collections

from configs import quickstart

# The base model of `:test`: two stages (s2d + depthwise, then fused), compiled in seconds.
TEST_BLOCKS = ("r1_k3_s22_e1_i32_o16_se0.25_d1_a0", "r1_k3_s22_e4_i16_o24_f1_a1")


def get_config(arg: str = ""):
    if arg not in ("", "test"):
        raise ValueError(f"config argument {arg!r}: expected none or 'test'")
    config = ml_collections.ConfigDict()
    config.name = "digits_cpu"
    config.seed = 0
    recipe = quickstart.get_config()
    config.model = recipe.model  # the base model: EfficientNet-X blocks, width 0.5, depth 0.5, 32 px
    config.grid = ml_collections.ConfigDict(
        {"alpha": (1.0, 1.2, 1.4, 1.6, 1.8, 2.0), "beta": (1.0, 1.1, 1.2), "gamma": (1.0, 1.1, 1.15, 1.2)}
    )
    config.constraint = ml_collections.ConfigDict({"kind": "flops", "target": 2.0, "tolerance": 0.1})
    config.objective = ml_collections.ConfigDict({"metric": "eval/top1", "exponent": -0.07, "target_latency_ms": 0.0})
    config.latency = ml_collections.ConfigDict(
        {"batch": 64, "dtype": "float32", "mode": "infer", "steps": 10, "warmup": 2}
    )

    config.proxy = quickstart.get_config()
    config.proxy.total_epochs = 6.0
    config.proxy.eval_every_epochs = 6.0
    config.proxy.checkpoint_every_epochs = 3.0

    config.family = ml_collections.ConfigDict(
        {
            "name_prefix": "efficientnet-x-lacs-digits",
            "names": ("b1", "b2", "b3", "b4", "b5", "b6", "b7"),
            # FLOPs about 2^phi x the base under the FLOPs rule.
            "phis": (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
            "dropout": (0.1, 0.15, 0.15, 0.2, 0.2, 0.25, 0.25),
            "se_coefficient": (),  # keep the base's
            "trainer": quickstart.get_config(),  # the quickstart recipe: 15 epochs of digits
        }
    )
    if arg == "test":
        config.model.update(blocks=TEST_BLOCKS, width=0.25, depth=1.0, head_filters=64)
        config.latency.update(batch=2, steps=1, warmup=0)
        for trainer in (config.proxy, config.family.trainer):
            trainer.update(total_epochs=0.0, total_steps=2, batch_size=16, eval_every_epochs=0.0, eval_every_steps=2)
            trainer.update(checkpoint_every_epochs=0.0, checkpoint_every_steps=2, log_every_steps=1)
    return config
