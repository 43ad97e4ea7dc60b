"""Measured speed of a model on this device: `benchmark(cfg, batch=..., mode="infer"|"train")`.

Compiles ahead of time (reported separately), runs warm-up steps, then times each step with
`block_until_ready` and reports the median and minimum step time and images/s at the median.
The weights are random values of the model's shapes and scales (`random_variables`): step times do not
depend on them, and drawing them with the model's own initialisers would compile a program that takes
longer to build than the one being measured.
`train` times forward + backward + BatchNorm statistics update + an SGD parameter update; the
optimizer of the training recipe adds only elementwise work on the parameters.
`memory_bytes` is XLA's estimate of the compiled step's memory on one device (`effnetx_jax.models.memory`);
`train_step_memory` gives it from shapes alone, compiling without running anything.
`effnetx-bench` prints these numbers; LACS and the search measure latency with them.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effnetx_jax.errors import UserError
from effnetx_jax.models import REMAT_MODES, architecture, costs, create_model
from effnetx_jax.models.memory import MemoryEstimate


def _infer_step(model):
    def step(variables, images):
        return model.apply(variables, images, train=False)

    return step


def _train_step(model):
    def step(variables, images, labels, rng):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                images,
                train=True,
                rngs={"dropout": rng},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        params = jax.tree.map(lambda p, g: p - 1e-3 * g, variables["params"], grads)
        return {"params": params, "batch_stats": updates["batch_stats"]}, loss

    return step


def _jitted(model, mode: str):
    if mode == "infer":
        return jax.jit(_infer_step(model))
    # Donate the state so the step updates in place, as a training loop would.
    return jax.jit(_train_step(model), donate_argnums=0)


def _variable_shapes(model, image):
    return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), image)


def train_step_memory(cfg, *, batch: int, remat: str = "none", resolution=None) -> MemoryEstimate:
    """XLA's per-device memory estimate of `benchmark`'s train step, compiled from shapes alone: nothing
    is initialised or run, so it works for batches and models that do not fit this machine's memory."""
    model = create_model(cfg, remat=remat)
    resolution = resolution or cfg.resolution
    variables = _variable_shapes(model, jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32))
    images = jax.ShapeDtypeStruct((batch, resolution, resolution, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    rng = jax.eval_shape(lambda: jax.random.key(1))
    return MemoryEstimate.of(_jitted(model, "train").lower(variables, images, labels, rng).compile())


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


def benchmark(
    cfg, *, batch: int, mode: str = "infer", steps: int = 20, warmup: int = 3, resolution=None, remat: str = "none"
) -> dict:
    """Times one model config; returns the numbers `main` prints. `remat` as the trainer's `config.remat`."""
    if mode not in ("infer", "train"):
        raise UserError(f"mode must be 'infer' or 'train', got {mode!r}")
    if batch < 1 or steps < 1 or warmup < 0:
        raise UserError(f"batch and steps must be >= 1 and warmup >= 0, got {batch}, {steps}, {warmup}")
    if remat not in REMAT_MODES:
        raise UserError(f"remat must be one of {', '.join(REMAT_MODES)}, got {remat!r}")
    model = create_model(cfg, remat=remat)
    resolution = resolution or cfg.resolution
    images = jax.random.normal(jax.random.key(0), (batch, resolution, resolution, 3), jnp.float32)
    variables = jax.device_put(random_variables(model, images[:1]))
    if mode == "infer":
        args = (variables, images)
    else:
        args = (variables, images, jnp.zeros((batch,), jnp.int32), jax.random.key(1))

    start = time.perf_counter()
    compiled = _jitted(model, mode).lower(*args).compile()
    compile_s = time.perf_counter() - start

    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if mode == "train":
            args = (out[0], *args[1:])
    median = statistics.median(times)
    device = jax.devices()[0]
    return {
        "name": cfg.name,
        "mode": mode,
        "batch": batch,
        "resolution": resolution,
        "dtype": cfg.dtype,
        "depthwise_impl": cfg.depthwise_impl,
        "device": f"{device.platform}:{device.device_kind}",
        "compile_s": round(compile_s, 3),
        "steps": steps,
        "median_ms": round(median * 1e3, 2),
        "min_ms": round(min(times) * 1e3, 2),
        "images_per_s": round(batch / median, 1),
        "gflops": round(2 * costs.total_macs(architecture(cfg), resolution) / 1e9, 4),
        "remat": remat,
        "memory_bytes": MemoryEstimate.of(compiled).total_bytes,
    }
