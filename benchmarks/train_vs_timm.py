"""The trainer's EfficientNet-B0 train step against timm's `efficientnet_b0` trained in PyTorch, in one
process, rounds interleaved (the machine is shared: each round times both back to back).

    .venv/bin/pip install torch timm   # benchmark-time only; never a dependency of effnetx_jax
    .venv/bin/python benchmarks/train_vs_timm.py [--batch 16] [--rounds 5] [--steps 3] [--threads 2]
                                                 [--batch_norm auto|fused|autodiff]

Ours: `effnetx-bench --mode train`'s step (`models.speed.CompiledStep`), the trainer's own
`make_train_step` with the official recipe: uint8 images normalised on the device, label smoothing 0.1,
weight decay 1e-5 in the loss, TF RMSprop (decay 0.9, momentum 0.9, epsilon 1e-3), EMA of the weights
and BatchNorm statistics, dropout 0.2 and drop-path 0.2, float32, XLA:CPU on every core; `--batch_norm`
as the model config's `batch_norm_impl` (`auto`, the default, is the fused gradient on CPU).
timm's: the same work as PyTorch users write it: `efficientnet_b0` (drop rate 0.2, drop-path 0.2),
channels_last, uint8 images normalised per step, `CrossEntropyLoss(label_smoothing=0.1)`, timm's
`RMSpropTF` (the TF flavour: same decay, momentum, epsilon, weight decay 1e-5), `ModelEmaV3` (0.9999),
`--threads` intra-op threads. Both start from random weights, at 224 px.

timm runs in a child process started with the process defaults a PyTorch user has (glibc's malloc as it
comes; `--timm_allocator mimalloc` preloads ours there too); ours in this one, with the host memory
allocator the command-line tools use (`effnetx_jax.host_memory`: the script restarts itself with mimalloc
preloaded; `EFFNETX_ALLOCATOR=glibc` to compare with glibc keeping freed memory) and compiled as the trainer
compiles it (`effnetx_jax.cpu_codegen`: 512-bit vectors on AVX-512 CPUs; `EFFNETX_CPU_VECTOR_WIDTH=256` to
compare without). Prints each round's img/s of both and the ratio ours/timm: the median of the rounds'
ratios, since the other users of a shared machine change the speeds from round to round much more than
the ratio of two steps timed back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

RESOLUTION = 224
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def ours(batch: int, batch_norm_impl: str):
    """Our train step, compiled: a function timing `steps` calls (seconds each) and the compile time."""
    from effnetx_jax.models import model_config
    from effnetx_jax.models.speed import CompiledStep

    cfg = model_config("efficientnet-b0")
    cfg.batch_norm_impl = batch_norm_impl
    step = CompiledStep(cfg, batch=batch, mode="train", resolution=RESOLUTION)
    return step.times, step.compile_s


def timm_step(batch: int, threads: int):
    """timm's train step: a function timing `steps` calls, as `ours` returns."""
    import timm
    import torch
    from timm.optim import RMSpropTF
    from timm.utils import ModelEmaV3

    torch.set_num_threads(threads)
    model = timm.create_model("efficientnet_b0", drop_rate=0.2, drop_path_rate=0.2)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = RMSpropTF(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5)
    ema = ModelEmaV3(model, decay=0.9999)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    pixels = torch.randint(0, 256, (batch, 3, RESOLUTION, RESOLUTION), dtype=torch.uint8)
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (IMAGENET_MEAN, IMAGENET_STD))
    labels = torch.arange(batch) % 10

    def one_step():
        images = (pixels.float() - mean) / std
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)

    def times(steps: int, warmup: int = 0) -> list[float]:
        result = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            one_step()
            if i >= warmup:
                result.append(time.perf_counter() - start)
        return result

    return times


def _serve_timm(connection, batch: int, threads: int) -> None:
    """The timm side in its own process: answers each requested (steps, warmup) with the seconds of each step."""
    times = timm_step(batch, threads)
    while (request := connection.recv()) is not None:
        connection.send(times(*request))


def _start_timm(batch: int, threads: int, preload: str | None):
    """The timm side's process, with `preload` as its LD_PRELOAD (None: none), and our end of its pipe."""
    import multiprocessing

    connection, child_end = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve_timm, args=(child_end, batch, threads), daemon=True
    )
    ours = os.environ.pop("LD_PRELOAD", None)
    if preload is not None:
        os.environ["LD_PRELOAD"] = preload
    try:
        process.start()  # a spawned child inherits this process's environment as it is now
    finally:
        os.environ.pop("LD_PRELOAD", None)
        if ours is not None:
            os.environ["LD_PRELOAD"] = ours
    return process, connection


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each side per round")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    # The values of models.layers.BATCH_NORM_IMPLS: importing it here would start JAX before host_memory.
    parser.add_argument("--batch_norm", choices=["auto", "fused", "autodiff"], default="auto")
    parser.add_argument(
        "--timm_allocator",
        choices=["default", "mimalloc"],
        default="default",
        help="timm's malloc: the process default, or the mimalloc our side runs with",
    )
    args = parser.parse_args()

    from effnetx_jax import cpu_codegen, host_memory

    host_memory.set_up()  # as the command-line tools do: on the CPU, this script starts again with mimalloc
    timm_preload = host_memory.mimalloc_library() if args.timm_allocator == "mimalloc" else None
    timm_process, connection = _start_timm(args.batch, args.threads, timm_preload)

    def their_times(steps: int, warmup: int = 0) -> list[float]:
        connection.send((steps, warmup))
        return connection.recv()

    our_times, compile_s = ours(args.batch, args.batch_norm)
    print(
        f"EfficientNet-B0 train step, batch {args.batch}, {RESOLUTION} px, float32, BatchNorm {args.batch_norm}; "
        f"ours compiled in {compile_s:.1f} s with {cpu_codegen.compiler_options() or 'XLA defaults'}; "
        f"host memory: ours {host_memory.allocator()}, timm's {args.timm_allocator}"
    )
    our_times(1, warmup=3)  # first runs: allocator and caches warming up
    their_times(1, warmup=3)
    ratios = []
    for round_index in range(args.rounds):
        our_rate = args.batch / statistics.median(our_times(args.steps))
        their_rate = args.batch / statistics.median(their_times(args.steps))
        ratios.append(our_rate / their_rate)
        rates = f"ours {our_rate:6.2f} img/s   timm {their_rate:6.2f} img/s"
        print(f"round {round_index + 1}: {rates}   ratio {ratios[-1]:.2f}")
    print(f"ours / timm = {statistics.median(ratios):.2f} (median of {args.rounds} rounds)")
    connection.send(None)
    timm_process.join()


if __name__ == "__main__":
    main()
