"""Hydra callbacks: the sweep report at the end of every multirun, and no sweep dir left by a
multirun refused before its first job (EmptySweepGuard).

Exit status of `python train.py -m ...` (BasicLauncher, joblib or SLURM alike):
  0  every job is `ok`;
  1  the report was written, but at least one job has a status in `fail_on` (default:
     failed, diverged, incomplete, interrupted; the Optuna presets leave out `diverged`, an
     expected outcome of a learning-rate search). Each job's reason is in summary.md, its
     traceback in its train.log;
  1  also: the sweeper gave up after its jobs ran (Optuna when no trial finished with a value);
     src/cli.py writes the report of the jobs that ran and says why in one line;
  other  Hydra itself failed (bad override) before any job.
A job's failure never stops the other jobs: src/entry.py turns it into a results.json with
status `failed` and returns None to the launcher.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

import src.resolvers  # noqa: F401  (every launcher's job process imports this module: ${lr_around:...} resolves there)

EXIT_SWEEP_HAD_FAILURES = 1

log = logging.getLogger(__name__)

# The sweep dir of this process's multirun and the first folder of its path that it made
# (None: the dir was there before, e.g. a sweep being continued). Set by EmptySweepGuard.
started_sweep: dict[str, Path | None] = {}


class EmptySweepGuard(Callback):
    """Hydra makes the sweep dir and writes multirun.yaml before it composes the jobs, so a sweep
    refused then (`-m optim=sgd,adamw`) would leave a dir with nothing but that file. This notes
    which folders the sweep makes; src/cli.py removes them again when no job started."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        made = None
        for folder in (sweep_dir, *sweep_dir.parents):
            if folder.exists():
                break
            made = folder
        report = config.hydra.get("callbacks", {}).get("sweep_report") or {}
        # src/cli.py writes the report itself when the sweeper stops before Hydra's end callbacks
        started_sweep.update(dir=sweep_dir, made=made, tolerance_pt=report.get("tolerance_pt", 1.0),
                             report=bool(report))


def forget_sweep_that_started_no_job() -> Path | None:
    """Remove what a refused multirun made, if it holds only Hydra's multirun.yaml; the removed
    folder, or None. A dir that was there before, or with anything else in it, is left alone."""
    sweep_dir, made = started_sweep.get("dir"), started_sweep.get("made")
    if sweep_dir is None or made is None or not sweep_dir.is_dir():
        return None
    if any(p.name != "multirun.yaml" for p in sweep_dir.iterdir()):
        return None
    try:
        (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
        for folder in (sweep_dir, *sweep_dir.parents):
            folder.rmdir()  # only empty folders; stops with an OSError at the first that is not
            if folder == made:
                break
    except OSError:
        pass
    return made


def say_failures(problems: list[str], exit_on_failure: bool = True) -> None:
    """After a multirun: one `error:` line each, then exit 1 when there were any. SystemExit is
    not an Exception, so it passes Hydra's callback guard and sets the process exit status (what
    the callback wrote is already on disk)."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr, flush=True)
    if problems and exit_on_failure:
        sys.exit(EXIT_SWEEP_HAD_FAILURES)


class SweepReport(Callback):
    def __init__(self, exit_on_failure: bool = True, fail_on: list[str] | None = None,
                 tolerance_pt: float = 1.0) -> None:
        self.exit_on_failure = exit_on_failure
        self.fail_on = list(fail_on) if fail_on is not None else None
        self.tolerance_pt = tolerance_pt  # curves: the "within N pt of the best" range

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Optuna logs through a handler of its own, in colour codes even into a pipe or a log
        # file; through Hydra's, its lines read as the sweep's others
        if "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")):
            import optuna

            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()

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
        say_failures([f"job {j.name}: {j.status}: {j.error}" for j in bad], self.exit_on_failure)


class JobsExit(Callback):
    """The exit status of eval.py's and surfaces.py's multiruns, which have no sweep report: 1
    when a job failed or left nothing, each said in one line (they replace conf/hydra/default.yaml's
    SweepReport, which read their jobs as training runs: `incomplete`, exit 1 when all were fine).
    A job is fine when it wrote `success_file` and no results.json says otherwise."""

    def __init__(self, success_file: str, exit_on_failure: bool = True, fail_on: list[str] | None = None,
                 **_report_settings) -> None:
        self.success_file, self.exit_on_failure = success_file, exit_on_failure
        self.fail_on = list(fail_on) if fail_on is not None else None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from src.report import BAD_STATUSES, find_jobs
        from src.utils import read_json_object

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        fail_on = self.fail_on if self.fail_on is not None else BAD_STATUSES
        bad = []
        for job in find_jobs(sweep_dir):
            results = read_json_object(job / "results.json")
            status = results.get("status") or ("ok" if (job / self.success_file).is_file() else "incomplete")
            if status in fail_on:
                why = str(results.get("error") or f"no {self.success_file}").splitlines()[0]
                bad.append(f"job {job.name}: {status}: {why}")
        say_failures(bad, self.exit_on_failure)

