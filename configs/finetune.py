"""Fine-tunes pretrained EfficientNet-B0 weights on another dataset: a new classifier, every layer trained.

  effnetx-convert tf efficientnet-b0/model.ckpt --model=efficientnet-b0 --out=weights/efficientnet-b0
  python train.py --config=configs/finetune.py --config.init_from=weights/efficientnet-b0 --workdir=runs/finetune

As written it fine-tunes on the bundled digits dataset on a laptop CPU (64 px, float32). For another TFDS
dataset set `--config.dataset=cifar10 --config.eval_split=test --config.model.num_classes=10`, and on an
accelerator `--config.model.resolution=224 --config.model.dtype=bfloat16` (the weights' resolution).
`config.init_from` also takes a train.py workdir (its EMA weights). Every variable is loaded except those
matching `config.init_exclude` (the 1000-class classifier); the optimizer starts fresh (docs/weights.md).

Cost and result (measured on a 2-core CPU with the two commands above): 225 steps in 2 min 47 s, test
top-1 92.5% (EMA 92.8%). The weights were the conversion of the official graph's *random* initialisation
with randomised BatchNorm statistics, since no published file was available: this measures the pipeline
and its cost, not transfer. The same config from the trainer's own initialisation (no `init_from`)
reaches 96.9% (EMA 96.7%) in 2 min 59 s; with published ImageNet weights fine-tuning should start far
above both.
"""

from effnetx_jax import recipe


def get_config():
    config = recipe.get_config("efficientnet-b0")
    config.init_exclude = "classifier"
    config.model.update(resolution=64, num_classes=10, dtype="float32", bn_momentum=0.9)
    recipe.use_digits(config)
    config.batch_size = 64
    config.eval_batch_size = 128

    # SGD with momentum and a cosine schedule: the usual fine-tuning recipe (big_vision, timm).
    config.optimizer = "momentum"
    config.learning_rate = 0.04  # per 256 images: 0.01 at batch 64
    config.lr_schedule = "cosine"
    config.warmup_epochs = 0.5
    config.total_epochs = 10.0
    config.ema_decay = 0.99

    config.log_every_steps = 20
    config.eval_every_steps = 0
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 0
    config.checkpoint_every_epochs = 5.0
    config.keep_checkpoints = 2
    return config
