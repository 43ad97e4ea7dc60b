"""ONNX Runtime on our exported EfficientNet-B0 against ONNX Runtime on timm's `efficientnet_b0` exported from
PyTorch, in one process, rounds interleaved (the machine is shared: each round times both graphs back to back).

    .venv/bin/pip install torch timm   # benchmark-time only; never a dependency of effnetx_jax
    .venv/bin/python benchmarks/onnx_vs_timm.py [--rounds 7] [--threads 2] [--profile DIR]

Both graphs have random weights (speed does not depend on their values) and the same session options
(every graph optimisation, `--threads` intra-op threads, sequential execution). Ours takes NHWC 0..255
pixels and normalises and transposes them inside; timm's takes normalised NCHW, so ours does that extra
work. Each round also times our model in JAX (jit on XLA:CPU, what the StableHLO export runs), on
all cores. The ratio is the median of each round's ratio: the other users of a shared machine change the speeds
from round to round, much less the ratio of two graphs timed back to back. `--profile DIR` also writes
an ONNX Runtime profile of each graph at batch 32 and prints the time per op type.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np

RESOLUTION = 224
HWC, CHW = (RESOLUTION, RESOLUTION, 3), (3, RESOLUTION, RESOLUTION)
BATCHES = (1, 32)
# Runs per timing, so each timing takes about a second at the speeds of a 2-core CPU.
RUNS = {1: 100, 32: 6}


def our_model():
    """Our EfficientNet-B0 (random initialisation): the config, the model and its variables."""
    import jax

    from effnetx_jax.models import create_model, model_config
    from effnetx_jax.recipe import get_config

    config = get_config()
    config.model = model_config("efficientnet-b0")
    model = create_model(config.model)
    images = np.zeros((1, RESOLUTION, RESOLUTION, 3), np.float32)
    return config, model, jax.device_get(jax.jit(lambda x: model.init(jax.random.key(0), x))(images))


def our_graph(config, model, variables) -> bytes:
    """Our model exported by `effnetx_jax.weights.onnx`."""
    from effnetx_jax.weights import onnx as onnx_export

    return onnx_export.model_proto(model, variables, config).SerializeToString()


def jax_runner(config, model, variables):
    """Our model under XLA:CPU, the function the StableHLO export serialises (`predict.pixel_logits`)."""
    import jax

    from effnetx_jax.weights import predict

    logits = jax.jit(predict.pixel_logits(model, config))
    return lambda inputs: logits(variables, inputs["images"]).block_until_ready()


def timm_graph(directory: str) -> bytes:
    """timm's `efficientnet_b0` (random initialisation), exported by `torch.onnx.export` at opset 17 with a
    dynamic batch (the TorchScript exporter, as timm's own `onnx_export.py` uses)."""
    import timm
    import torch

    model = timm.create_model("efficientnet_b0", pretrained=False).eval()
    path = os.path.join(directory, "timm_efficientnet_b0.onnx")
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, RESOLUTION, RESOLUTION),),
            path,
            opset_version=17,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    with open(path, "rb") as file:
        return file.read()


def _float32(array) -> np.ndarray:
    return array.astype(np.float32)


def session(graph: bytes, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def images_per_second(run, inputs, batch: int) -> float:
    run(inputs)  # a warm-up: the first run of a shape allocates its buffers
    start = time.perf_counter()
    for _ in range(RUNS[batch]):
        run(inputs)
    return RUNS[batch] * batch / (time.perf_counter() - start)


def op_times(profile_path: str) -> list[tuple[str, float]]:
    """Milliseconds per op type over the profile's runs, largest first."""
    with open(profile_path) as file:
        events = json.load(file)
    totals = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1000
    return totals.most_common()


def profile(graphs: dict, threads: int, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (graph, make_input) in graphs.items():
        profiled = session(graph, threads, os.path.join(directory, name))
        inputs = make_input(rng, 32)
        for _ in range(3):
            profiled.run(None, inputs)
        path = profiled.end_profiling()
        print(f"{name}: {path}")
        for op, milliseconds in op_times(path)[:12]:
            print(f"  {op:<24} {milliseconds / 3:8.1f} ms per run")


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} img/s ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", help="write ONNX Runtime profiles (batch 32) to this folder")
    args = parser.parse_args()
    import jax
    import onnxruntime as ort
    import timm
    import torch

    ours = our_model()
    with tempfile.TemporaryDirectory() as directory:
        # Each graph with the input it takes: ours 0..255 NHWC pixels, timm's normalised NCHW images.
        graphs = {
            "ours": (our_graph(*ours), lambda rng, n: {"images": _float32(rng.uniform(0, 255, (n, *HWC)))}),
            "timm": (timm_graph(directory), lambda rng, n: {"images": _float32(rng.normal(size=(n, *CHW)))}),
        }
    print(
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, timm {timm.__version__}, jax {jax.__version__}; "
        f"{args.threads} intra-op threads, all graph optimisations; {RESOLUTION} px, {args.rounds} interleaved rounds"
    )
    runners = {name: session(graph, args.threads).run for name, (graph, _) in graphs.items()}
    runners = {name: (lambda inputs, run=run: run(None, inputs)) for name, run in runners.items()}
    runners["jax"] = jax_runner(*ours)  # XLA:CPU on all cores, for the serving comparison
    rng = np.random.default_rng(0)
    inputs = {(name, batch): graphs[name][1](rng, batch) for name in graphs for batch in BATCHES}
    for batch in BATCHES:
        inputs["jax", batch] = inputs["ours", batch]
    speeds = collections.defaultdict(list)
    for round_ in range(args.rounds):
        for batch in BATCHES:
            # Every other round in reverse order, so neither graph always runs right after the other.
            for name, run in list(runners.items())[:: 1 if round_ % 2 == 0 else -1]:
                speeds[name, batch].append(images_per_second(run, inputs[name, batch], batch))
    for batch in BATCHES:
        ours, theirs = speeds["ours", batch], speeds["timm", batch]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"batch {batch:>2}: ONNX Runtime ours {_summary(ours)}, timm {_summary(theirs)}; "
            f"ours/timm {statistics.median(ratios):.2f}x (median of the rounds' ratios; "
            f"{min(ratios):.2f}-{max(ratios):.2f}); JAX (XLA:CPU) {_summary(speeds['jax', batch])}"
        )
    if args.profile:
        profile(graphs, args.threads, args.profile)


if __name__ == "__main__":
    main()
