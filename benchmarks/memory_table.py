"""Per-device memory of the train step against batch size and `config.remat`, from compiling alone.

    python benchmarks/memory_table.py [--models efficientnet-x-b0,efficientnet-x-b4,efficientnet-x-b7]
        [--batches 1,8,32] [--remat none,blocks] [--dtype float32]

For every model (at its own resolution), batch and remat setting it compiles `effnetx-bench`'s train
step ahead of time from shapes alone (`models.speed.train_step_memory`: nothing is initialised or
run, so the batch need not fit this machine) and prints XLA's estimate for one device as one line,
as soon as it is known, then a Markdown table of the total. It runs on whatever JAX's default backend
is (`JAX_PLATFORMS=cuda` on a GPU); the estimate is the backend's own buffer assignment, so CPU and GPU
numbers differ. The step is the trainer's own (RMSprop, EMA, weight decay, label smoothing).
"""

from __future__ import annotations

import argparse
import time

GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-x-b0,efficientnet-x-b4,efficientnet-x-b7")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--remat", default="none,blocks")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()

    import jax

    from effnetx_jax.models import model_config
    from effnetx_jax.models.speed import train_step_memory

    device = jax.devices()[0]
    print(f"device {device.platform}:{device.device_kind}, dtype {args.dtype}", flush=True)
    remats = args.remat.split(",")
    rows = []
    for name in args.models.split(","):
        cfg = model_config(name)
        cfg.dtype = args.dtype
        for batch in map(int, args.batches.split(",")):
            totals = []
            for remat in remats:
                start = time.perf_counter()
                estimate = train_step_memory(cfg, batch=batch, remat=remat)
                print(
                    f"{name} @ {cfg.resolution}px batch {batch} remat {remat}: {estimate.describe()}, "
                    f"compiled in {time.perf_counter() - start:.0f} s",
                    flush=True,
                )
                totals.append(estimate.total_bytes)
            rows.append((name, cfg.resolution, batch, totals))
    print(f"\n| model | resolution | batch | {' | '.join(f'remat {remat} (GiB)' for remat in remats)} |")
    print(f"|---|---|---|{'---|' * len(remats)}")
    for name, resolution, batch, totals in rows:
        print(f"| {name} | {resolution} | {batch} | {' | '.join(f'{total / GIB:.2f}' for total in totals)} |")


if __name__ == "__main__":
    main()
