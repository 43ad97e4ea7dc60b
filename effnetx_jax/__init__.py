"""effnetx_jax: EfficientNet-X in JAX/Flax.

- `effnetx_jax.models`: the model family (`create_model`, `model_config`, block strings, costs, summary, speed).
- `effnetx_jax.data`: datasets through TFDS and Grain, preprocessing and augmentation.
- `effnetx_jax.train`: the trainer (`train_and_evaluate`), checkpoints, sharding, multi-process start-up.
- `effnetx_jax.recipe`: the official training recipe every config starts from.
- `effnetx_jax.studies`: studies shared by workers: LACS (`studies.lacs`), the architecture search (`studies.search`).
- `effnetx_jax.weights`: weights on disk: `load`, import from TF and timm (`weights.convert`), `predict`, `export`.
- `effnetx_jax.cli`: the command-line tools (`effnetx-train`, `effnetx-summary`, ...).

`model, variables = effnetx_jax.load(DIR)` reads converted or trained weights.
"""

# Lazy, so that importing the package costs no JAX: Grain's worker processes and `--help` import it.
_PUBLIC = {
    "load": "effnetx_jax.weights",
    "create_model": "effnetx_jax.models",
    "model_config": "effnetx_jax.models",
    "train_and_evaluate": "effnetx_jax.train",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
