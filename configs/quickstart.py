"""Quickstart: a small EfficientNet-X on the bundled digits dataset at 32 px, on a laptop CPU.

  python train.py --config=configs/quickstart.py --workdir=runs/quick      # or: effnetx-train ...

The digits dataset (1,797 real 8x8 images from scikit-learn, no download) is built into the TFDS
data dir on first use.

Cost and result (measured; the README's quickstart shows the same numbers): from scratch on a 2-core
CPU machine (Intel Xeon, AVX-512) on 7 Dec 2026 (fresh TFDS data dir, so including the dataset build,
imports and compilation), seed 0: test top-1 99.16% (EMA weights 99.16%) in 57 s of wall time for the
training command, at 1,364-1,404 training images/s (107-109 s with EFFNETX_ALLOCATOR=glibc). On an AMD
EPYC on 3 Dec, before mimalloc, seeds 0, 1, 2 gave 99.44%, 98.61%, 98.33% in 87-94 s. Before the input
pipeline took the reference's whole-pixel crop rule, the same command gave 99.16-99.72%.
"""

from effnetx_jax import recipe


def get_config():
    config = recipe.get_config("efficientnet-x-b0")
    # Same block types as EfficientNet-X-B0 (s2d, fused, depthwise; ReLU and swish), reduced width and
    # depth, 32 px input: 16x16 after the stem, 8x8 in the s2d stage, 1x1 at the end.
    config.model.update(
        name="efficientnet-x-quickstart",
        width=0.5,
        depth=0.5,
        resolution=32,
        num_classes=10,
        head_filters=256,
        dtype="float32",  # bfloat16 has no fast path on CPUs
        dropout=0.1,
        drop_path=0.1,
        # ~340 steps in all: running BN averages at the recipe's 0.99 would still lag the weights.
        bn_momentum=0.9,
    )
    recipe.use_digits(config)
    config.batch_size = 64
    config.eval_batch_size = 128

    config.total_epochs = 15.0
    config.learning_rate = 0.064  # per 256 images: 0.016 at batch 64
    config.lr_schedule = "cosine"
    config.warmup_epochs = 1.0
    config.weight_decay = 1e-5
    config.ema_decay = 0.99

    config.data.mean = (127.5, 127.5, 127.5)
    config.data.std = (127.5, 127.5, 127.5)

    config.log_every_steps = 20
    config.eval_every_steps = 0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 0
    config.checkpoint_every_epochs = 5.0
    config.keep_checkpoints = 2
    return config
