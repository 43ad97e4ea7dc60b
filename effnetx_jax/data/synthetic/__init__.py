"""The `synthetic_imagenet` TFDS dataset (a package, as TFDS requires of builders); importing it registers it."""

from effnetx_jax.data.synthetic.synthetic_imagenet import SyntheticImagenet, random_jpeg, write_image_folder

__all__ = ["SyntheticImagenet", "random_jpeg", "write_image_folder"]
