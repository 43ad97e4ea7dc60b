"""Figures of a study's results: accuracy against latency, with the Pareto front."""

from __future__ import annotations

from effnetx_jax.models.plots import pyplot


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
    plt = pyplot()
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
