"""Figures of measured model speed (matplotlib with the non-interactive Agg backend, imported on use), and
`pyplot()`, the one place that picks that backend, for the studies' figures too."""

from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_flops(results: list[dict], path: str) -> None:
    """One line per family through its members: latency per batch against GFLOPs per image.

    `results` are `models.speed.benchmark` dicts with `family` and `gflops`; the device, mode, batch and
    dtype of the first one title the plot.
    """
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for family in dict.fromkeys(result["family"] for result in results):
        members = sorted((r for r in results if r["family"] == family), key=lambda r: r["gflops"])
        axes.plot([r["gflops"] for r in members], [r["median_ms"] for r in members], marker="o", label=family)
        for member in members:
            size = member["name"].rsplit("-", 1)[-1]
            axes.annotate(size, (member["gflops"], member["median_ms"]), textcoords="offset points", xytext=(4, 4))
    first = results[0]
    axes.set_xlabel("GFLOPs per image (2 x MACs)")
    axes.set_ylabel(f"{first['mode']} latency per batch of {first['batch']} (ms, median)")
    axes.set_title(f"{first['device']}, {first['dtype']}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
