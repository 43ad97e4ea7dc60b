"""What a search writes: history.csv (every candidate), pareto.png, best.py and report.md."""

from __future__ import annotations

import collections
import csv
import os

import optuna
from optuna.trial import TrialState

from effnetx_jax import config_files
from effnetx_jax.studies import candidates, lifecycle, plots
from effnetx_jax.studies.search import experiment, worker

TOP_ROWS = 10


def _status(trial: optuna.trial.FrozenTrial) -> str:
    if trial.state == TrialState.COMPLETE:
        return "cached" if worker.CACHED_KEY in trial.user_attrs else "complete"
    if trial.state == TrialState.PRUNED:
        return "invalid"
    if trial.state == TrialState.FAIL:
        return "failed" if lifecycle.is_done(trial) else "interrupted"
    return trial.state.name.lower()


def collect_rows(study: optuna.Study, config, target_ms: float) -> list[dict]:
    """One row per candidate in trial order; duplicates of a running candidate are left out.

    Rewards are recomputed with the study's target latency (workers starting together may each
    have measured it; the value stored last is the one every row then shares).
    """
    decisions = experiment.space_of(config).decisions()
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if lifecycle.DUPLICATE_KEY in trial.user_attrs:
            continue
        attrs = trial.user_attrs
        row = {"trial": trial.number, "status": _status(trial), "reference": attrs.get(worker.REFERENCE_KEY, "")}
        row.update({key: attrs[key] for key in worker.RESULT_KEYS if key in attrs})
        if "accuracy" in row and "latency_ms" in row:
            row["reward"] = candidates.reward(row["accuracy"], row["latency_ms"], target_ms, config.objective.exponent)
        row["cached_from"] = attrs.get(worker.CACHED_KEY, "")
        row["note"] = attrs.get(worker.REASON_KEY) or attrs.get(lifecycle.ERROR_KEY) or ""
        row["canonical"] = attrs.get(worker.CANONICAL_KEY, "")
        row["blocks"] = " ".join(attrs.get("blocks", ()))
        row.update({name: trial.params.get(name, "") for name in decisions})
        rows.append(row)
    return rows


def trained(rows: list[dict]) -> list[dict]:
    """Completed rows that were trained (cache hits left out): one per distinct architecture."""
    return [row for row in rows if row["status"] == "complete"]


def best_row(rows: list[dict]) -> dict | None:
    done = trained(rows)
    return max(done, key=lambda row: row["reward"]) if done else None


def _write_csv(rows: list[dict], path: str) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _best_config(config, best: dict, study: optuna.Study, command: str) -> str:
    space = experiment.space_of(config)
    candidate = study.trials[best["trial"]].params
    model = space.to_model(candidate)
    model.name = f"{config.name}-best"
    trainer = candidates.with_model(config.final, model)
    docstring = (
        f"The best candidate of the architecture search `{config.name}` (trial {best['trial']}), with the "
        f"experiment's final trainer config.\n\n"
        f"  python train.py --config=THIS_FILE --workdir=...\n\n"
        f"Search: {command}\n"
        f"Proxy {config.objective.metric} {best['accuracy']:.4f}, latency {best['latency_ms']:.4g} ms "
        f"({config.latency.source}), {best['gflops']:.4g} GFLOPs, {best['params']:,} parameters, reward "
        f"{best['reward']:.4f}.\nBlocks: {', '.join(model.blocks)}"
    )
    return config_files.render_config(trainer, docstring)


def _table(config, rows: list[dict]) -> list[str]:
    metric = config.objective.metric
    lines = [
        f"| trial | model | reward | {metric} | latency ms | GFLOPs | params | compile s | blocks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['trial']} | {row['reference'] or 'candidate'} | {row['reward']:.4f} | {row['accuracy']:.4f} | "
            f"{row['latency_ms']:.4g} | {row['gflops']:.4g} | {row['params']:,} | {row['compile_s']:.1f} | "
            f"`{row['blocks']}` |"
        )
    return lines


def _markdown(config, rows: list[dict], best: dict | None, target_ms: float, device: str, command: str) -> str:
    counts = collections.Counter(row["status"] for row in rows)
    done = trained(rows)
    lines = [
        f"# Architecture search `{config.name}`",
        "",
        f"`{command or 'run_search'}` on {device}: {config.algorithm.kind} (population "
        f"{config.algorithm.population}, sample {config.algorithm.sample_size}), candidates by status: "
        + ", ".join(f"{count} {status}" for status, count in counts.items())
        + ".",
        f"Latency: {config.latency.source}, {config.latency.mode}, batch {config.latency.batch}, "
        f"{config.latency.dtype}. Reward: {config.objective.metric} x (latency / {target_ms:.4g} ms)^"
        f"{config.objective.exponent:g}.",
        "",
        f"## Top {TOP_ROWS} by reward, and the reference models",
        "",
    ]
    top = sorted(done, key=lambda row: -row["reward"])[:TOP_ROWS]
    top += [row for row in done if row["reference"] and row not in top]
    lines += _table(config, top)
    front = plots.pareto_front(done)
    lines += ["", "## Pareto front (accuracy against latency)", "", *_table(config, front)]
    failed = [row for row in rows if row["status"] in ("failed", "invalid")]
    if failed:
        lines += ["", "## Rejected and failed", ""]
        lines += [f"- trial {row['trial']} ({row['status']}): {row['note']}" for row in failed]
    if best:
        lines += ["", f"Best: trial {best['trial']}, written to `best.py`."]
    return "\n".join(lines) + "\n"


def write_report(config, study: optuna.Study, workdir: str, command: str, device: str) -> dict | None:
    """Writes the four outputs; returns the best row (None if no candidate completed)."""
    target_ms = worker.target_latency_ms(study, config)
    rows = collect_rows(study, config, target_ms)
    _write_csv(rows, os.path.join(workdir, "history.csv"))
    best = best_row(rows)
    with open(os.path.join(workdir, "report.md"), "w") as file:
        file.write(_markdown(config, rows, best, target_ms, device, command))
    if not best:
        return None
    with open(os.path.join(workdir, "best.py"), "w") as file:
        file.write(_best_config(config, best, study, command))
    highlight = {row["reference"]: row for row in trained(rows) if row["reference"]}
    highlight["best (reward)"] = best
    plots.accuracy_vs_latency(
        trained(rows),
        os.path.join(workdir, "pareto.png"),
        accuracy_label=f"proxy {config.objective.metric}",
        title=f"search {config.name}: {config.latency.source} latency, batch {config.latency.batch} on {device}",
        highlight=highlight,
    )
    return best
