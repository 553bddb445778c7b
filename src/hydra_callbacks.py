"""Hydra callbacks: the sweep report at the end of every multirun.

Exit status of `python train.py -m ...` (BasicLauncher, joblib or SLURM alike):
  0  every job is `ok`;
  1  the report was written, but at least one job has a status in `fail_on` (default:
     failed, diverged, incomplete, interrupted; the Optuna presets leave out `diverged`, an
     expected outcome of a learning-rate search). Each job's reason is in summary.md, its
     traceback in its train.log;
  other  Hydra itself failed (bad override, the sweeper gave up) before any report.
A job's failure never stops the other jobs: src/entry.py turns it into a results.json with
status `failed` and returns None to the launcher.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

import src.resolvers  # noqa: F401  (every launcher's job process imports this module: ${lr_around:...} resolves there)

EXIT_SWEEP_HAD_FAILURES = 1

log = logging.getLogger(__name__)


class SweepReport(Callback):
    def __init__(self, exit_on_failure: bool = True, fail_on: list[str] | None = None,
                 tolerance_pt: float = 1.0) -> None:
        self.exit_on_failure = exit_on_failure
        self.fail_on = list(fail_on) if fail_on is not None else None
        self.tolerance_pt = tolerance_pt  # curves: the "within N pt of the best" range

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from src.report import BAD_STATUSES, write_report

        fail_on = self.fail_on if self.fail_on is not None else BAD_STATUSES

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():  # a sweep that launched nothing
            return
        jobs = write_report(sweep_dir, self.tolerance_pt)
        bad = [j for j in jobs if j.status in fail_on]
        log.info("Sweep report: %s (%d jobs, %d ok)", sweep_dir / "summary.md", len(jobs),
                 sum(j.status == "ok" for j in jobs))
        for j in bad:
            print(f"error: job {j.name}: {j.status}: {j.error}", file=sys.stderr, flush=True)
        if bad and self.exit_on_failure:
            # SystemExit is not an Exception, so it passes Hydra's callback guard and sets the
            # process exit status; the report is already on disk.
            sys.exit(EXIT_SWEEP_HAD_FAILURES)
