"""Figures the tools write (matplotlib with the non-interactive Agg backend, imported on use)."""

from __future__ import annotations


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_flops(results: list[dict], path: str) -> None:
    """One line per family through its members: latency per batch against GFLOPs per image.

    `results` are `models.speed.benchmark` dicts with `family` and `gflops`; the device, mode, batch and
    dtype of the first one title the plot.
    """
    plt = _pyplot()
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


def pareto_front(rows: list[dict], x: str = "latency_ms", y: str = "accuracy") -> list[dict]:
    """The rows no other row beats on both counts (lower `x` and higher `y`), ordered by `x`."""
    front, best_y = [], float("-inf")
    for row in sorted(rows, key=lambda r: (r[x], -r[y])):
        if row[y] > best_y:
            front.append(row)
            best_y = row[y]
    return front


def accuracy_vs_latency(
    rows: list[dict], path: str, *, accuracy_label: str, title: str, highlight: dict[str, dict], label=None
) -> None:
    """Every row as a point, the Pareto front as a line, and each `highlight` row as a labelled star.

    Rows need `latency_ms` and `accuracy`; `label(row)` (optional) annotates every point.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    axes.scatter([r["latency_ms"] for r in rows], [r["accuracy"] for r in rows], color="0.6", label="evaluated")
    front = pareto_front(rows)
    axes.plot(
        [r["latency_ms"] for r in front], [r["accuracy"] for r in front], color="C0", marker="o", label="Pareto front"
    )
    if label:
        for row in rows:
            axes.annotate(
                label(row), (row["latency_ms"], row["accuracy"]), fontsize=6, xytext=(3, -8), textcoords="offset points"
            )
    for index, (name, row) in enumerate(highlight.items()):
        axes.scatter(
            [row["latency_ms"]], [row["accuracy"]], marker="*", s=220, color=f"C{index + 1}", label=name, zorder=3
        )
    axes.set_xlabel("latency (ms, median)")
    axes.set_ylabel(accuracy_label)
    axes.set_title(title, fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
