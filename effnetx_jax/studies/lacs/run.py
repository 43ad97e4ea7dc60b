"""`run_lacs`: the whole tool behind `effnetx-lacs`, callable from Python."""

from __future__ import annotations

from effnetx_jax.models import architecture
from effnetx_jax.studies import Timing, loop
from effnetx_jax.studies.lacs import experiment, report, sweep


def run_lacs(
    config,
    workdir: str,
    *,
    storage: str | None = None,
    timing: Timing | None = None,
    create_only=False,
    command="",
    log=print,
) -> dict | None:
    """Creates or joins the sweep, evaluates points until the grid is done, then writes the report.

    Returns the report (lacs.json's content) on process 0, None elsewhere or with `create_only`.
    """
    experiment.check_experiment(config)
    architecture(config.model)  # an invalid base model fails here, naming the key
    timing = timing or Timing()
    study = loop.open_on_leader(lambda backend: sweep.open_lacs_study(config, backend), storage, workdir, timing)
    if create_only:
        if study is not None:
            base_ms = sweep.base_latency_ms(study, config)
            log(f"study {config.name!r} ready; base latency {base_ms:.2f} ms on {loop.device_name()}")
        return None
    base_ms = loop.from_leader(study, lambda study: sweep.base_latency_ms(study, config))
    evaluated = loop.run_worker(sweep.Sweep(config, workdir, base_ms), study, timing, log)
    if study is None:
        return None
    result = report.write_report(config, study, workdir, command, loop.device_name())
    chosen = result["chosen"]
    log(f"this worker evaluated {evaluated} point(s); wrote lacs.json, lacs.md and lacs.png in {workdir}")
    if chosen:
        log(
            f"chosen alpha={chosen['alpha']:g} beta={chosen['beta']:g} gamma={chosen['gamma']:g} "
            f"(reward {chosen['reward']:.4f}); family configs: "
            + ", ".join(member["config"] for member in result["family"])
        )
    else:
        log(f"no point completed ({_why_none_completed(config, result['points'])}), so no family configs were written")
    return result


def _why_none_completed(config, rows: list[dict]) -> str:
    """The constraint when it skipped every point (with the closest one), else how many failed and where to look."""
    skipped = {(row["alpha"], row["beta"], row["gamma"]): row for row in rows if row["status"] == "skipped"}
    if len(skipped) == len(rows):  # only a latency constraint gets here: a FLOPs one is refused up front
        ratios = {point: row["latency_ratio"] for point, row in skipped.items() if "latency_ratio" in row}
        return experiment.nothing_meets(config.constraint, ratios)
    failed = len(rows) - len(skipped)
    return f"{failed} point(s) failed, {len(skipped)} skipped by the constraint; see lacs.md for each point's error"
