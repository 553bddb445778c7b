"""`train(cfg)`: one training run from a composed Hydra config, top to bottom.

    check what no constructor can → build model, optimizer, data, callbacks, loggers, trainer
    from the config → fit → test the best-val checkpoint → results.json

Pure: no argv, no exit (src/cli.py does that). Each object checks its own arguments in its
constructor; a ValueError there becomes one `error:` line in src/cli.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.diagnostics import diagnostics_seconds
from callbacks.divergence import Diverged, anomaly_divergence
from callbacks.group import group_callbacks
from callbacks.interrupt import GracefulInterrupt
from src import cli
from src.checkpointing import (
    AtomicCheckpointIO,
    check_checkpoint,
    checkpoint_stamp,
    own_seed_and_init,
    recorded_first_try,
    remove_stale_temp_files,
)
from src.data import N_EVAL, check_model_fits_data
from src.errors import (
    ConfigError,
    Interrupted,
    check_accelerator,
    in_group,
    integer,
    is_int,
    seed_value,
)
from src.hparams import log_hparams, run_name, trial_name
from src.provenance import config_hash, hash_of, provenance, what_is_trained
from src.utils import atomic_write_json, read_json_object

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# What no constructor checks: the seed, the machine, the launch


def check_run_settings(cfg: DictConfig) -> None:
    # Every interpolation resolves now: results.json resolves the whole config, and a key that
    # cannot (`+note=${nope}`) would otherwise fail the run after its last epoch.
    OmegaConf.to_container(cfg, resolve=True)
    seed_value("seed", cfg.seed)
    # Lightning reads -1 as "forever"; a run that never ends is never what a user meant here.
    integer("trainer.max_epochs", cfg.trainer.max_epochs)
    # One validation after every epoch: val_scores, best_val_epoch, the best-val checkpoint's
    # name and the report's curves all count epochs (Lightning would otherwise validate every
    # n-th epoch, or several times an epoch, and the run would report validations as epochs).
    for key, one in (("check_val_every_n_epoch", 1), ("val_check_interval", 1.0)):
        value = cfg.trainer.get(key)  # an int val_check_interval is a count of batches, not 1 epoch
        if value is not None and (type(value) is not type(one) or value != one):
            raise ConfigError(f"trainer.{key}={value!r}: this app validates once after every epoch "
                              f"(results.json's val_scores and best_val_epoch count epochs); accepted: "
                              f"{one}, or leave it out; to validate on fewer images, trainer.limit_val_batches=N")
    # Each of these would have Lightning skip training, and the run test the initial weights as
    # its result (status ok, 0 epochs).
    limit = cfg.trainer.get("limit_train_batches")
    if limit is False or (type(limit) in (int, float) and limit == 0):  # Lightning reads True as 1 batch
        raise ConfigError(f"trainer.limit_train_batches={limit!r} trains nothing; accepted: a number of "
                          "batches >= 1 or a fraction of the epoch in (0, 1], or leave it out; to test a "
                          "trained run again: python eval.py ckpt_path=<run dir>")
    max_steps = cfg.trainer.get("max_steps", -1)
    if max_steps is not None and not (is_int(max_steps) and (max_steps == -1 or max_steps >= 1)):
        raise ConfigError(f"trainer.max_steps={max_steps!r}: accepted: a whole number of optimizer steps "
                          ">= 1, or -1 (no limit: trainer.max_epochs decides); 0 would train nothing")
    if (max_time := cfg.trainer.get("max_time")) is not None and duration_seconds(max_time) == 0:
        raise ConfigError(f"trainer.max_time={max_time} trains nothing; accepted: a duration above zero "
                          "as DD:HH:MM:SS (00:02:00:00 for two hours), or leave it out")
    if cfg.trainer.get("barebones"):
        # Lightning refuses it with a message about the first object it finds (our logger,
        # then our profiler), never about what would be given up.
        raise ConfigError("trainer.barebones=true turns off what every run here writes (results.json's "
                          "curves and checkpoints, the loggers, the epoch line); accepted: false, or leave "
                          "it out; for the least work a step: callbacks=essential logger=none")
    group = cfg.get("group_callbacks", True)
    if not isinstance(group, bool):
        raise ConfigError(f"group_callbacks={group!r} must be true or false")
    # Each of these ran on, read in a way nobody meant (`skip_test=abc` skipped the test, a metric
    # name Optuna cannot get failed every trial after it trained) or crashed mid-run.
    if not isinstance(skip := cfg.get("skip_test", False), bool):
        raise ConfigError(f"skip_test={skip!r} must be true or false")
    if (metric := cfg.get("optimized_metric")) not in (None, "test_acc", "best_val_acc"):
        raise ConfigError(f"optimized_metric={metric!r} is not what train() can return; accepted: "
                          "best_val_acc (searches: never looks at test data) or test_acc")
    if str(shown := cfg.get("print_config", "compact")).lower() not in cli.PRINT_CONFIG_VALUES:
        raise ConfigError(f"print_config={shown!r} is not one of: compact, full, false")
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1)
    if not (is_int(accumulate) and accumulate >= 1):
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate!r} must be a whole number of batches "
                          ">= 1 per optimizer step (1: every batch)")
    clip = cfg.trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not math.isfinite(clip) or clip < 0):
        raise ConfigError(f"trainer.gradient_clip_val={clip!r} must be a number >= 0 (0 or null: no clipping); "
                          "a negative one was ignored")
    check_model_fits_data(cfg.get("model"))
    # A fraction under one evaluation batch: Lightning refuses it only when it gets there, after
    # an epoch of training (validation) or after all of them (the test: the run ended `failed`).
    eval_batch = (cfg.get("data") or {}).get("eval_batch_size", 1024)
    devices = cfg.trainer.get("devices", 1)
    if is_int(eval_batch) and eval_batch > 0:
        images = math.ceil(N_EVAL / (devices if is_int(devices) and devices > 0 else 1))  # a rank's share
        batches = math.ceil(images / eval_batch)
        for key in ("limit_val_batches", "limit_test_batches"):
            limit = cfg.trainer.get(key)
            if type(limit) is float and 0 < limit < 1 and int(limit * batches) < 1:
                raise ConfigError(f"trainer.{key}={limit} is less than one of the {batches} batches of {eval_batch} "
                                  f"images (data.eval_batch_size); accepted: a fraction >= {1 / batches:.3g}, or a "
                                  "number of batches >= 1")
    check_accelerator("trainer.accelerator", cfg.trainer.get("accelerator", "auto"))
    strategy, devices = str(cfg.trainer.get("strategy", "auto")), cfg.trainer.get("devices", 1)
    # Lightning's `ddp` starts the extra processes by re-running the command line; inside a local
    # multirun that line is the whole sweep, so each child would restart it. SLURM starts them.
    if (strategy.startswith("ddp") and strategy not in ("ddp_spawn", "ddp_fork", "ddp_notebook")
            and str(devices) != "1" and "SLURM_NTASKS" not in os.environ and cli.is_multirun()):
        raise ConfigError(f"trainer.strategy={strategy} (devices={devices}) cannot run inside a local "
                          "multirun: Lightning re-runs the command line per process, which would "
                          "restart the sweep; run it as a single run, or per SLURM job "
                          "(hydra/launcher=slurm hydra.launcher.tasks_per_node=<devices>)")


def remove_new_files(before: dict[Path, set[str] | None]) -> None:
    """Remove what each folder did not hold before (None: the whole folder was new)."""
    for folder, names in before.items():
        if names is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for p in folder.iterdir():
                if p.name in names:
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def duration_seconds(value) -> float | None:
    """Seconds of a `trainer.max_time` as Lightning reads it (DD:HH:MM:SS, or a dict of
    timedelta's arguments); None when it is neither: Lightning's own check then says why."""
    import datetime

    try:
        if isinstance(value, str):
            days, hours, minutes, seconds = (int(part) for part in value.strip().split(":"))
            value = {"days": days, "hours": hours, "minutes": minutes, "seconds": seconds}
        return datetime.timedelta(**value).total_seconds()
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Build everything from the config


def build_module(cfg: DictConfig):
    """The LightningModule: network (conf/model), initialised by conf/init, with the optimizer of
    conf/optim built on its parameters. Same RNG order as the tutorial: layers, then the init."""
    network = hydra.utils.instantiate(cfg.model)
    init_scheme = hydra.utils.instantiate(cfg.init)
    make_optimizer = hydra.utils.instantiate(cfg.optim)  # a partial: `_partial_: true`
    try:
        optimizer = make_optimizer(network.parameters())
    except (ValueError, TypeError) as e:
        raise ConfigError(in_group("optim", e)) from None
    return hydra.utils.instantiate(cfg.module, network=network, optimizer=optimizer, init_scheme=init_scheme)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The configured callbacks, less those that say they are off (`enabled` False: built, so
    their arguments are still checked, but not dispatched to at every step)."""
    callbacks = [hydra.utils.instantiate(node) for node in (cfg.get("callbacks") or {}).values()
                 if node is not None and "_target_" in node]
    return [cb for cb in callbacks if getattr(cb, "enabled", True)]


def build_loggers(cfg: DictConfig) -> list:
    return [hydra.utils.instantiate(node) for node in (cfg.get("logger") or {}).values()
            if node is not None and "_target_" in node]


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler, minus its cost: Lightning enters `profile(name)` around
    each hook it calls, about 30 a training step, and PassThroughProfiler's is a generator-based
    context manager (0.76 µs against 0.11 µs for a shared nullcontext, `timeit` here).
    `trainer.profiler=simple` (or any other) still replaces it."""

    _NULL = contextlib.nullcontext()

    def profile(self, action_name: str):
        return self._NULL


# ---------------------------------------------------------------------------------------------
# One run


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def continue_sweep_job(cfg: DictConfig, out: Path) -> tuple[dict | None, str | None]:
    """A multirun started again in the same sweep dir continues where it stopped: a job that
    finished (`ok` or `diverged`) with the same config and seed is skipped (its results
    returned), a stopped job resumes from its last.ckpt if that was trained with the same config
    and seed, the others start afresh.
    `+sweep.rerun=all` reruns everything. A fresh start removes an earlier try's checkpoints and
    TensorBoard events from the job dir: a finished run of another config is not resumed, and no
    stale best checkpoint or second event file stays beside the new run's."""
    if not cli.is_multirun():
        return None, cfg.get("ckpt_path")
    rerun = (cfg.get("sweep") or {}).get("rerun") == "all"
    old = read_json_object(out / "results.json")
    # The same job: same config (paths aside, provenance's hash) and the same seed.
    this = (config_hash(cfg), cfg.seed)
    before = ((old.get("provenance") or {}).get("config_hash"), (old.get("config") or {}).get("seed"))
    same = before == this
    finished = old.get("status") in ("ok", "diverged")
    if finished and same and not rerun:
        acc = old.get("test_acc")
        acc = f"{100 * acc:.2f} %" if isinstance(acc, (int, float)) and not isinstance(acc, bool) else "n/a"
        outcome = f"test acc {acc}" if old["status"] == "ok" else f"at step {old.get('diverged_step')}"
        print(f"skipping {out.name}: already {old['status']} ({outcome}); +sweep.rerun=all reruns it", flush=True)
        return old, None
    if cfg.get("ckpt_path"):
        return None, cfg.get("ckpt_path")
    last = out / "checkpoints" / "last.ckpt"
    # The checkpoint's stamp says what it was trained with (a killed job left no results.json);
    # a checkpoint written before stamps existed goes by the stopped run's results.json.
    stamp = checkpoint_stamp(last) if last.is_file() and not rerun else {}
    changed = False
    if last.is_file() and not rerun and not finished:
        known = (stamp.get("config_hash"), stamp.get("seed")) if stamp else before
        changed = known[0] is not None and known != this
        if not changed:
            print(f"resuming {out.name} from {last}", flush=True)
            return None, str(last)
    earlier = [d for d in (out / "checkpoints", out / "tensorboard") if d.is_dir()]
    if earlier and (rerun or finished or changed):
        since = f"since it {'finished' if finished else 'stopped'}"
        diff = (config_changes({"seed": stamp.get("seed"), **stamp["config"]}, {"seed": cfg.seed, **what_is_trained(cfg)})
                if isinstance(stamp.get("config"), dict) else [])
        why = ("+sweep.rerun=all" if rerun else f"changed {since}: {', '.join(diff)}" if diff
               else f"its config or seed changed {since}")
        print(f"rerunning {out.name} ({why}): its earlier {' and '.join(d.name for d in earlier)} are replaced",
              flush=True)
    for d in earlier:
        shutil.rmtree(d)
    return None, None


def config_changes(before: dict, after: dict, most: int = 8) -> list[str]:
    """What differs between two configs, by dotted key in key order: `key old → new` for a value
    (`(none)` on the side that lacks it), `key added` / `key removed` for a whole section
    (`callbacks=essential` drops `callbacks.activation_stats`, not each of its settings); the
    first `most`, then how many more."""
    changed = []

    def walk(old, new, key):
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted({*old, *new}, key=str):
                sub = f"{key}.{k}" if key else str(k)
                if k in old and k in new:
                    walk(old[k], new[k], sub)
                elif isinstance(old.get(k, new.get(k)), dict):
                    changed.append(f"{sub} {'removed' if k in old else 'added'}")
                else:
                    changed.append(f"{sub} {old.get(k, '(none)')} → {new.get(k, '(none)')}")
        elif old != new:
            changed.append(f"{key} {old} → {new}")

    walk(before, after, "")
    return changed[:most] + ([f"{len(changed) - most} more"] if len(changed) > most else [])


def changes_on_resume(earlier: dict, stamp: dict) -> list[str]:
    """A resumed run's config changes, one sentence per resume that changed any, oldest first:
    those the resumed checkpoint's stamp (`earlier`, {} for a fresh run) carries from earlier
    resumes, then this one's against the config that checkpoint was trained with. results.json's
    config holds only the last values."""
    changes = [str(c) for c in earlier.get("changes") or []]
    if isinstance(earlier.get("config"), dict):
        diff = config_changes({"seed": earlier.get("seed"), **earlier["config"]},
                              {"seed": stamp["seed"], **stamp["config"]})
        if diff:
            changes.append(f"resumed at step {earlier.get('global_step')} with a changed config: "
                           f"{', '.join(diff)}; results.json's config holds the new values")
    return changes


def first_try(earlier: dict | None, stamp: dict) -> dict | None:
    """The seed, init and init_name of the run's first try, which made the initial weights every
    later try trained on (a resume with another seed or init= changes neither): this try's for a
    fresh run (`earlier` None), else what the resumed checkpoint's stamp records of it
    (`recorded_first_try`; None when nothing says)."""
    return own_seed_and_init(stamp) if earlier is None else recorded_first_try(earlier)


def train(cfg: DictConfig) -> float | None:
    """Train, test the best-val checkpoint, write results.json. Returns `cfg.optimized_metric`
    (None for a diverged run: a failed trial to Optuna)."""
    started = time.time()
    check_run_settings(cfg)
    out = Path(cfg.paths.output_dir)
    done, resume_from = continue_sweep_job(cfg, out)
    if done is not None:  # as the run itself returned it: None for a diverged one (Optuna: failed)
        return None if done["status"] == "diverged" else done.get(cfg.get("optimized_metric") or "test_acc")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out / "checkpoints")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg)
    # A bad ckpt_path fails here, before any data is read.
    limit_val = cfg.trainer.get("limit_val_batches")
    ckpt_path = check_checkpoint(resume_from, module.hparams["model"],
                                 (module.hparams.get("optim_cfg") or {}).get("_target_"),
                                 validates=not (type(limit_val) in (int, float) and limit_val == 0))
    # Each checkpoint says what it was trained with: a sweep started again resumes only its own
    # config's (continue_sweep_job), and a resume under a changed config is said in results.json.
    trained = what_is_trained(cfg)
    stamp = {"config_hash": hash_of(trained), "seed": cfg.seed, "config": trained}
    earlier = checkpoint_stamp(Path(ckpt_path)) if ckpt_path else None
    stamp["changes"] = changes_on_resume(earlier or {}, stamp)
    stamp["first"] = first_try(earlier, stamp)  # what made the initial weights (landscape.py rebuilds them)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()  # data problems surface before the trainer starts
    callbacks = build_callbacks(cfg)
    loggers = build_loggers(cfg)
    from pytorch_lightning.callbacks import ProgressBar

    checkpoint_io = AtomicCheckpointIO(stamp=stamp)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, _convert_="all",  # plain dicts: Lightning reads max_time={seconds: 5} as one
        logger=loggers or False, plugins=[checkpoint_io],
        callbacks=group_callbacks(callbacks) if cfg.get("group_callbacks", True) else callbacks,
        enable_progress_bar=any(isinstance(cb, ProgressBar) for cb in callbacks),
        profiler=cfg.trainer.get("profiler") or NoProfiler())

    if ckpt_path:
        log.info("Resuming from %s", ckpt_path)
    diverged = interrupted = None
    # What the loggers' folders hold now: what fit adds to them is removed again if it fails
    # before its first step (a setting Lightning checks only then, e.g. a limit_train_batches
    # fraction under 1 batch), so no empty run is left for TensorBoard to list.
    log_dirs = {Path(lg.log_dir): set(os.listdir(lg.log_dir)) if os.path.isdir(lg.log_dir) else None
                for lg in loggers if isinstance(lg, (TensorBoardLogger, CSVLogger))}
    fit_started = time.time()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except Diverged as e:
        diverged = e
        print(f"diverged: {e}", file=sys.stderr, flush=True)
    except Interrupted as e:
        interrupted = e
    except SIGTERMException:  # Lightning's own stop (SIGTERM during validation, one process): exit 0 otherwise
        interrupted = Interrupted(_received(callbacks) or signal.SIGTERM)
    except Exception as e:
        if (interrupted := _workers_stopped_with_the_run(callbacks, datamodule)) is not None:
            log.debug("a stop that also ended the data workers", exc_info=True)
        # trainer.detect_anomaly=true: a NaN gradient is a divergence too
        elif (diverged := anomaly_divergence(e, trainer, module)) is None:
            if trainer.global_step == _global_step_of(ckpt_path):  # not one step trained here
                remove_new_files(log_dirs)
            raise
        print(f"diverged: {diverged}", file=sys.stderr, flush=True)
    # The steps of an unfinished epoch (a divergence, a stop, trainer.max_steps mid-epoch) are
    # still held on the device: into history and the train/loss curve with the others.
    module.drain_losses()
    if interrupted is not None:
        # A stop at no batch boundary (a second Ctrl-C, a data worker's death) can come between
        # a step's loss and its optimizer step: a loss of no step taken (6 losses, 5 steps).
        del module.history["train_losses"][trainer.global_step:]
    fit_seconds = time.time() - fit_started

    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    val_scores = module.history["val_scores"]
    best_epoch = max(range(len(val_scores)), key=lambda i: (val_scores[i], -i)) if val_scores else -1
    # Epochs trained and validated (a NaN model is never validated); with validation off
    # (trainer.limit_val_batches=0), epochs trained to their end.
    epochs = len(val_scores) if trainer.limit_val_batches != 0 else len(module.history["train_scores"])
    test_acc = None
    test_started = time.time()
    if not cfg.get("skip_test", False) and diverged is None and interrupted is None and trainer.state.finished:
        try:
            metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
            test_acc = _finite(metrics[0]["test/acc"]) if metrics else None
        except (Interrupted, SIGTERMException) as e:  # a stop in the test pass: the fit's scores are kept,
            interrupted = e if isinstance(e, Interrupted) else Interrupted(signal.SIGTERM)  # resuming tests it
    test_seconds = time.time() - test_started

    status = "diverged" if diverged else "interrupted" if interrupted or trainer.interrupted else "ok"
    elapsed = time.time() - started  # one reading for `seconds` and the diagnostics' share of it
    diagnostics = diagnostics_seconds(trainer)
    results = {
        "status": status,
        "test_acc": test_acc,
        "best_val_acc": val_scores[best_epoch] if val_scores else None,
        "best_val_epoch": best_epoch,
        "epochs": epochs,
        "val_scores": val_scores,
        "train_scores": module.history["train_scores"],
        "train_losses": module.history["train_losses"],
        "global_step": trainer.global_step,
        "resumed_from": ckpt_path,
        # This process's wall time, plus the training time of earlier tries of a resumed run.
        "seconds": round(elapsed + module.seconds_before, 3),
        # What the diagnostics callbacks cost: each times its own work (callbacks/diagnostics.py).
        "diagnostics_seconds": round(diagnostics, 3),
        "diagnostics_share": round(diagnostics / max(elapsed, 1e-9), 4),
        # Where this process's `seconds` went (a resumed run's earlier tries are not in it).
        "timing": {
            "setup": round(fit_started - started, 3),  # checks, model, data files, trainer
            # fit = the epochs + the checkpoint writes + fit start and end (data setup, the
            # step-0 and final diagnostics and their figures)
            "fit": round(fit_seconds, 3),
            "epoch_seconds": [round(s, 3) for s in module.epoch_seconds],  # train + validation
            "checkpoint_writes": checkpoint_io.writes,
            # after each epoch's validation, outside its epoch_seconds (Lightning's
            # ModelCheckpoint saves at the train epoch's end)
            "checkpoint_seconds": round(checkpoint_io.seconds, 3),
            "test": round(test_seconds, 3),
        },
        "best_checkpoint": best_path,
        "data_source": datamodule.source,
        "output_dir": str(out),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": provenance(cfg),
    }
    if getattr(module, "cuda_graph", False):  # training steps of this process that replayed it
        results["timing"]["graphed_steps"] = module.graphed_steps
        if module.graph_not_used:
            results["timing"]["graph_not_used"] = module.graph_not_used
    if diverged:
        # val/train scores above are those of the epochs that finished with finite weights.
        results.update(diverged_step=diverged.step, diverged_epoch=diverged.epoch, error=str(diverged))
    if interrupted:
        if (out / "checkpoints" / "last.ckpt").is_file():
            results.update(signal=interrupted.signal_name, error=str(interrupted), resume=cli.resume_command(out))
        else:  # stopped at once (a second Ctrl-C) before the first checkpoint: nothing to resume
            results.update(signal=interrupted.signal_name, error=f"{interrupted} before the first checkpoint",
                           again=cli.again_command())
    results["warnings"] = stamp["changes"] + run_warnings(module, callbacks, val_scores)
    if status == "ok" and (what := _stopped_early(cfg, trainer)):
        results["warnings"].append(what)
    if test_acc is not None and (what := _not_best_val_tested(cfg, trainer, best_path, val_scores)):
        results["warnings"].append(what)
    if what := _not_all_tested(cfg, trainer, module, datamodule, test_acc, status):
        results["warnings"].append(what)
    if what := _not_all_validated(cfg, trainer, module, datamodule):
        results["warnings"].append(what)
    if trainer.is_global_zero:  # under DDP every rank gets here; rank 0's history is the one
        swept = cli.swept_keys()
        trial = trial_name(cli.job_overrides(), swept)
        if not cli.is_multirun():
            # A single run's HParams row: its own overrides are its columns and its name, then the
            # run dir's time (runs of a notebook of tries were told apart by the time alone)
            swept = given_keys(cli.job_overrides())
            trial = " · ".join(filter(None, [run_name(cli.job_overrides(), swept)
                                             or f"{cfg.get('optim_name')} · {cfg.get('init_name')}", out.name]))
        log_hparams(trainer.loggers, cfg, results, swept, trial=trial or out.name)
        for logger in trainer.loggers:
            logger.finalize("success" if status == "ok" else "failed")
        atomic_write_json(out / "results.json", results)
        print_end(results)
    if interrupted:
        interrupted.reported = True  # rank 0 wrote results.json
        raise interrupted  # src/cli.py: one line, exit 128 + signal
    if diverged:
        # No value: the Optuna sweeper records the trial as failed and goes on. Not NaN: Optuna
        # 2.10 refuses a NaN value and the sweeper plugin (1.3) then crashes the whole search.
        return None
    return {"test_acc": test_acc, "best_val_acc": results["best_val_acc"]}.get(
        cfg.get("optimized_metric") or "test_acc")


TENSORBOARD_URL = "http://localhost:6006/?smoothing=0#timeseries (unsmoothed)"


def _workers_stopped_with_the_run(callbacks: list, datamodule) -> Interrupted | None:
    """A stop signal sent to every process of a job (a scheduler's, by cgroup rather than by
    process group: data._WorkerInit covers that one) also ends the DataLoader workers, and the
    main process's error about a dead worker (torch's RuntimeError, EOFError, a connection reset)
    can come before the batch boundary where the run stops. The run was stopped, not broken:
    `interrupted`, resumed from the last checkpoint written. None for any other error."""
    received = _received(callbacks)
    killed = getattr(datamodule, "killed_workers", list)()
    return Interrupted(received) if received is not None and killed else None


def _received(callbacks: list) -> int | None:
    """The stop signal this process received during the fit, if any."""
    return next((cb.received for cb in callbacks if isinstance(cb, GracefulInterrupt)), None)


def _global_step_of(ckpt_path: str | None) -> int | None:
    """The step a fit starts from: 0, or the resumed checkpoint's (None when unreadable)."""
    if not ckpt_path:
        return 0
    import torch

    try:
        return int(torch.load(ckpt_path, map_location="cpu", weights_only=True).get("global_step", 0))
    except Exception:
        return None


def given_keys(overrides: list[str]) -> list[str]:
    """The keys a single run's command line sets, those that say what it trains (not where it
    writes, how it prints, or `hydra.*`)."""
    from src.provenance import BOOKKEEPING_KEYS

    keys = [o.partition("=")[0].lstrip("+~") for o in overrides]
    # what is logged or shown, not trained: the callbacks, loggers, the diagnostics' interval, the bar
    shown_only = ("callbacks", "logger", "diagnostics", "group_callbacks", "trainer.enable_",
                  "trainer.log_every_n_steps", "module.progress_every_n_steps")
    return [k for k in dict.fromkeys(keys)
            if k.split(".")[0] not in BOOKKEEPING_KEYS - {"seed"} and not k.endswith(("_dir", "_path"))
            and not k.startswith(shown_only)]


def run_warnings(module, callbacks, val_scores: list[float]) -> list[str]:
    """What a reader of a finished run should know: a run at chance level, and every warning a
    callback kept (the diagnostics' vanishing/exploding alerts)."""
    found = []
    chance = 1 / module.net.config["num_classes"]
    if val_scores and val_scores[-1] <= chance + 0.02:
        found.append(f"did not learn: final val acc {100 * val_scores[-1]:.1f} % is at chance level "
                     f"({100 * chance:.0f} %)")
    for cb in callbacks:
        found += list(getattr(cb, "warnings", None) or [])
    if line := getattr(module, "graph_warning", None):
        found.append(line)
    return found + list(getattr(module, "resume_notes", None) or [])


def _stopped_early(cfg: DictConfig, trainer: pl.Trainer) -> str | None:
    """A run that ended `ok` before trainer.max_epochs: by trainer.max_steps, trainer.max_time
    or a callback (early stopping). Its numbers are of a shorter run than the config says."""
    batches, max_epochs = trainer.num_training_batches, cfg.trainer.max_epochs
    if cfg.trainer.get("fast_dev_run") or not 0 < batches < math.inf:
        return None
    # global_step counts optimizer steps: one per accumulate_grad_batches batches, and one for
    # an epoch's remainder
    done = trainer.global_step / math.ceil(batches / trainer.accumulate_grad_batches)
    if done >= max_epochs:  # exact: whole epochs are whole multiples of the steps an epoch
        return None
    max_steps = cfg.trainer.get("max_steps")
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        why = f"trainer.max_steps={max_steps}"
    elif cfg.trainer.get("max_time") is not None:
        why = f"trainer.max_time={cfg.trainer.max_time}"
    else:
        why = "a callback (early stopping?)"
    return (f"stopped early: {done:.2f} of {max_epochs} epochs ({trainer.global_step} steps) by {why}; "
            "the numbers are of this shorter run")


def _not_best_val_tested(cfg: DictConfig, trainer: pl.Trainer, best_path: str,
                         val_scores: list[float]) -> str | None:
    """What test_acc is of, when it is not the best-val-acc checkpoint (the tutorial's protocol)."""
    if cfg.trainer.get("fast_dev_run"):
        return ("trainer.fast_dev_run: a smoke test of a few batches of train, val and test, no "
                "logger and no best-val checkpoint; its numbers are not a result")
    if not best_path:
        if val_scores:
            why = "no best-val checkpoint was kept (callbacks.model_checkpoint left out?)"
        elif cfg.trainer.get("limit_val_batches") == 0:
            why = "no validation ran (trainer.limit_val_batches=0)"
        else:
            why = "no validation ran (the run stopped before the end of its first epoch)"
        return f"test_acc is of the final weights, not of the best-val checkpoint: {why}"
    monitor = trainer.checkpoint_callback.monitor  # a best path: there is a ModelCheckpoint
    if monitor == "val/acc":
        return None
    # Lightning's own ModelCheckpoint (callbacks.model_checkpoint left out) monitors nothing
    which = "the last epoch's checkpoint" if monitor is None else f"the best checkpoint by {monitor}"
    return f"test_acc is of {which} ({Path(best_path).name}), not of the best-val-acc one"


def _not_all_tested(cfg: DictConfig, trainer: pl.Trainer, module, datamodule, test_acc, status: str) -> str | None:
    """What test_acc is over when trainer.limit_test_batches keeps it from the whole test split
    (the tutorial's 10,000 images), or why a finished run has none."""
    limit = cfg.trainer.get("limit_test_batches")
    if cfg.trainer.get("fast_dev_run"):  # its own warning says its numbers are no result
        return None
    if test_acc is None:
        if status == "ok" and not cfg.get("skip_test", False) and limit == 0:  # 0, 0.0 or false
            return f"not tested: trainer.limit_test_batches={limit}"
        return None
    test_x = getattr(datamodule, "test_x", None)
    total = 0 if test_x is None else len(test_x)
    if trainer.world_size == 1 and 0 < module.tested_images < total:
        return (f"test_acc is over {module.tested_images} of the {total} test images "
                f"(trainer.limit_test_batches={limit}), not all of them")
    return None


def _not_all_validated(cfg: DictConfig, trainer: pl.Trainer, module, datamodule) -> str | None:
    """What val_scores (and the best-val checkpoint's choice) are over when
    trainer.limit_val_batches keeps them from the whole val split: test_acc said so, they did not."""
    val_x = getattr(datamodule, "val_x", None)
    total = 0 if val_x is None else len(val_x)
    if trainer.world_size == 1 and 0 < module.validated_images < total and not cfg.trainer.get("fast_dev_run"):
        return (f"val_scores are over {module.validated_images} of the {total} val images "
                f"(trainer.limit_val_batches={cfg.trainer.get('limit_val_batches')}), not all of them")
    return None


def print_end(results: dict) -> None:
    """The end block: rounded numbers, the best epoch, the wall time, where everything is."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f} %"

    best = f" (epoch {results['best_val_epoch']})" if results["best_val_epoch"] >= 0 else ""  # none validated
    line = [f"{results['status']}: test acc {pct(results['test_acc'])}",
            f"best val acc {pct(results['best_val_acc'])}{best}",
            f"{results['epochs']} epoch{'' if results['epochs'] == 1 else 's'} in {results['seconds']:.1f} s"]
    out = Path(results["output_dir"])
    print(" · ".join(line), flush=True)
    for warning in results.get("warnings") or []:
        print(f"warning: {warning}", flush=True)
    print(f"results: {out / 'results.json'}", flush=True)
    if (out / "tensorboard").is_dir():
        # TensorBoard smooths every chart by 0.6 at first: a layer statistic logged every 200 steps
        # (3 points in a short run) is then drawn far from its logged values; the URL turns that
        # off. Two lines: each fits a terminal, and both can be pasted into a shell.
        print(f"tensorboard --logdir {out / 'tensorboard'}\n  # then open {TENSORBOARD_URL}", flush=True)
