"""`python -m effnetx_jax.bench NAME --batch N --mode infer|train`: measured speed on this device.

`--family F` (repeatable) measures the members of a family (`--sizes 0-3` to limit them) and
`--plot FILE` draws their latency against FLOPs.

Compiles ahead of time (reported separately), runs warm-up steps, then times each step with
`block_until_ready` and reports the median and minimum step time and images/s at the median.
The weights are random values of the model's shapes and scales (`random_variables`): step times do not
depend on them, and drawing them with the model's own initialisers would compile a program that takes
longer to build than the one being measured.
`train` times forward + backward + BatchNorm statistics update + an SGD parameter update; the
optimizer of the training recipe adds only elementwise work on the parameters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effnetx_jax import cli, config_files
from effnetx_jax.errors import UserError
from effnetx_jax.models import FAMILIES, architecture, costs, create_model, family_members, model_config


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


def random_variables(model, image, seed: int = 0) -> dict:
    """Variables of `model` for a batch like `image`, drawn on the host without compiling its initialisers.

    Kernels are normal with variance 1/fan-in (fan-in: every axis but the last), BatchNorm scales and
    variances 1, biases and means 0: the magnitudes of a freshly initialised model, so no step runs on
    denormals or non-finite values. (Compiling the model's own initialisers takes 17 s for
    EfficientNet-B1 on a 2-core CPU in XLA's quick mode, four times its inference step.)
    """
    shapes = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), image)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, fan_in**-0.5, leaf.shape).astype(leaf.dtype)
        fill = 1.0 if name in ("scale", "var") else 0.0
        return np.full(leaf.shape, fill, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def benchmark(cfg, *, batch: int, mode: str = "infer", steps: int = 20, warmup: int = 3, resolution=None) -> dict:
    """Times one model config; returns the numbers `main` prints."""
    if mode not in ("infer", "train"):
        raise UserError(f"mode must be 'infer' or 'train', got {mode!r}")
    if batch < 1 or steps < 1 or warmup < 0:
        raise UserError(f"batch and steps must be >= 1 and warmup >= 0, got {batch}, {steps}, {warmup}")
    model = create_model(cfg)
    resolution = resolution or cfg.resolution
    images = jax.random.normal(jax.random.key(0), (batch, resolution, resolution, 3), jnp.float32)
    variables = jax.device_put(random_variables(model, images[:1]))
    if mode == "infer":
        fn = jax.jit(_infer_step(model))
        args = (variables, images)
    else:
        # Donate the state so the step updates in place, as a training loop would.
        fn = jax.jit(_train_step(model), donate_argnums=0)
        labels = jnp.zeros((batch,), jnp.int32)
        args = (variables, images, labels, jax.random.key(1))

    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
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
    }


def _sizes(text: str) -> list[int]:
    """'0-3' or '0,2,5': family member sizes."""
    try:
        if "-" in text:
            first, last = map(int, text.split("-"))
            sizes = list(range(first, last + 1))
        else:
            sizes = [int(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 0-3 or a list like 0,2,5, got {text!r}") from None
    if not sizes or any(not 0 <= size <= 7 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be within 0-7, got {text!r}")
    return sizes


def _requested(args, parser) -> list[tuple[str | None, object]]:
    """(family or None, model config) for every model the command line names."""
    if sum(map(bool, (args.names, args.config, args.family))) != 1:
        parser.error("give model NAMEs, --config or --family")
    if args.config:
        return [(None, config_files.model_section(config_files.load_config(args.config)))]
    if args.names:
        return [(None, model_config(name)) for name in args.names]
    return [
        (family, model_config(name))
        for family in args.family
        for name in family_members(family)
        if int(name.rsplit("-b", 1)[1]) in args.sizes
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effnetx_jax.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="registered models, e.g. efficientnet-x-b0")
    parser.add_argument("--config", help="a config file (path.py or path.py:arg) with a model section")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--depthwise", choices=("auto", "xla", "shifted"), default="auto", help="depthwise conv implementation"
    )
    parser.add_argument("--resolution", type=int, help="input size (default: the model's own)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="every member of a family (repeatable)")
    parser.add_argument("--sizes", type=_sizes, default=list(range(8)), help="family members, e.g. 0-3 (default 0-7)")
    parser.add_argument("--plot", help="with --family: write latency against FLOPs to this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    cli.add_traceback_argument(parser)
    args = parser.parse_args(argv)
    with cli.one_line_errors(args.traceback):
        return _run(args, parser)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    requested = _requested(args, parser)
    if args.plot and not args.family:
        parser.error("--plot needs --family")
    results = []
    for family, cfg in requested:
        cfg.dtype, cfg.depthwise_impl = args.dtype, args.depthwise
        result = benchmark(
            cfg, batch=args.batch, mode=args.mode, steps=args.steps, warmup=args.warmup, resolution=args.resolution
        )
        results.append({"family": family, **result})
        if args.json:
            print(json.dumps(results[-1]), flush=True)
        else:
            print(
                f"{result['name']:<24} {result['mode']:<5} batch {result['batch']:>4} @ {result['resolution']}px "
                f"{result['dtype']:<8} on {result['device']}: compile {result['compile_s']:.1f} s, "
                f"step median {result['median_ms']:.1f} ms (min {result['min_ms']:.1f}), "
                f"{result['images_per_s']:.1f} img/s, {result['gflops']:.2f} GFLOPs/img",
                flush=True,
            )
    if args.plot:
        from effnetx_jax import plotting

        plotting.latency_vs_flops(results, args.plot)
        print(f"wrote {args.plot}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
