"""What a finished sweep writes: lacs.json (every point, the choice, the family), lacs.md, lacs.png, configs/."""

from __future__ import annotations

import json
import os

import optuna
from optuna.trial import TrialState

from effnetx_jax.studies import candidates, lifecycle, plots
from effnetx_jax.studies.lacs import experiment, family
from effnetx_jax.studies.lacs.sweep import BASE_LATENCY_KEY, point_of

_STATUS = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "skipped", TrialState.FAIL: "failed"}


def collect_rows(study: optuna.Study, config, target_ms: float) -> list[dict]:
    """One row per grid point that is done, in grid-coefficient order (duplicates and retries left out).

    Rewards are recomputed with the study's base latency: workers that start together may each have
    measured it, and the last measurement stored is the one every row then shares.
    """
    rows = {}
    for trial in study.get_trials(deepcopy=False):
        if lifecycle.is_done(trial):
            row = {"trial": trial.number, "status": _STATUS[trial.state], **trial.user_attrs}
            for key in (lifecycle.HEARTBEAT_KEY, "worker"):
                row.pop(key, None)
            if row["status"] == "complete":
                row["reward"] = candidates.reward(
                    row["accuracy"], row["latency_ms"], target_ms, config.objective.exponent
                )
            rows[point_of(trial)] = row
    return [rows[point] for point in sorted(rows)]


def choose(rows: list[dict]) -> dict | None:
    complete = [row for row in rows if row["status"] == "complete"]
    return max(complete, key=lambda row: row["reward"]) if complete else None


def _markdown(config, rows: list[dict], chosen: dict | None, members: list[dict], base: dict) -> str:
    metric = config.objective.metric
    lines = [
        f"# LACS sweep `{config.name}`",
        "",
        f"Base model `{config.model.name}`: {base['gflops']:.4g} GFLOPs, latency {base['latency_ms']:.2f} ms "
        f"({config.latency.mode}, batch {config.latency.batch}, {config.latency.dtype}, on {base['device']}).",
        f"Constraint: {config.constraint.kind} {config.constraint.target:g} +- {config.constraint.tolerance:g}. "
        f"Reward: {metric} x (latency / {base['target_latency_ms']:.2f} ms)^{config.objective.exponent:g}.",
        "",
        f"| alpha | beta | gamma | FLOPs ratio | GFLOPs | latency ms | {metric} | reward | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["status"] == "skipped" and "latency_ms" not in row:
            continue  # outside the FLOPs constraint: never measured
        mark = " **chosen**" if row is chosen else ""
        status = (
            row["status"]
            if row["status"] == "complete"
            else f"{row['status']}: {row.get('reason') or row.get('error')}"
        )
        lines.append(
            f"| {row['alpha']:g} | {row['beta']:g} | {row['gamma']:g} | {row['flops_ratio']:.3f} | "
            f"{_cell(row, 'gflops', '.4g')} | {_cell(row, 'latency_ms', '.2f')} | {_cell(row, 'accuracy', '.4f')} | "
            f"{_cell(row, 'reward', '.4f')} | {status}{mark} |"
        )
    skipped = sum(row["status"] == "skipped" and "latency_ms" not in row for row in rows)
    lines += ["", f"{skipped} of {len(rows)} grid points are outside the FLOPs constraint and were not measured."]
    if members:
        lines += [
            "",
            "## Family",
            "",
            "| model | phi | width | depth | resolution | GFLOPs | params | config |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {m['name']} | {m['phi']:g} | {m['width']:g} | {m['depth']:g} | {m['resolution']} | {m['gflops']:.4g} | "
            f"{m['params']:,} | `{m['config']}` |"
            for m in members
        ]
    return "\n".join(lines) + "\n"


def _cell(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-"


def write_report(config, study: optuna.Study, workdir: str, command: str, device: str) -> dict:
    """Writes lacs.json, lacs.md, lacs.png and (when a point completed) configs/<name>.py; returns the JSON."""
    base_ms = study.user_attrs[BASE_LATENCY_KEY]
    rows = collect_rows(study, config, experiment.target_latency_ms(config, base_ms))
    chosen = choose(rows)
    base = {
        "name": config.model.name,
        "gflops": study.user_attrs["base_gflops"],
        "latency_ms": base_ms,
        "target_latency_ms": experiment.target_latency_ms(config, base_ms),
        "device": device,
    }
    members = []
    if chosen:
        point = (chosen["alpha"], chosen["beta"], chosen["gamma"])
        members = family.write_family(config, point, os.path.join(workdir, "configs"), command)
    report = {
        "experiment": config.name,
        "command": command,
        "base": base,
        "constraint": config.constraint.to_dict(),
        "objective": config.objective.to_dict(),
        "latency": config.latency.to_dict(),
        "chosen": chosen,
        "family": members,
        "points": rows,
    }
    with open(os.path.join(workdir, "lacs.json"), "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")
    with open(os.path.join(workdir, "lacs.md"), "w") as file:
        file.write(_markdown(config, rows, chosen, members, base))
    complete = [row for row in rows if row["status"] == "complete"]
    if complete:
        plots.accuracy_vs_latency(
            complete,
            os.path.join(workdir, "lacs.png"),
            accuracy_label=config.objective.metric,
            title=f"LACS {config.name}: {config.latency.mode} batch {config.latency.batch} on {device}",
            highlight={"chosen": chosen},
            label=lambda row: f"{row['alpha']:g}/{row['beta']:g}/{row['gamma']:g}",
        )
    return report
