"""Training: `train_and_evaluate(config, workdir)` is the one public way to train a model, and
`evaluate_checkpoint(config, workdir)` evaluates a checkpoint it wrote.

Imported lazily so that `effnetx_jax.train.optim` and friends load without the data pipeline.
"""

__all__ = ["NonFiniteLossError", "evaluate_checkpoint", "format_metrics", "train_and_evaluate"]


def __getattr__(name):
    if name in ("NonFiniteLossError", "train_and_evaluate"):
        from effnetx_jax.train import loop

        return getattr(loop, name)
    if name == "evaluate_checkpoint":
        from effnetx_jax.train.evaluation import evaluate_checkpoint

        return evaluate_checkpoint
    if name == "format_metrics":
        from effnetx_jax.train.reporting import format_metrics

        return format_metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
