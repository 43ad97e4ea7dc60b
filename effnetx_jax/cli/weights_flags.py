"""The flags of the tools that read weights (eval, predict, export): which directory, which weights, which step.

Only absl is imported here (the entry-point rule in `effnetx_jax.cli`).
"""

from absl import flags

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Weights directory: a train.py workdir or a converted checkpoint (effnetx-convert)."
)
WEIGHTS = flags.DEFINE_enum(
    "weights", "ema", ["ema", "raw"], "For a train.py workdir: the moving average (ema) or the trained weights."
)
STEP = flags.DEFINE_integer("step", None, "For a train.py workdir: the checkpoint step; default: the latest.")
flags.mark_flag_as_required("workdir")
