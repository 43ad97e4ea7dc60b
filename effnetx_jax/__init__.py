"""effnetx_jax: EfficientNet-X in JAX/Flax."""
