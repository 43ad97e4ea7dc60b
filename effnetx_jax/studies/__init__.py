"""What every study tool shares (LACS, the architecture search): workers that share one Optuna study.

A study lives in a journal file in the workdir by default (worker processes on one machine share it)
or in PostgreSQL/MySQL (`--storage=postgresql://...`, workers on several machines). Every worker runs
the same loop against it (`loop.run_worker`), so several workers, a resumed study and a retried trial
need no extra code; a kind of study adds only how it claims, evaluates and reports a trial.

- `storage`: the journal file or the database, whose calls wait for a database that went away.
- `lifecycle`: the study and the life of a trial (heartbeats, dead workers, failures).
- `loop`: the worker loop, and the `Kind` of study it runs.
- `candidates`: what every candidate model gets: latency, proxy accuracy, reward.
- `plots`: accuracy against latency, with the Pareto front.
- `lacs`: latency-aware compound scaling (the grid, the constraint, the family it writes, its report).
- `search`: the evolutionary architecture search (the space, the sampler, its cache and report).

Their command lines are `effnetx-lacs` and `effnetx-search` (`effnetx_jax.cli.study_flags`).
This module imports nothing heavy: the command lines import it (the entry-point rule in `effnetx_jax.cli`).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Timing:
    """How workers notice each other: heartbeat period, silence that means dead, and the wait between checks."""

    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    poll_s: float = 10.0
