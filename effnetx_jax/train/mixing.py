"""Mixup and CutMix of the global batch, on the device inside the train step.

Mixing partners are the global batch reversed, so a run mixes the same pairs whatever the number of
hosts (mixing each host's slice on that host would pair different examples with 1 or 8 hosts), and
the draws come from the step's key, so a resumed run mixes as the uninterrupted one would.

- Mixup (`config.data.mixup_alpha`), as the reference's `imagenet_input.py`: each example gets its
  own weight lambda ~ Beta(alpha, alpha), folded to max(lambda, 1 - lambda) >= 1/2 so that it keeps
  the larger share.
- CutMix (`config.data.cutmix_alpha`), as timm (the reference has none): one box for the batch, of
  sides sqrt(1 - lambda) times the image's, centred uniformly and cut at the border, pasted from the
  partner; lambda becomes the unpasted fraction, so that the targets match the pixels.
- Both > 0: each batch gets one of the two with probability 1/2 (timm's default switch_prob).
Targets are the smoothed one-hot labels mixed with the image weights; smoothing is affine and the
weights sum to 1, so this equals the reference's mixing of one-hot labels smoothed in the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _mix(first, second, weight):
    weight = weight.reshape(-1, *([1] * (first.ndim - 1)))
    return first * weight + second * (1.0 - weight)


def mixup(images, targets, alpha: float, key):
    weight = jax.random.beta(key, alpha, alpha, (images.shape[0],))
    weight = jnp.maximum(weight, 1.0 - weight)
    return _mix(images, images[::-1], weight), _mix(targets, targets[::-1], weight)


def cutmix(images, targets, alpha: float, key):
    beta_key, row_key, col_key = jax.random.split(key, 3)
    height, width = images.shape[1:3]
    cut_ratio = jnp.sqrt(1.0 - jax.random.beta(beta_key, alpha, alpha))
    half_height = (height * cut_ratio).astype(jnp.int32) // 2
    half_width = (width * cut_ratio).astype(jnp.int32) // 2
    centre_y, centre_x = jax.random.randint(row_key, (), 0, height), jax.random.randint(col_key, (), 0, width)
    top, bottom = jnp.maximum(centre_y - half_height, 0), jnp.minimum(centre_y + half_height, height)
    left, right = jnp.maximum(centre_x - half_width, 0), jnp.minimum(centre_x + half_width, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    mixed = jnp.where(box[None, :, :, None], images[::-1], images)
    unpasted = 1.0 - box.mean()
    return mixed, _mix(targets, targets[::-1], jnp.full((images.shape[0],), unpasted))


def mix_batch(images, labels, num_classes: int, label_smoothing: float, key, mixup_alpha=0.0, cutmix_alpha=0.0):
    """float [B, H, W, C] images and int [B] labels -> mixed images and float32 [B, num_classes] targets."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    choice_key, mixup_key, cutmix_key = jax.random.split(key, 3)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        return jax.lax.cond(
            jax.random.bernoulli(choice_key),
            lambda: cutmix(images, targets, cutmix_alpha, cutmix_key),
            lambda: mixup(images, targets, mixup_alpha, mixup_key),
        )
    if cutmix_alpha > 0:
        return cutmix(images, targets, cutmix_alpha, cutmix_key)
    if mixup_alpha > 0:
        return mixup(images, targets, mixup_alpha, mixup_key)
    return images, targets
