"""The bundled `digits` TFDS dataset (a package, as TFDS requires of builders); importing it registers it."""

from effnetx_jax.data.digits.digits import SPLIT_SIZES, Digits, split_indices

__all__ = ["SPLIT_SIZES", "Digits", "split_indices"]
