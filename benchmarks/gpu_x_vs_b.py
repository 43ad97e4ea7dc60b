"""EfficientNet-X against EfficientNet, and ours against timm, on one GPU: one prepared run.

    # on a machine with one NVIDIA GPU (see docs/gpu.md for the installs)
    python benchmarks/gpu_x_vs_b.py --out gpu_results     # about 8 minutes on an H200 (estimate)
    python benchmarks/gpu_x_vs_b.py --tiny                # CPU smoke run: every code path, no speed claim

Sections, each printed as a table as soon as it is measured:
1. B0..B3 and X-B0..X-B3 in bfloat16: inference at batch 128 and 256, the trainer's train step
   (`models.speed.CompiledStep`, the official recipe's `make_train_step`) at batch 128; img/s, ms/step,
   compile s and the ratio X-Bn / Bn.
2. timm's `efficientnet_b0` (bf16 autocast, channels_last), eager and `torch.compile`, inference and
   train at batch 128, beside our B0; the ratio ours / timm. Skipped with a message without torch/timm.
3. A per-op profile of X-B0 and B0 inference at batch 128: a `jax.profiler` trace, its device ops
   summed by name, the top 15 by device time.
4. The CPU-motivated fast paths of effnetx_jax.models (shifted-slice depthwise, the 1x1 convs as
   matmuls, SE's gate folded into the projection's weights, k x k convs' kernel gradient as matmuls
   of shifted windows, the fused BatchNorm's own gradient): both settings of each timed for B0 and
   X-B0, which one is faster here, and whether the library's default picks it. The table's title also
   names the XLA:CPU compile options the steps get here (`effnetx_jax.cpu_codegen`; none off the CPU); the
   first line names the host allocator (`effnetx_jax.host_memory`: mimalloc on the CPU, left as started on a GPU).

Timing: warm-up steps, then the median of `--steps` steps, each waited for (`block_until_ready`,
`torch.cuda.synchronize`). `--out DIR` also writes results.json and the raw profile traces.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import pathlib
import statistics
import sys
import time
from collections import defaultdict

FULL = {
    "models": ["b0", "b1", "b2", "b3"],
    "infer_batches": [128, 256],
    "train_batch": 128,
    "resolution": None,  # each model's own (224, 240, 260, 300)
    "steps": 20,
    "warmup": 3,
}
TINY = {"models": ["b0"], "infer_batches": [2, 4], "train_batch": 2, "resolution": 32, "steps": 2, "warmup": 1}
DTYPE = "bfloat16"
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def names(size: str) -> tuple[str, str]:
    """The registry's names of the EfficientNet and EfficientNet-X of one size."""
    return f"efficientnet-{size}", f"efficientnet-x-{size}"


def config(name: str, **overrides):
    from effnetx_jax.models import model_config

    cfg = model_config(name)
    cfg.dtype = DTYPE
    cfg.update(overrides)
    return cfg


# Timed rows by (model, resolved depthwise and BatchNorm impls, patch, mode, batch): a setting that is the default here
# (section 4) or a B0 row already timed (section 2) is not compiled again.
_TIMED: dict = {}


def timed_key(cfg, *, batch, mode, patch="default"):
    from effnetx_jax.models.layers import resolve_batch_norm_impl, resolve_depthwise_impl

    impls = (resolve_depthwise_impl(cfg.depthwise_impl), resolve_batch_norm_impl(cfg.batch_norm_impl))
    return (cfg.name, *impls, patch, mode, batch)


def time_jax(cfg, *, batch, mode, settings, patch="default"):
    """One compiled step of ours timed: the row sections 1, 2 and 4 print, and the step (for the profile)."""
    from effnetx_jax.models.speed import CompiledStep

    key = timed_key(cfg, batch=batch, mode=mode, patch=patch)
    if key in _TIMED:
        return _TIMED[key], None
    step = CompiledStep(cfg, batch=batch, mode=mode, resolution=settings["resolution"])
    median = statistics.median(step.times(settings["steps"], settings["warmup"]))
    _TIMED[key] = {
        "model": cfg.name,
        "mode": mode,
        "batch": batch,
        "resolution": step.resolution,
        "images_per_s": round(batch / median, 1),
        "ms_per_step": round(median * 1e3, 3),
        "compile_s": round(step.compile_s, 2),
    }
    return _TIMED[key], step


def print_table(title, rows, columns):
    print(f"\n## {title}")
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))
    sys.stdout.flush()


# ---------------------------------------------------------------- section 1: X against B


def x_vs_b(settings, keep):
    """Every (size, mode, batch): B and X timed back to back, the ratio of their img/s. Keeps the
    batch-`keep` inference steps of B0 and X-B0 for the profile, which would otherwise compile them again."""
    rows, kept = [], {}
    runs = [("infer", b) for b in settings["infer_batches"]] + [("train", settings["train_batch"])]
    for size in settings["models"]:
        for mode, batch in runs:
            pair = {}
            for name in names(size):
                row, step = time_jax(config(name), batch=batch, mode=mode, settings=settings)
                pair[name] = row
                if size == "b0" and mode == "infer" and batch == keep:
                    kept[name] = step
                del step
            b, x = pair.values()
            rows.append(
                {
                    "size": size,
                    "mode": mode,
                    "batch": batch,
                    "B img/s": b["images_per_s"],
                    "X img/s": x["images_per_s"],
                    "B ms": b["ms_per_step"],
                    "X ms": x["ms_per_step"],
                    "B compile s": b["compile_s"],
                    "X compile s": x["compile_s"],
                    "X/B": round(x["images_per_s"] / b["images_per_s"], 3),
                }
            )
            print_table("X-Bn against Bn so far", rows[-1:], list(rows[-1]))
    columns = ["size", "mode", "batch", "B img/s", "X img/s", "X/B", "B ms", "X ms", "B compile s", "X compile s"]
    print_table(f"1. EfficientNet-X against EfficientNet, {DTYPE} (train: the trainer's step)", rows, columns)
    return rows, kept


# ---------------------------------------------------------------- section 2: ours against timm


def timm_rows(settings, batch, device_name):
    """timm's efficientnet_b0 in bf16 autocast and channels_last: eager and torch.compile'd, inference
    and train. Returns rows, or None (and says why) when torch or timm is not installed."""
    try:
        import timm  # noqa: F401  (only checked here: timm_steps uses it)
        import torch
    except ImportError as error:
        print(f"\n## 2. skipped: {error}; `pip install torch timm` (CUDA build on a GPU) to compare with timm")
        return None
    device = torch.device(device_name)
    resolution = settings["resolution"] or 224
    pixels = torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8, device=device)
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch, device=device) % 10
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for compiled in (False, True):
        model, steps = timm_steps(compiled, device, pixels, labels)
        for mode, fn in steps.items():
            model.train(mode == "train")
            first_s, median = time_torch(fn, settings, sync)
            rows.append(
                {
                    "model": "timm efficientnet_b0" + (" compiled" if compiled else " eager"),
                    "mode": mode,
                    "batch": batch,
                    "images_per_s": round(batch / median, 1),
                    "ms_per_step": round(median * 1e3, 3),
                    "compile_s": round(first_s, 2),  # the first call's time, compile included
                }
            )
    return rows


def timm_steps(compiled, device, pixels, labels):
    """A fresh timm B0 (channels_last) and its inference and train steps, uint8 images normalised per
    step as ours are, bf16 autocast; `compiled`: the model through `torch.compile`."""
    import timm
    import torch
    from timm.optim import RMSpropTF

    model = timm.create_model("efficientnet_b0", drop_rate=0.2, drop_path_rate=0.2)
    model = model.to(device, memory_format=torch.channels_last)
    # The recipe's optimizer, as in benchmarks/train_vs_timm.py (TF-flavoured RMSprop, weight decay).
    optimizer = RMSpropTF(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    forward = torch.compile(model) if compiled else model
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def infer():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return forward((pixels.float() - mean) / std)

    def train():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(forward((pixels.float() - mean) / std), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, {"infer": infer, "train": train}


def time_torch(fn, settings, sync):
    """The first call's seconds (torch.compile compiles there; eager warms the allocator and cuDNN's
    choices), then the median of the timed steps after the warm-up ones."""
    start = time.perf_counter()
    fn()
    sync()
    first_s = time.perf_counter() - start
    times = []
    for i in range(settings["warmup"] + settings["steps"]):
        start = time.perf_counter()
        fn()
        sync()
        if i >= settings["warmup"]:
            times.append(time.perf_counter() - start)
    return first_s, statistics.median(times)


def ours_vs_timm(settings, device_name):
    batch = settings["train_batch"]
    ours = {
        mode: time_jax(config("efficientnet-b0"), batch=batch, mode=mode, settings=settings)[0]
        for mode in ("infer", "train")
    }
    theirs = timm_rows(settings, batch, device_name)
    rows = list(ours.values()) + (theirs or [])
    for row in theirs or []:
        row["ours/timm"] = round(ours[row["mode"]]["images_per_s"] / row["images_per_s"], 3)
    columns = ["model", "mode", "batch", "images_per_s", "ms_per_step", "compile_s", "ours/timm"]
    print_table(
        f"2. our B0 against timm's efficientnet_b0, bf16, batch {batch} (timm compile_s: first call)", rows, columns
    )
    return rows


# ---------------------------------------------------------------- section 3: per-op profile


def device_op_times(trace_dir: pathlib.Path) -> dict[str, float]:
    """Microseconds per op name in the perfetto trace `jax.profiler.trace` wrote under `trace_dir`:
    the complete events of the device's processes ("/device:GPU:0 ..."), or, on a CPU, of the threads
    that ran XLA's ops (the events whose args name an HLO op)."""
    path = next(trace_dir.rglob("*.trace.json.gz"))
    events = json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]
    process = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, name in process.items() if "/device:" in name and "CPU" not in name}
    totals = defaultdict(float)
    for event in events:
        if event.get("ph") != "X":
            continue
        on_device = event["pid"] in device_pids if device_pids else "hlo_op" in event.get("args", {})
        if on_device:
            totals[event["name"]] += event.get("dur", 0.0)
    return totals


def profile(kept, settings, out: pathlib.Path | None, batch, top=15):
    """A trace of `settings['steps']` inference steps of each kept model; its top ops by device time."""
    import tempfile

    import jax

    result = {}
    for name, step in kept.items():
        folder = (out / "profile" / name) if out else pathlib.Path(tempfile.mkdtemp(prefix="gpu_x_vs_b_"))
        step.times(1)  # already compiled and warm; one more call so the trace holds steady-state steps only
        with jax.profiler.trace(str(folder), create_perfetto_trace=True):
            step.times(settings["steps"])
        totals = device_op_times(folder)
        whole = sum(totals.values()) or 1.0
        per_step = 1e-3 / settings["steps"]
        rows = [
            {"op": op[:70], "ms/step": round(us * per_step, 3), "share %": round(100 * us / whole, 1)}
            for op, us in sorted(totals.items(), key=lambda item: -item[1])[:top]
        ]
        print_table(
            f"3. {name} inference, batch {batch}: top {top} ops by device time (trace in {folder})",
            rows,
            list(rows[0]) if rows else ["op"],
        )
        print(f"   all ops: {whole * per_step:.3f} ms/step of device time over {len(totals)} op names")
        result[name] = {"trace_dir": str(folder), "top": rows, "device_ms_per_step": round(whole * per_step, 3)}
    return result


# ---------------------------------------------------------------- section 4: CPU-motivated fast paths


@contextlib.contextmanager
def pointwise_as_conv():
    """1x1 stride-1 convs as `nn.Conv` (what the library used before `PointwiseConv`, the matmul
    chosen for XLA:CPU's slow conv gradients). Same params, so the same random variables fit."""
    import flax.linen as nn
    import jax.numpy as jnp

    from effnetx_jax.models import layers

    plain = layers.conv

    def conv(features, kernel_size, strides=(1, 1), *, dtype, use_bias=False, name=None):
        if kernel_size != 1 or tuple(strides) != (1, 1):
            return plain(features, kernel_size, strides, dtype=dtype, use_bias=use_bias, name=name)
        init = layers.conv_kernel_init
        return nn.Conv(
            features, (1, 1), use_bias=use_bias, kernel_init=init, dtype=dtype, param_dtype=jnp.float32, name=name
        )

    layers.conv = conv
    try:
        yield
    finally:
        layers.conv = plain


@contextlib.contextmanager
def gate_the_activations():
    """SE's gate always multiplies the activations before the projection, never the projection's weights
    (`GatedProjection` scales the weights per sample on maps with more pixels than channels)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from effnetx_jax.models import block_parts

    original = block_parts.GatedProjection

    class ActivationsGated(original):
        @nn.compact
        def __call__(self, x, gate):
            kernel = self.param(
                "kernel", block_parts.layers.conv_kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32
            )
            x, kernel = x.astype(self.dtype), kernel[0, 0].astype(self.dtype)
            gated = (x * gate).reshape(-1, x.shape[-1])
            return jnp.dot(gated, kernel).reshape(*x.shape[:-1], self.features)

    block_parts.GatedProjection = ActivationsGated
    try:
        yield
    finally:
        block_parts.GatedProjection = original


def forcing_conv_kernel_grad(impl):
    """A context forcing k x k convs' kernel gradient to `impl` ('windows' or 'xla') for one compile."""

    @contextlib.contextmanager
    def context():
        from effnetx_jax.models import layers

        original = layers.resolve_conv_kernel_grad
        layers.resolve_conv_kernel_grad = lambda: impl
        try:
            yield
        finally:
            layers.resolve_conv_kernel_grad = original

    context.__name__ = f"conv_kernel_grad_{impl}"  # the patch's name in the timed rows' key
    return context


def fast_paths(settings, batch, tiny):
    """Each CPU-motivated choice: the library's default and the alternative, timed for B0 and X-B0
    (inference; the 1x1-conv choice was made for its gradient, so also the train step, except in
    --tiny where it would be the CPU run's longest compile of a code path section 1 already ran;
    the BatchNorm choice only changes training, so its train step, in --tiny too)."""
    import jax

    from effnetx_jax import cpu_codegen
    from effnetx_jax.models.layers import resolve_batch_norm_impl, resolve_conv_kernel_grad, resolve_depthwise_impl

    backend = jax.default_backend()
    auto = resolve_depthwise_impl("auto")
    kernel_grad = resolve_conv_kernel_grad()
    # (choice, what the default does here, {setting: (config overrides, context)}, modes, modes in --tiny)
    choices = [
        (
            "depthwise_impl",
            auto,
            {"xla": ({"depthwise_impl": "xla"}, None), "shifted": ({"depthwise_impl": "shifted"}, None)},
            ["infer"],
            ["infer"],
        ),
        (
            "1x1 conv",
            "matmul",
            {"matmul": ({}, None), "nn.Conv": ({}, pointwise_as_conv)},
            ["infer", "train"],
            ["infer"],
        ),
        (
            "SE gate",
            "weights",
            {"weights": ({}, None), "activations": ({}, gate_the_activations)},
            ["infer"],
            ["infer"],
        ),
        # Training only, as the next: the forward pass is XLA's conv either way.
        (
            "conv kernel grad",
            kernel_grad,
            {
                impl: ({}, None if impl == kernel_grad else forcing_conv_kernel_grad(impl))
                for impl in ("windows", "xla")
            },
            ["train"],
            ["train"],
        ),
        # Training only: inference normalises with the moving averages, where nothing is fused.
        (
            "batch_norm_impl",
            resolve_batch_norm_impl("auto"),
            {"fused": ({"batch_norm_impl": "fused"}, None), "autodiff": ({"batch_norm_impl": "autodiff"}, None)},
            ["train"],
            ["train"],
        ),
    ]
    rows = []
    for choice, default, options, modes, tiny_modes in choices:
        for size in settings["models"][:1]:
            for name in names(size):
                for mode in tiny_modes if tiny else modes:
                    timed = {}
                    for setting, (overrides, context) in options.items():
                        with context() if context else contextlib.nullcontext():
                            cfg = config(name, **overrides)
                            patch = context.__name__ if context else "default"
                            row, _ = time_jax(cfg, batch=batch, mode=mode, settings=settings, patch=patch)
                        timed[setting] = row["ms_per_step"]
                    faster = min(timed, key=timed.get)
                    rows.append(
                        {
                            "choice": choice,
                            "model": name,
                            "mode": mode,
                            # Each choice has two settings: the same columns for every row.
                            **{
                                column: value
                                for number, (setting, ms) in enumerate(timed.items(), start=1)
                                for column, value in ((f"setting {number}", setting), (f"ms {number}", ms))
                            },
                            "faster": faster,
                            "default": default,
                            "flag": "" if faster == default else "MISMATCH",
                        }
                    )
    columns = list(rows[0])
    title = f"4. CPU-motivated fast paths on {backend} (auto depthwise resolves to {auto!r}), batch {batch}"
    print_table(f"{title}; compile options {cpu_codegen.compiler_options() or 'none'}", rows, columns)
    return rows


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tiny", action="store_true", help="batch 2, 32 px, 2 steps, B0 and X-B0 only: a CPU smoke run"
    )
    parser.add_argument("--out", type=pathlib.Path, help="also write results.json and the raw profile traces here")
    parser.add_argument("--sections", default="1,2,3,4", help="which sections to run, e.g. 1,3")
    args = parser.parse_args()
    settings = TINY if args.tiny else FULL
    sections = {int(s) for s in args.sections.split(",")}

    from effnetx_jax import host_memory

    host_memory.set_up()  # as the command-line tools do: on the CPU, this script starts again with mimalloc
    import jax

    if args.tiny:  # XLA's quick compile mode (as the tests use): exact programs, compiled in about half the time
        jax.config.update("jax_disable_most_optimizations", True)
    device = jax.devices()[0]
    torch_device = "cuda" if device.platform == "gpu" else "cpu"
    print(
        f"JAX {jax.__version__} on {device.platform}:{device.device_kind}; settings {settings}; "
        f"host allocator: {host_memory.allocator()}"
    )
    if not args.tiny and device.platform != "gpu":
        print("warning: no GPU: full settings on this backend will take a long time (use --tiny)")
    started = time.perf_counter()
    keep = settings["train_batch"]  # the profile's batch: the inference batch the timm comparison uses
    results = {"device": f"{device.platform}:{device.device_kind}", "settings": settings}
    kept = {}
    if 1 in sections:
        results["x_vs_b"], kept = x_vs_b(settings, keep)
    if 2 in sections:
        results["ours_vs_timm"] = ours_vs_timm(settings, torch_device)
    if 3 in sections:
        for name in names("b0"):
            if name not in kept:
                _TIMED.pop(timed_key(config(name), batch=keep, mode="infer"), None)  # want the step
                kept[name] = time_jax(config(name), batch=keep, mode="infer", settings=settings)[1]
        results["profile"] = profile(kept, settings, args.out, keep)
    kept.clear()
    if 4 in sections:
        results["fast_paths"] = fast_paths(settings, keep, args.tiny)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"\nwall time {results['wall_s']} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
