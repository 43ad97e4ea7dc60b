"""What the ImageNet searches share: the paper's space on EfficientNet-B0's skeleton, the proxy, the budget."""

import ml_collections

from effnetx_jax import recipe
from effnetx_jax.studies.search.space import default_choices


def get_config(name: str) -> ml_collections.ConfigDict:
    base = recipe.get_config("efficientnet-b0")
    config = ml_collections.ConfigDict()
    config.name = name
    config.seed = 0
    config.model = ml_collections.ConfigDict(base.model.to_dict())  # B0's 7 stages at 224 px
    config.space = default_choices()
    config.references = ("efficientnet-b0", "efficientnet-x-b0")
    # Real et al.'s ratio of sample to population (25 of 100), at a smaller population for a 300-trial budget.
    config.algorithm = ml_collections.ConfigDict({"kind": "aging", "population": 50, "sample_size": 12})
    config.budget = ml_collections.ConfigDict({"max_trials": 300, "max_hours": 0.0})
    config.objective = ml_collections.ConfigDict({"metric": "eval/top1", "exponent": -0.07, "target_latency_ms": 0.0})
    config.latency = ml_collections.ConfigDict(
        {
            "source": "measured",
            "batch": 128,
            "dtype": "bfloat16",
            "mode": "infer",
            "steps": 50,
            "warmup": 10,
            "peak_tflops": 0.0,
            "memory_gbs": 0.0,
        }
    )
    # Proxy: MnasNet's 5 ImageNet epochs, with the official recipe (its schedule simply stops early).
    config.proxy = ml_collections.ConfigDict(base.to_dict(preserve_field_references=True))
    config.proxy.total_epochs = 5.0
    config.proxy.eval_every_epochs = 5.0
    config.proxy.checkpoint_every_steps = 2000
    config.final = base  # best.py: the full 350-epoch recipe
    return config
