"""effnetx_jax: EfficientNet-X in JAX/Flax.

`model, variables = effnetx_jax.load(DIR)` reads converted or trained weights (see `effnetx_jax.weights`).
Imported lazily: the package itself loads without JAX (Grain's worker processes import it).
"""

__all__ = ["load"]


def __getattr__(name):
    if name == "load":
        from effnetx_jax.weights import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
