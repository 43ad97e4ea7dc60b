"""Measured speed of a model on this device: `benchmark(cfg, batch=..., mode="infer"|"train")`.

Compiles ahead of time (reported separately), runs warm-up steps, then times each step with
`block_until_ready` and reports the median and minimum step time and images/s at the median.
The weights are random values of the model's shapes and scales (`random_variables`): step times do not
depend on them, and drawing them with the model's own initialisers would compile a program that takes
longer to build than the one being measured.
`train` times the trainer's own step (`train.steps.make_train_step` with the official recipe: uint8
images normalised on the device, label smoothing, weight decay, TF RMSprop, EMA of the weights and
BatchNorm statistics, the non-finite guard), on a batch of every example counted.
`CompiledStep` is the compiled step itself, for a caller that times it in rounds beside another program
(`benchmarks/train_vs_timm.py`). `memory_bytes` is XLA's estimate of the compiled step's memory on one
device (`effnetx_jax.models.memory`); `train_step_memory` gives it from shapes alone, compiling without
running anything.
`effnetx-bench` prints these numbers; LACS and the search measure latency with them.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from effnetx_jax import cpu_codegen, host_memory
from effnetx_jax.errors import UserError
from effnetx_jax.models import REMAT_MODES, architecture, costs, create_model, layers
from effnetx_jax.models.memory import MemoryEstimate

# ImageNet's training images: the recipe's learning-rate schedule needs an epoch length; step times do not.
IMAGENET_TRAIN_IMAGES = 1_281_167


def _infer_step(model):
    def step(variables, images):
        return model.apply(variables, images, train=False)

    return step


def _variable_shapes(model, image):
    return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), image)


def _recipe_config(cfg, batch: int, remat: str):
    """The official recipe's training config around `cfg`, as the trainer would run it at `batch`."""
    from effnetx_jax import recipe  # the trainer's recipe builds on this package: imported when needed

    config = recipe.get_config()
    config.model = cfg
    config.update(batch_size=batch, remat=remat)
    return config


def _trainer_step(config):
    """The trainer's own jitted step (`train.steps.make_train_step`: the recipe's RMSprop, learning-rate
    schedule, label smoothing, weight decay, EMA and non-finite guard), its state donated as the loop does."""
    from effnetx_jax.train import optim, steps

    steps_per_epoch = IMAGENET_TRAIN_IMAGES / config.batch_size
    tx, schedule = optim.create_optimizer(config, steps_per_epoch, int(config.total_epochs * steps_per_epoch))
    model = create_model(config.model, remat=config.remat)
    step = jax.jit(
        steps.make_train_step(model, tx, schedule, config),
        donate_argnums=0,
        compiler_options=cpu_codegen.compiler_options(),
    )
    return model, tx, step


def _train_state(tx, variables):
    """A train state around `variables` (arrays or shapes): fresh optimizer slots, EMA copies of the weights."""
    from effnetx_jax.train.state import TrainState

    def build(variables):
        params, batch_stats = variables["params"], variables["batch_stats"]
        copy = functools.partial(jax.tree.map, jnp.copy)  # distinct buffers: the whole state is donated
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            ema_params=copy(params),
            ema_batch_stats=copy(batch_stats),
            nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    return jax.eval_shape(build, variables) if _is_abstract(variables) else jax.jit(build)(variables)


def _is_abstract(tree) -> bool:
    return all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(tree))


def _train_batch(batch: int, resolution: int) -> dict:
    """A batch as the input pipeline makes it (uint8 images), every example counted."""
    images = np.random.default_rng(0).integers(0, 256, (batch, resolution, resolution, 3), np.uint8)
    return {
        "image": images,
        "label": np.arange(batch, dtype=np.int32) % 10,
        "mask": np.ones(batch, np.float32),
        "skipped": np.zeros(batch, np.float32),
    }


def train_step_memory(cfg, *, batch: int, remat: str = "none", resolution=None) -> MemoryEstimate:
    """XLA's per-device memory estimate of `benchmark`'s train step, compiled from shapes alone: nothing
    is initialised or run, so it works for batches and models that do not fit this machine's memory."""
    resolution = resolution or cfg.resolution
    model, tx, step = _trainer_step(_recipe_config(cfg, batch, remat))
    variables = _variable_shapes(model, jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32))
    one = _train_batch(1, resolution)
    batch_shapes = {key: jax.ShapeDtypeStruct((batch, *value.shape[1:]), value.dtype) for key, value in one.items()}
    rng = jax.eval_shape(lambda: jax.random.key(1))
    return MemoryEstimate.of(step.lower(_train_state(tx, variables), batch_shapes, rng).compile())


def random_variables(model, image, seed: int = 0) -> dict:
    """Variables of `model` for a batch like `image`, drawn on the host without compiling its initialisers.

    Kernels are normal with variance 1/fan-in (fan-in: every axis but the last), BatchNorm scales and
    variances 1, biases and means 0: the magnitudes of a freshly initialised model, so no step runs on
    denormals or non-finite values. (Compiling the model's own initialisers takes 17 s for
    EfficientNet-B1 on a 2-core CPU in XLA's quick mode, four times its inference step.)
    """
    shapes = _variable_shapes(model, image)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, fan_in**-0.5, leaf.shape).astype(leaf.dtype)
        fill = 1.0 if name in ("scale", "var") else 0.0
        return np.full(leaf.shape, fill, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _check_step_counts(steps: int, warmup: int) -> None:
    if steps < 1 or warmup < 0:
        raise UserError(f"steps must be >= 1 and warmup >= 0, got {steps}, {warmup}")


class CompiledStep:
    """One model's inference or train step compiled for this device, with its arguments, to time repeatedly
    (a train step carries its updated state to the next call)."""

    def __init__(self, cfg, *, batch: int, mode: str = "infer", resolution=None, remat: str = "none"):
        if mode not in ("infer", "train"):
            raise UserError(f"mode must be 'infer' or 'train', got {mode!r}")
        if batch < 1:
            raise UserError(f"batch must be >= 1, got {batch}")
        if remat not in REMAT_MODES:
            raise UserError(f"remat must be one of {', '.join(REMAT_MODES)}, got {remat!r}")
        self.mode, self.resolution = mode, resolution or cfg.resolution
        image = jnp.zeros((1, self.resolution, self.resolution, 3), jnp.float32)
        if mode == "infer":
            model = create_model(cfg)
            step = jax.jit(_infer_step(model), compiler_options=cpu_codegen.compiler_options())
            images = jax.random.normal(jax.random.key(0), (batch, *image.shape[1:]), jnp.float32)
            self.args = (jax.device_put(random_variables(model, image)), images)
        else:
            model, tx, step = _trainer_step(_recipe_config(cfg, batch, remat))
            variables = jax.device_put(random_variables(model, image))
            batch_arrays = jax.device_put(_train_batch(batch, self.resolution))
            self.args = (_train_state(tx, variables), batch_arrays, jax.random.key(1))
        start = time.perf_counter()
        self.compiled = step.lower(*self.args).compile()
        self.compile_s = time.perf_counter() - start

    def times(self, steps: int, warmup: int = 0) -> list[float]:
        """Seconds of each of `steps` calls after `warmup` untimed ones, each waited for."""
        _check_step_counts(steps, warmup)
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            out = jax.block_until_ready(self.compiled(*self.args))
            if i >= warmup:
                times.append(time.perf_counter() - start)
            if self.mode == "train":
                self.args = (out[0], *self.args[1:])
        return times


def benchmark(
    cfg, *, batch: int, mode: str = "infer", steps: int = 20, warmup: int = 3, resolution=None, remat: str = "none"
) -> dict:
    """Times one model config; returns the numbers `main` prints. `remat` as the trainer's `config.remat`."""
    _check_step_counts(steps, warmup)  # before compiling
    step = CompiledStep(cfg, batch=batch, mode=mode, resolution=resolution, remat=remat)
    times = step.times(steps, warmup)
    median = statistics.median(times)
    device = jax.devices()[0]
    return {
        "name": cfg.name,
        "mode": mode,
        "batch": batch,
        "resolution": step.resolution,
        "dtype": cfg.dtype,
        # What 'auto' resolved to on this backend: the figure is of that implementation.
        "depthwise_impl": layers.resolve_depthwise_impl(cfg.depthwise_impl),
        "batch_norm_impl": layers.resolve_batch_norm_impl(cfg.batch_norm_impl),
        "compiler_options": cpu_codegen.compiler_options(),
        "host_allocator": host_memory.allocator(),
        "device": f"{device.platform}:{device.device_kind}",
        "compile_s": round(step.compile_s, 3),
        "steps": steps,
        "median_ms": round(median * 1e3, 2),
        "min_ms": round(min(times) * 1e3, 2),
        "images_per_s": round(batch / median, 1),
        "gflops": round(2 * costs.total_macs(architecture(cfg), step.resolution) / 1e9, 4),
        "remat": remat,
        "memory_bytes": MemoryEstimate.of(step.compiled).total_bytes,
    }
