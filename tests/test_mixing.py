"""Mixup and CutMix on the device (`effnetx_jax.train.mixing`): weights, boxes, targets, the switch."""

import jax
import numpy as np

from effnetx_jax.train.mixing import mix_batch


def key(seed):
    return jax.random.key(seed)


_mix_batch = jax.jit(mix_batch, static_argnums=(2, 3), static_argnames=("mixup_alpha", "cutmix_alpha"))


def _mix(images, labels, rng_key, **alphas):
    """One compilation per choice of alphas, whatever the seed."""
    mixed, targets = _mix_batch(images, labels, NUM_CLASSES, SMOOTHING, rng_key, **alphas)
    return np.asarray(mixed), np.asarray(targets)


def gradient_image(height, width):
    ys, xs = np.mgrid[:height, :width]
    return np.stack([xs * 255 // (width - 1), ys * 255 // (height - 1), (xs + ys) * 255 // (height + width - 2)], -1)


NUM_CLASSES = 10
SMOOTHING = 0.1


def batch(size=6):
    """Distinct labels, and images whose every pixel differs between any two examples."""
    images = np.stack([gradient_image(16, 16).astype(np.float32) + 1000 * i for i in range(size)])
    labels = np.arange(size) * 3 % NUM_CLASSES
    return images, labels


def smoothed_one_hot(labels):
    return np.eye(NUM_CLASSES)[labels] * (1 - SMOOTHING) + SMOOTHING / NUM_CLASSES


def weights_from_targets(targets, labels):
    """The weight of each example's own label, undoing the smoothing (labels differ from partners')."""
    own = targets[np.arange(len(labels)), labels]
    return (own - SMOOTHING / NUM_CLASSES) / (1 - SMOOTHING)


def test_mix_batch_without_alphas_returns_the_images_and_smoothed_one_hot():
    images, labels = batch()
    mixed, targets = _mix(images, labels, key(0))
    np.testing.assert_array_equal(mixed, images)
    assert targets.dtype == np.float32 and targets.shape == (len(labels), NUM_CLASSES)
    np.testing.assert_allclose(targets, smoothed_one_hot(labels), rtol=1e-6)


def test_mixup_blends_each_example_with_the_reversed_batch_using_its_own_weight():
    images, labels = batch()
    mixed, targets = _mix(images, labels, key(3), mixup_alpha=0.4)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    weight = weights_from_targets(targets, labels)
    assert (weight >= 0.5 - 1e-6).all() and (weight <= 1 + 1e-6).all()
    assert len(np.unique(weight.round(5))) > 1  # per example, not per batch
    w = weight[:, None, None, None]
    np.testing.assert_allclose(mixed, w * images + (1 - w) * images[::-1], rtol=1e-4)
    expected = weight[:, None] * smoothed_one_hot(labels) + (1 - weight[:, None]) * smoothed_one_hot(labels[::-1])
    np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-6)


def test_cutmix_pastes_one_box_whose_area_matches_the_target_weights():
    images, labels = batch()
    for seed in range(10):
        mixed, targets = _mix(images, labels, key(seed), cutmix_alpha=1.0)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
        pasted = mixed != images
        assert (pasted == pasted[:1]).all()  # the same box for every example
        box = pasted[0, ..., 0]
        rows, cols = np.nonzero(box)
        if box.any():
            assert box.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a rectangle
        np.testing.assert_array_equal(mixed[pasted], images[::-1][pasted])
        weight = weights_from_targets(targets, labels)
        np.testing.assert_allclose(weight, 1 - box.mean(), atol=1e-6)


def test_mix_batch_switches_between_mixup_and_cutmix_when_both_are_enabled():
    images, labels = batch()
    kinds = set()
    for seed in range(20):
        mixed, _ = _mix(images, labels, key(seed), mixup_alpha=0.2, cutmix_alpha=1.0)
        # CutMix copies whole pixels from the partner; mixup changes every pixel (its weights are < 1).
        if ((mixed == images) | (mixed == images[::-1])).all():
            kinds.add("cutmix")
        elif not (mixed == images).any():
            kinds.add("mixup")
    assert kinds == {"cutmix", "mixup"}


def test_mix_batch_is_deterministic_per_seed():
    images, labels = batch()
    runs = [_mix(images, labels, key(5), mixup_alpha=0.2, cutmix_alpha=1.0) for _ in "ab"]
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
