"""What the ImageNet LACS experiments share: grid, constraint, reward, proxy schedule and family table."""

import ml_collections


def get_config(name: str, recipe: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A LACS experiment scaling `recipe.model` (EfficientNet-X-B0), trained with `recipe`."""
    config = ml_collections.ConfigDict()
    config.name = name
    config.seed = 0
    config.model = ml_collections.ConfigDict(recipe.model.to_dict())
    config.grid = ml_collections.ConfigDict(
        {
            "alpha": (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0),
            "beta": (1.0, 1.05, 1.1, 1.15, 1.2),
            "gamma": (1.0, 1.05, 1.1, 1.15, 1.2),
        }
    )
    config.constraint = ml_collections.ConfigDict({"kind": "flops", "target": 2.0, "tolerance": 0.05})
    config.objective = ml_collections.ConfigDict({"metric": "eval/top1", "exponent": -0.07, "target_latency_ms": 0.0})
    config.latency = ml_collections.ConfigDict(
        {"batch": 128, "dtype": "bfloat16", "mode": "infer", "steps": 50, "warmup": 10}
    )
    # Proxy: the official recipe for 30 epochs (the LR schedule is per epoch, so it simply stops early).
    config.proxy = ml_collections.ConfigDict(recipe.to_dict(preserve_field_references=True))
    config.proxy.total_epochs = 30.0
    config.proxy.eval_every_epochs = 30.0
    config.proxy.checkpoint_every_steps = 2000
    config.family = ml_collections.ConfigDict(
        {
            "name_prefix": f"efficientnet-x-lacs-{name.split('_')[-1]}",
            "names": ("b1", "b2", "b3", "b4", "b5", "b6", "b7"),
            "phis": (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
            # The reference's dropout and SE coefficients for B1..B7 (reference §1.5).
            "dropout": (0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5),
            "se_coefficient": (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
            "trainer": recipe,  # the full 350-epoch recipe
        }
    )
    return config
