"""`run_lacs`: the whole tool behind `python -m effnetx_jax.lacs`, callable from Python."""

from __future__ import annotations

import jax

from effnetx_jax import studies
from effnetx_jax.lacs import experiment, report, sweep
from effnetx_jax.models import architecture


def _device() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def run_lacs(
    config,
    workdir: str,
    *,
    storage: str | None = None,
    timing: studies.Timing | None = None,
    create_only=False,
    command="",
    log=print,
) -> dict | None:
    """Creates or joins the sweep, evaluates points until the grid is done, then writes the report.

    Returns the report (lacs.json's content) on process 0, None elsewhere or with `create_only`.
    """
    experiment.check_experiment(config)
    architecture(config.model)  # an invalid base model fails here, naming the key
    timing = timing or studies.Timing()
    is_leader = jax.process_index() == 0
    study = None
    if is_leader:
        study = sweep.open_lacs_study(config, studies.open_storage(storage, workdir, timing.stale_after_s))
    if create_only:
        if is_leader:
            base_ms = sweep.base_latency_ms(study, config)
            log(f"study {config.name!r} ready; base latency {base_ms:.2f} ms on {_device()}")
        return None
    evaluated = sweep.run_worker(config, workdir, study, timing, log)
    if not is_leader:
        return None
    result = report.write_report(config, study, workdir, command, _device())
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
