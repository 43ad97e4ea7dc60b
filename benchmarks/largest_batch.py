"""Train-step speed at the largest batch that fits one device, with and without rematerialisation.

    python benchmarks/largest_batch.py                      # on a GPU: JAX_PLATFORMS=cuda
    python benchmarks/largest_batch.py --models efficientnet-b0 --resolution 32 --memory_gib 1 --steps 2

For each model (default: EfficientNet-B0 and X-B0 at 224 px, B7 and X-B7 at 600 px) and each `remat`
setting, it doubles the batch while XLA's estimate of the train step's memory on one device
(`models.speed.train_step_memory`, from compiling alone) stays within the device's memory, then
times `effnetx-bench`'s train step (`models.speed.benchmark`) at the largest batch that fitted and
prints one line per setting and a Markdown table. The device's memory is what the backend reports
(`--memory_gib` where it reports none, as on a CPU); `--headroom` keeps a share of it free for what
the estimate leaves out (the allocator's fragmentation, cuDNN workspaces).
"""

from __future__ import annotations

import argparse

GIB = 2**30
DEFAULT_MODELS = "efficientnet-b0,efficientnet-x-b0,efficientnet-b7,efficientnet-x-b7"


def largest_fitting_batch(config, remat: str, resolution, limit_bytes: int, max_batch: int) -> tuple[int, int]:
    """(batch, estimated bytes) of the largest power-of-two batch up to `max_batch` whose train step fits."""
    from effnetx_jax.models.speed import train_step_memory

    fitted = (0, 0)
    batch = 1
    while batch <= max_batch:
        estimate = train_step_memory(config, batch=batch, remat=remat, resolution=resolution).total_bytes
        if estimate > limit_bytes:
            break
        fitted = (batch, estimate)
        batch *= 2
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--remat", default="none,blocks")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--resolution", type=int, help="instead of each model's own")
    parser.add_argument("--memory_gib", type=float, help="device memory, where the backend reports none")
    parser.add_argument("--headroom", type=float, default=0.1, help="share of the device memory kept free")
    parser.add_argument("--max_batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    import jax

    from effnetx_jax.models import memory, model_config
    from effnetx_jax.models.speed import benchmark

    device = jax.devices()[0]
    device_bytes = memory.device_bytes(device) or (args.memory_gib * GIB if args.memory_gib else None)
    if device_bytes is None:
        parser.error(f"{device.platform} reports no device memory: give --memory_gib")
    limit = int(device_bytes * (1 - args.headroom))
    print(f"device {device.platform}:{device.device_kind}, {device_bytes / GIB:.2f} GiB, dtype {args.dtype}")
    rows = []
    for name in args.models.split(","):
        config = model_config(name)
        config.dtype = args.dtype
        for remat in args.remat.split(","):
            batch, estimate = largest_fitting_batch(config, remat, args.resolution, limit, args.max_batch)
            if batch == 0:
                print(f"{name:<20} remat {remat:<6}: batch 1 does not fit", flush=True)
                continue
            result = benchmark(
                config,
                batch=batch,
                mode="train",
                steps=args.steps,
                warmup=args.warmup,
                resolution=args.resolution,
                remat=remat,
            )
            rows.append((name, result["resolution"], remat, batch, estimate, result["images_per_s"]))
            print(
                f"{name:<20} remat {remat:<6}: largest batch {batch:>5} ({estimate / GIB:.2f} GiB estimated), "
                f"{result['images_per_s']:.1f} img/s, step median {result['median_ms']:.1f} ms",
                flush=True,
            )
    print("\n| model | px | remat | largest batch | estimate (GiB) | train img/s |\n|---|---:|---|---:|---:|---:|")
    for name, resolution, remat, batch, estimate, rate in rows:
        print(f"| {name} | {resolution} | {remat} | {batch} | {estimate / GIB:.2f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
