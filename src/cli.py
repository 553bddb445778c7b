"""The command line of every entry script (train.py, eval.py, probe.py, surfaces.py, landscape.py).

Hydra composes the config (options, keys, `--config-dir`, `hydra.searchpath`, `+key=`, `~key`,
presets: all as Hydra documents); we only change how a failure reads. Any bad input — a
composition error, a constructor's ValueError, a missing file — becomes one `error: …` line and
exit status 2, and a run dir that exists gets a results.json with `status: failed`. A crash
(a bug) prints its traceback once, is marked failed too, and exits 1. SIGTERM and Ctrl-C end
any task with results.json `interrupted` and exit 128 + signal (StopSignals). In a multirun a
failed job is marked and the sweep goes on (the sweep report sets the exit status,
src/hydra_callbacks.py).

This module imports neither torch nor Lightning: a typo fails in about a second.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import src.resolvers  # registers ${lr_around:…}, ${job_dir_name:…} before Hydra composes
from src.config import ROOT
from src.errors import (
    CheckpointError,
    Interrupted,
    StopRequested,
    UserError,
    in_group,
    last_line,
    root_cause,
)
from src.utils import atomic_write_json, read_json_object, read_yaml_mapping

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_CRASH = 1
CONF = ROOT / "conf"


# ---------------------------------------------------------------------------------------------
# One line for any failure


def _is_user_error(e: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(e, (UserError, HydraException, OmegaConfBaseException)):
        return True
    return type(e).__name__ == "MisconfigurationException"  # Lightning's "bad argument"


def one_line(e: BaseException) -> str:
    """What went wrong, in one line that names the bad value and what is accepted."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(e, MissingConfigException) and e.options and e.missing_cfg_file:
        missing = str(e.missing_cfg_file)
        listed = re.search(r"Available options in '([^']+)'", str(e))  # `trainer=a/b`: group trainer
        group = listed[1] if listed and missing.startswith(f"{listed[1]}/") else missing.rpartition("/")[0]
        return f"{group}={missing[len(group) + 1:]} is not an available option; available: {', '.join(e.options)}"
    if isinstance(e, ConfigCompositionException):
        cause = e.__cause__
        parent, key = getattr(cause, "parent_node", None), getattr(cause, "full_key", None)
        if parent is not None and key and hasattr(parent, "keys"):
            return unknown_key(key, parent)
    if isinstance(e, OverrideParseException):
        lines = _lines(e)
        if lines and lines[0].startswith("Error parsing override "):
            lines[0] = f"cannot parse the override {lines[0].removeprefix('Error parsing override ')}:"
        else:
            lines.insert(0, "cannot parse an override:")
        return " ".join([*lines, "(overrides are key=value; quote a value with special characters: "
                                 "key='a,b')"])
    if isinstance(e, ConfigCompositionException):
        # `eval.py optim=sgd`: Hydra says "No match in the defaults list", which reads as a bug
        if no_group := re.match(r"Could not override '([^']+)'\. No match in the defaults list\.", str(e)):
            group, value = no_group[1], re.search(r"use \+\S+=(\S*)", str(e))
            script = Path(sys.argv[0]).name
            return (f"{group}: {script if script.endswith('.py') else 'this config'} chooses no {group} option, "
                    f"so there is none to change (+{group}={value[1] if value else '…'} would add one)")
        # `+experiment=x`: Hydra's advice is a line of a config file ("override experiment: x")
        if twice := re.match(r"Multiple values for (\S+)\. To override a value use 'override \S+: (.*)'", str(e)):
            return (f"+{twice[1]}={twice[2]}: {twice[1]} is in this config's defaults list already (null: none "
                    f"chosen); choose it without the +: {twice[1]}={twice[2]}")
        return " ".join(_lines(e))
    if isinstance(e, InstantiationException):
        text = str(e)
        group = text.rsplit("full_key:", 1)[1].strip().splitlines()[0] if "full_key:" in text else "config"
        return in_group(group, e)
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror[0].lower()}{e.strerror[1:]}{where}"
    if isinstance(e, UserError):
        return last_line(e)
    cause = root_cause(e)
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        # OmegaConf's message is its first line; the lines under it are `full_key:`, `object_type=`.
        first = str(cause).strip().splitlines()[0]
        return f"{cause.full_key}: {first}" if getattr(cause, "full_key", None) else first
    return f"{type(cause).__name__}: {last_line(cause)}"


def _lines(e: BaseException) -> list[str]:
    """Hydra's message without blank lines and its pointer to the docs."""
    return [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith("See https://")]


def unknown_key(key: str, parent) -> str:
    """`optim.lrr=0.1` or `lr=0.1`: name the keys there are, and the one the user most likely
    meant (a close spelling beside it, or the same name elsewhere in the config: `optim.lr`)."""
    group, _, name = key.rpartition(".")
    options = sorted(f.stem for f in (CONF / name).glob("*.yaml")) if not group and name else []
    if options:  # `surfaces.py optim.lr=0.5`: the optim group is there, no option of it chosen
        return (f"no {name} option is chosen in this config, so {name}.<key>=… has nothing to set; "
                f"choose one first ({name}=<option> {name}.<key>=…); options: {', '.join(options)}")
    keys = sorted(str(k) for k in parent.keys() if not str(k).startswith("_") and (group or k != "hydra"))
    chosen, others = _chosen_option(group, parent)
    guess = [f"{group}.{k}" if group else k for k in difflib.get_close_matches(name, keys, n=1)]
    having = [f"{group}={o}" for o, c in others.items() if name in c]
    if not guess and not having:
        root = parent
        while root._get_parent() is not None:
            root = root._get_parent()
        guess = [path for path in _key_paths(root) if path.rpartition(".")[2] == name]
    where = f"of {group}={chosen}" if chosen else f"of {group}" if group else "at the top level"
    meant = (f" (did you mean {' or '.join(guess[:3])}?)" if guess
             else f" ({', '.join(having[:3])} {'has' if len(having) == 1 else 'have'} it)" if having else "")
    there = (f"its keys: {', '.join(keys)}" if keys else "it takes no parameters" if chosen else "it has none")
    add = "" if having and not guess else f" (add a new one with +{key}=…)"  # not where it would be refused
    return f"{key} is not a key {where}{meant}; {there}{add}"


def _chosen_option(group: str, node) -> tuple[str | None, dict[str, dict]]:
    """Which option of conf/<group>/ `node` was composed from, and the group's other options by
    name. Hydra raises before it records its choices: the command line's `group=name` if it has
    one (the option may be the user's, from --config-dir), else the one file with the node's
    _target_ and keys (None when no file or several match)."""
    import yaml

    folder = CONF / group
    if not group or not folder.is_dir():
        return None, {}
    options = {f.stem: yaml.safe_load(f.read_text()) or {} for f in sorted(folder.glob("*.yaml"))}
    options = {o: c for o, c in options.items() if isinstance(c, dict)}
    given = [a.split("=", 1)[1] for a in _overrides(sys.argv) if override_key(a) == group]
    if given and re.fullmatch(r"[\w/.-]+", given[-1]):  # one name, not a sweep's list
        return given[-1], {o: c for o, c in options.items() if o != given[-1]}
    target, node_keys = node.get("_target_"), {str(k) for k in node.keys()}
    chosen = [o for o, c in options.items() if target and c.get("_target_") == target and set(c) == node_keys]
    if len(chosen) != 1:
        return None, options
    return chosen[0], {o: c for o, c in options.items() if o != chosen[0]}


def _key_paths(node, prefix: str = "") -> list[str]:
    """Every key's dotted path under a config node (Hydra's own settings left out)."""
    paths = []
    for k in node.keys():
        if str(k).startswith("_") or (not prefix and k == "hydra"):
            continue
        path = f"{prefix}{k}"
        paths.append(path)
        child = node._get_node(k)
        if hasattr(child, "keys") and not child._is_missing() and not child._is_none():
            paths += _key_paths(child, f"{path}.")
    return paths


def rank_zero() -> bool:
    """False in a DDP process other than global rank 0: rank 0 alone writes a run's results.json
    and says how it ended (another rank's view of a stop, or of rank 0 gone, overwrote it)."""
    rank_zero_only = getattr(sys.modules.get("lightning_utilities.core.rank_zero"), "rank_zero_only", None)
    if rank_zero_only is not None and hasattr(rank_zero_only, "rank"):
        return rank_zero_only.rank == 0
    return all((os.environ.get(key) or "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def mark_failed(out: Path, error: str, cfg=None, status: str = "failed", **extra) -> None:
    """results.json for a run that did not finish, so no reader mistakes it for a finished run.
    Only in a run dir that exists (none is made for it), and on rank 0; a disk that refuses is let
    be: it may be what failed the run, and the `error:` line still says so."""
    from omegaconf import OmegaConf

    if not out.is_dir() or not rank_zero():
        return
    payload = {"status": status, "error": error, **extra}
    if cfg is not None:
        try:
            payload["config"] = OmegaConf.to_container(cfg, resolve=False)
        except Exception:  # a config that fails to convert is part of what went wrong
            pass
    try:
        atomic_write_json(out / "results.json", payload)
    except OSError:
        pass


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # outside a Hydra app (tests calling run_task directly)
        return False


def job_overrides() -> list[str]:
    """This job's command-line overrides (a sweep job's own values), [] outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return [str(o) for o in HydraConfig.get().overrides.task]
    except ValueError:
        return []


def swept_keys() -> list[str]:
    """The keys this job's multirun sweeps: comma lists and sweep functions on its command line
    (`optim=sgd,adam`, `seed=range(1,4)`) and its preset's `hydra.sweeper.params`; [] otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not is_multirun():
        return []
    hc = HydraConfig.get()
    return src.resolvers.swept_keys_of(str(hc.sweep.dir), hc.sweeper.get("params") or {})


# ---------------------------------------------------------------------------------------------
# Inside the Hydra app: the task

def python_formatwarning(message, category, filename, lineno, line=None) -> str:
    """Python's own warning format. Not `warnings.formatwarning` as found at import: Lightning
    replaces it when it is imported, and this module may be imported after Lightning."""
    return warnings._formatwarnmsg_impl(warnings.WarningMessage(message, category, filename, lineno, None, line))


def quiet_frameworks() -> None:
    """No availability lines, adverts or known-harmless warnings from the libraries (`verbose=true`
    keeps them): a run's terminal shows the run."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning_fabric.utilities.rank_zero",
                 # `Received SIGTERM: 15` before our own line, and FakeTensor cache statistics at
                 # exit after it (Hydra's root logger shows INFO)
                 "pytorch_lightning.trainer.connectors.signal_connector", "torch._subclasses.fake_tensor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*LeafSpec.*", ".*smaller than the logging interval.*", ".*does not have many workers.*",
                    ".*Checkpoint directory .* exists and is not empty.*",
                    # Lightning warns only when no validation ran (limit_val_batches=0; after one
                    # it raises): results.json and the end line say what test_acc is then.
                    r".*ModelCheckpoint\(monitor=.*could not find the monitored key.*",
                    # A checkpoint from before train() left an inert step checkpoint out: its
                    # entry held nothing to restore.
                    r".*Please add the following callbacks: \[\"StepCheckpoint\{[^]]*'every_n_train_steps': 0,"
                    r"[^]]*\}\"\]\.$"):
        warnings.filterwarnings("ignore", message=message)
    warnings.formatwarning = one_line_warning


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings (callbacks/, src/: the diagnostics' alerts, a missing TensorBoard) as one
    `warning:` line, like the end block's; the libraries' keep Python's form with their source."""
    path = Path(filename).resolve()
    if path.is_relative_to(ROOT) and "site-packages" not in path.parts:
        return f"warning: {message}\n"
    return python_formatwarning(message, category, filename, lineno, line)


def logs_above_the_progress_bar() -> None:
    """In a terminal, log lines go through rich's console, the one Lightning's progress bar
    draws on, so a line is printed above the bar instead of glued onto it."""
    if not sys.stdout.isatty():
        return
    from rich import get_console
    from rich.logging import RichHandler

    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # Hydra's console handler, not its file
            root.removeHandler(handler)
            root.addHandler(RichHandler(console=get_console(), show_path=False, level=handler.level))


class StopSignals:
    """SIGTERM and Ctrl-C for a whole task. Outside a fit (start-up, the test, eval, probe, ...)
    they stop it at once. During a fit callbacks/interrupt.py is in charge and stops at the next
    batch boundary; Lightning's SIGTERM handler then calls this one too, which only notes it. A
    signal the shell ignores (a background job's Ctrl-C) stays ignored."""

    def __init__(self, outside_jobs: bool = False):
        self.pending: int | None = None
        self.raised: int | None = None  # a signal this handler raised into the running code
        self._previous: dict = {}
        self.outside_jobs = outside_jobs  # run_app's: raise what no job's `except Exception` can catch

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # the only place for handlers
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = previous
                    signal.signal(signum, self)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def __call__(self, signum, frame) -> None:
        import signal

        if signal.getsignal(signum) is self:
            self.raised = self.raised or signum
            if self.outside_jobs:
                raise StopRequested(Interrupted(signum, at_once=True))
            raise Interrupted(signum, at_once=True)
        self.pending = self.pending or signum


def run_task(task: Callable, cfg):
    """`task(cfg)`, with every failure and every stop marked in the run dir and said in one line."""
    import signal

    if not cfg.get("verbose", False):
        quiet_frameworks()
    logs_above_the_progress_bar()
    _start_afresh(cfg)
    stop = StopSignals()
    started = time.time()
    try:
        with stop:
            value = task(cfg)
    except (Interrupted, KeyboardInterrupt) as e:
        stopped = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
        if not stopped.reported and _finished_here(Path(cfg.paths.output_dir), started):
            # after the task wrote its finished results.json (the last lines of train()): it stands
            print(f"error: {stopped} after the run had finished (its results.json is complete)"
                  + (f"; {_continue_sweep()}" if is_multirun() else ""), file=sys.stderr, flush=True)
            sys.exit(stopped.exit_code)
    except SystemExit as e:
        if type(e).__name__ != "SIGTERMException":  # Lightning's SIGTERM stop in its test loop
            raise
        stopped = Interrupted(signal.SIGTERM)
    except Exception as e:
        if stop.raised is None:  # a signal during a fit is only noted here: it stops at a batch boundary
            _failed(e, cfg)
            return None  # a multirun's other jobs go on; the sweep report lists this one
        # Our Interrupted, raised into whatever ran (mid-import: numpy's lazy attributes), was
        # caught there as an Exception and became another error (a RecursionError): the run was
        # stopped, not broken. Its traceback is logged at debug level (`hydra.verbose=true`).
        log.debug("after %s", signal.Signals(stop.raised).name, exc_info=True)
        stopped = Interrupted(stop.raised)
    else:
        if stop.pending is None:
            return value
        # The signal came while Lightning's handler was in charge and nothing stopped on it (the
        # test's last batch): the run finished and its results.json says so.
        stopped = Interrupted(stop.pending)
        print(f"error: {stopped} after the run had finished (its results.json is complete)",
              file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code)
    if rank_zero():  # under DDP rank 0 says how the run ended
        print(f"error: {interrupted_line(stopped, cfg)}", file=sys.stderr, flush=True)
    sys.exit(stopped.exit_code)  # also in a multirun: the whole process was asked to stop


def _start_afresh(cfg) -> None:
    """eval.py, probe.py, landscape.py and surfaces.py resume nothing: what an earlier try left in
    their run dir goes first. Its results.json (failed, interrupted) made a rerun that succeeded
    read as failed (`eval.py -m` / `surfaces.py -m` continued in the same sweep dir: exit 1), and
    surfaces.py's TensorBoard events of that try showed beside the new ones. train.py keeps its
    own: they are what a resume or a continued sweep reads."""
    import shutil

    if not _writes_no_checkpoints(cfg):
        return
    out = Path(cfg.paths.output_dir)
    (out / "results.json").unlink(missing_ok=True)
    if "surface" in cfg:
        shutil.rmtree(out / "tensorboard", ignore_errors=True)


def _writes_no_checkpoints(cfg) -> bool:
    """eval.py, landscape.py, probe.py and surfaces.py (its config has `surface`): they resume nothing."""
    return cfg.get("task_name") in ("eval", "landscape", "probe") or "surface" in cfg


def _failed(e: Exception, cfg) -> None:
    """A task's failure: marked in its results.json and said in one line; exits, but in a multirun."""
    user = _is_user_error(e) or isinstance(e, OSError)
    message = one_line(e)
    mark_failed(Path(cfg.paths.output_dir), message, cfg)
    if not user:
        log.exception("crashed")  # the traceback, once: to the terminal and the job's log file
    if rank_zero():  # another DDP rank's failure is in its traceback; rank 0 says how the run ended
        print(f"error: {message}", file=sys.stderr, flush=True)
    if not is_multirun():
        sys.exit(EXIT_USER_ERROR if user else EXIT_CRASH)


def _finished_here(out: Path, since: float) -> bool:
    """results.json in `out` says `ok` or `diverged` and was written by this task (after `since`)."""
    path = out / "results.json"
    try:
        return path.stat().st_mtime >= since - 1 and read_json_object(path).get("status") in ("ok", "diverged")
    except OSError:
        return False


def _command_line() -> list[str]:
    """This process's command line as a user would type it again."""
    return ["python", Path(sys.argv[0]).name, *sys.argv[1:]]


def _sweep_command(sweep_dir=None, command: list[str] | None = None) -> list[str]:
    """This multirun's command line (or `command`), with its sweep dir: run again, it continues
    the sweep."""
    command = list(command or _command_line())
    if not any(a.startswith("hydra.sweep.dir=") for a in command):
        if sweep_dir is None:
            from hydra.core.hydra_config import HydraConfig

            sweep_dir = HydraConfig.get().sweep.dir
        command.append(override("hydra.sweep.dir", sweep_dir))
    return command


def _continue_sweep() -> str:
    import shlex

    return f"continue the sweep: {shlex.join(_sweep_command())}"


def again_command() -> str:
    """This process's command line, to start a run again that has no checkpoint to resume from."""
    import shlex

    return shlex.join(_command_line())


def interrupted_line(stopped: Interrupted, cfg) -> str:
    """What to do next, and (unless train() already wrote it) results.json that says so. In a
    multirun the next step is the same sweep again: its finished jobs are skipped, a job with a
    last.ckpt resumes (src/training.py continue_sweep_job)."""
    import shlex

    out = Path(cfg.paths.output_dir)
    resume = resume_command(out)
    command = _command_line()
    checkpoint = (out / "checkpoints" / "last.ckpt").is_file()
    # Only a checkpoint makes a run resumable: a second Ctrl-C in the first epoch stops before
    # any (train() said so too), and `ckpt_path=` on that dir is then refused
    resumable = checkpoint
    if is_multirun():
        command = _sweep_command()
        next_step = f"continue the sweep: {shlex.join(command)}"
    else:
        next_step = f"resume with: {resume}" if resumable else f"start it again: {shlex.join(command)}"
    # "before the first checkpoint" would promise one where the app writes none
    error = str(stopped) if resumable or _writes_no_checkpoints(cfg) else f"{stopped} before the first checkpoint"
    if not stopped.reported:  # else train() wrote results.json, with `resume`
        extra = {"resume": resume} if checkpoint else {"again": shlex.join(command)}
        mark_failed(out, error, cfg, status="interrupted", signal=stopped.signal_name, **extra)
    return f"{error}; {next_step}"


# ---------------------------------------------------------------------------------------------
# Around the Hydra app: composition errors, resume


def run_app(hydra_main: Callable, resume: bool = False, path_keys: tuple[str, ...] = ("ckpt_path",)) -> None:
    """Call a `@hydra.main` function; Hydra's own errors (unknown option or key, bad override
    syntax, an output dir that cannot be made) become one line and exit 2.
    HYDRA_FULL_ERROR=1 set by the user keeps Hydra's full traceback."""
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its five lines
    if guard := _sweep_guard():  # from an earlier app in this process (tests)
        guard.started_sweep.clear()
    kept: RunRecords | None = None
    typed = _command_line()  # what to run again after a stop outside any job (before resume_argv)
    try:
        sys.argv = quote_path_values(sys.argv, path_keys)
        refuse_a_run_dir_of_another_app(sys.argv)
        if resume:
            refuse_a_used_run_dir(sys.argv)
            sys.argv = resume_argv(sys.argv)
            kept = RunRecords.of_the_resumed_run(sys.argv)
        # SIGTERM and Ctrl-C where no job is in charge (start-up, between a sweep's jobs, before its
        # report) stop the app with one line; each job's own (run_task) take over inside it.
        with StopSignals(outside_jobs=True):
            hydra_main()
    except (StopRequested, Interrupted) as stop:  # outside every job: nothing of a run to mark
        import shlex

        e = stop.interrupted if isinstance(stop, StopRequested) else stop
        if kept:
            kept.restore()
        guard = _sweep_guard()
        sweep = guard.started_sweep.get("dir") if guard else None
        where, what, command = (("between the sweep's jobs", "continue the sweep", _sweep_command(sweep, typed))
                                if sweep is not None else ("before the run started", "start it again", typed))
        print(f"error: {e} {where}; {what}: {shlex.join(command)}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except SystemExit as e:
        # a resume refused for bad input, or stopped before it trained: the run as it was
        if kept and (e.code == EXIT_USER_ERROR or (isinstance(e.code, int) and e.code > 128)):
            kept.restore()
        raise
    except Exception as e:
        if kept:  # Hydra refused an override after it wrote .hydra/: the run is as it was
            kept.restore()
        refused = _refused_by_config_library(e)
        if guard := _sweep_guard():  # a multirun refused before its first job
            guard.forget_sweep_that_started_no_job()
        if not user_wants_traceback and (line := report_of_a_stopped_sweep(e)):
            print(f"error: {line}", file=sys.stderr, flush=True)
            sys.exit(1)  # as a sweep with a failed job: the report is on disk
        if user_wants_traceback or not (_is_user_error(e) or isinstance(e, OSError) or refused):
            raise
        message = one_line(e)
        print(f"error: {'an override could not be applied: ' if refused else ''}{message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    if _this_process_is_a_script_of_ours():  # not a test running one in-process (runpy)
        let_a_finished_run_exit()


def _this_process_is_a_script_of_ours() -> bool:
    """`python train.py …`: the interpreter's own command line names the script __main__ runs. A
    test that runs a script with runpy has __main__ replaced but pytest on that command line (a
    pytest that ignored SIGTERM and Ctrl-C from there on failed a later test)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main is None or Path(main).resolve().parent != ROOT:
        return False
    return any(a.endswith(".py") and Path(a).resolve() == Path(main).resolve() for a in sys.orig_argv[1:])


def let_a_finished_run_exit() -> None:
    """From a finished run (or sweep) to the process's exit, Python's shutdown takes ~1.5 s with
    torch loaded, and a SIGTERM or Ctrl-C there killed the process with no line: exit 143, a job
    cut short to a scheduler, though every result was written. They are ignored from here: the
    process ends as it was ending, with its own status. (A Python handler cannot say it: the
    interpreter's finalization puts the default action back, which kills; an ignored signal stays
    ignored.)"""
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def _raised_by_the_sweeper(e: BaseException) -> bool:
    """Raised inside Optuna or a Hydra sweeper plugin, not by a job or by Hydra's composition."""
    tb, module = e.__traceback__, ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__"))
        tb = tb.tb_next
    return module.split(".")[0] in ("optuna", "hydra_plugins")


def report_of_a_stopped_sweep(e: BaseException) -> str | None:
    """A sweeper that gives up after its jobs ran (Optuna when no trial finished with a value:
    every one diverged or failed) skips Hydra's end-of-multirun callbacks, so the sweep report is
    written here and the failure said in one line. None when it is not that case."""
    guard = _sweep_guard()
    sweep_dir = guard.started_sweep.get("dir") if guard else None
    if sweep_dir is None or not _raised_by_the_sweeper(e) or not sweep_dir.is_dir():
        return None
    if not any(p.is_dir() and (p / ".hydra").is_dir() for p in sweep_dir.iterdir()):
        return None
    from src.report import find_jobs, load_job, write_report

    why = one_line(e)
    if "No trials are completed yet" in why:
        why = "no trial finished with a value (a diverged or failed trial has none), so Optuna has no best one"
    if not guard.started_sweep.get("report", True):  # the user turned the report off
        jobs = [load_job(p) for p in find_jobs(sweep_dir)]
        where = f"its jobs are in {sweep_dir}"
    else:
        jobs = write_report(sweep_dir, guard.started_sweep.get("tolerance_pt", 1.0))
        where = f"report: {sweep_dir / 'summary.md'}"
    counts = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    held = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"the sweeper stopped: {why}; the sweep dir holds {len(jobs)} jobs ({held}), {where}"


class RunRecords:
    """What a resume attempt overwrites before it can fail on bad input: the run's .hydra/ files
    (Hydra writes them at the job's start, and the next plain resume reads its overrides back from
    there) and its results.json, with the checkpoints' names, sizes and times to tell whether the
    attempt trained."""

    NAMES = (".hydra/overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", "results.json")

    def __init__(self, run: Path, files: dict[Path, bytes | None]):
        self.run, self.files = run, files
        self.checkpoints = self._checkpoints_state()

    @classmethod
    def of_the_resumed_run(cls, argv: list[str]) -> RunRecords | None:
        """The records of the run dir a resume goes into; None when this is no such resume."""
        values = {override_key(a): _value(a) for a in _overrides(argv)}
        run = values.get("hydra.run.dir")
        if values.get("ckpt_path") in (None, "", "null") or not run or not Path(run).is_dir():
            return None
        files = {}
        for name in cls.NAMES:
            path = Path(run) / name
            try:
                files[path] = path.read_bytes() if path.is_file() else None  # None: there was none
            except OSError:
                return None  # unreadable: leave everything to the run itself
        return cls(Path(run), files)

    def _checkpoints_state(self) -> str:
        try:
            return repr(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                               for p in (self.run / "checkpoints").glob("*.ckpt")))
        except OSError:
            return ""

    def restore(self) -> None:
        """Put the records back: a resume refused for bad input (`optim.lr=abc`, a damaged
        last.ckpt) changed nothing about the run. It overwrote an `ok` results.json with `failed`
        and kept the bad override for every later resume. Not once it trained: a failure after that
        (a full disk at a checkpoint) is the run's own ending, and its results.json says so."""
        from src.utils import atomic_write_bytes

        if self._checkpoints_state() != self.checkpoints:
            return
        for path, content in self.files.items():
            try:
                if content is None:
                    path.unlink(missing_ok=True)
                elif not path.is_file() or path.read_bytes() != content:
                    atomic_write_bytes(path, content)
            except OSError:
                pass


def _sweep_guard():
    """src.hydra_callbacks once a Hydra app of this process has loaded it (its EmptySweepGuard
    notes what a multirun made), else None: a typo need not import it."""
    return sys.modules.get("src.hydra_callbacks")


def _refused_by_config_library(e: BaseException) -> bool:
    """A plain ValueError/TypeError/KeyError/IndexError raised inside OmegaConf or Hydra while they
    compose the user's overrides (`model.hidden_sizes.x=3` indexes a list with `x`): bad input,
    though not one of their own exception types."""
    if not isinstance(e, (ValueError, TypeError, KeyError, IndexError)) or e.__traceback__ is None:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__"))
    return module.split(".")[0] in ("omegaconf", "hydra")


def override_key(arg: str) -> str:
    """The key of an override: `optim.lr` of `+optim.lr=0.1`."""
    return arg.partition("=")[0].lstrip("+~")


def _value(arg: str) -> str:
    """An override's value as Hydra reads it: without the quotes around a quoted one."""
    value = arg.split("=", 1)[1]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0])
    return value


def override(key: str, value) -> str:
    """`key=value` as Hydra will read it back: the value quoted when it holds a character its
    override grammar gives a meaning to (a sweep job's dir is named `0_optim=sgd,seed=1`)."""
    value = str(value)
    if re.fullmatch(r"[\w./:@+-]*", value):
        return f"{key}={value}"
    return f"{key}='" + value.replace("'", "\\'") + "'"


def quote_path_values(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """Sweep job dirs are named by their overrides (`6_init=kaiming,optim=adam`), which Hydra's
    override grammar would split at `=` and `,` (`error: cannot parse an override`): the value of
    each of `keys` (`ckpt_path`; landscape.py's `run`, `runs`, `checkpoint`) is quoted for it,
    unless it is a list. In a multirun (`-m`), a value made of several existing paths
    (`run=<dir>,<dir>`; `checkpoint=last,best`) is a sweep over them: each is quoted by itself."""
    multirun = any(a in ("-m", "--multirun") or a.lower() == "hydra.mode=multirun" for a in argv)
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in keys and value and value[0] not in "'\"[" \
                and any(ch in value for ch in "=,()[]{} "):
            parts = swept_paths(key.lstrip("+"), value) if multirun else None
            arg = f"{key}={','.join(_quoted(v) for v in parts or [value])}"
        out.append(arg)
    return out


def swept_paths(key: str, value: str) -> list[str] | None:
    """The paths a comma-separated value lists, when there are several and every piece is one:
    a job dir's name holds commas too, so the pieces are grouped into existing paths (None: it
    is one path, or not only paths, and stays whole)."""
    pieces = value.split(",")
    if len(pieces) < 2 or Path(value).expanduser().exists():
        return None

    def names_one(text: str) -> bool:
        return Path(text).expanduser().exists() or (key == "checkpoint" and text in ("last", "best"))

    # splits[i]: pieces[:i] as a list of paths, where there is one (the longest last path first)
    splits: dict[int, list[str]] = {0: []}
    for end in range(1, len(pieces) + 1):
        for start in range(end):
            if start in splits and names_one(text := ",".join(pieces[start:end])):
                splits[end] = [*splits[start], text]
                break
    found = splits.get(len(pieces))
    return found if found is not None and len(found) > 1 else None


def _quoted(value: str) -> str:
    if any(ch in value for ch in "=,()[]{} "):
        quote = "'" if "'" not in value else '"'
        return f"{quote}{value}{quote}"
    return value


def shell_words(*words: str) -> str:
    """A command line to copy: each word as the shell needs it, in double quotes where it can
    be (`"ckpt_path='…'"` reads better than shlex's '"'"' splices)."""
    import shlex

    def word(w: str) -> str:
        if re.fullmatch(r"[\w./:@+=,-]*", w):
            return w
        return f'"{w}"' if not re.search(r'["$`\\!]', w) else shlex.quote(w)

    return " ".join(word(w) for w in words)


def resume_command(run_dir) -> str:
    return shell_words("python", "train.py", override("ckpt_path", run_dir))


def _overrides(argv: list[str]) -> list[str]:
    """The command line's `key=value` overrides (not flags such as `--config-dir=…`)."""
    return [a for a in argv[1:] if "=" in a and not a.startswith("-")]


def refuse_a_run_dir_of_another_app(argv: list[str]) -> None:
    """`probe.py hydra.run.dir=<a train.py run>` would overwrite that run's results.json and
    .hydra/ (its own probe.png too): refused before Hydra writes anything. Hydra names the app
    that made a run dir in its .hydra/hydra.yaml (hydra.job.name: train, eval, probe, ...)."""
    if "-m" in argv or "--multirun" in argv:
        return
    values = {override_key(a): _value(a) for a in _overrides(argv)}
    if not values.get("hydra.run.dir"):
        return
    run = Path(values["hydra.run.dir"])
    hydra = read_yaml_mapping(run / ".hydra" / "hydra.yaml").get("hydra")
    job = hydra.get("job") if isinstance(hydra, dict) else None  # a hand-edited file: no verdict
    made_by, app = (job.get("name") if isinstance(job, dict) else None), Path(argv[0]).stem
    if made_by and made_by != app:
        raise UserError(f"hydra.run.dir={run} holds a run of {made_by}.py; {app}.py would overwrite its results.json "
                        "and .hydra/: give a new hydra.run.dir (or leave it out)")


def refuse_a_used_run_dir(argv: list[str]) -> None:
    """A new run given a `hydra.run.dir` that holds another run would overwrite its results.json
    and .hydra/ and mix its checkpoints and TensorBoard events into it: refused before Hydra
    writes anything. A run with no checkpoint that failed on bad input or was stopped in its first
    seconds may be started again there (its results.json says to); a sweep continues its own
    dirs (src/training.py continue_sweep_job). Resuming the run in that dir is what `ckpt_path`
    does; a checkpoint of another run resumed into it is refused as a new run would be."""
    if "-m" in argv or "--multirun" in argv:
        return
    values = {override_key(a): _value(a) for a in _overrides(argv)}  # the last one of each key, as Hydra
    if not values.get("hydra.run.dir"):
        return
    run = Path(values["hydra.run.dir"])
    if values.get("ckpt_path") not in (None, "", "null"):
        from src.checkpointing import resolve_ckpt_path  # lazy, as in resume_argv: it imports torch

        ckpt = resolve_ckpt_path(values["ckpt_path"]).resolve()
        if not ckpt.is_file() or (ckpt.parent.name == "checkpoints" and ckpt.parent.parent == run.resolve()):
            return  # resuming the run that is in that dir; or no checkpoint, which resume_argv says
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    status = read_json_object(run / "results.json").get("status")
    if not checkpoints and status in (None, "failed", "interrupted"):
        return
    finished = status in ("ok", "diverged")
    what = [f"status {status}" if status else "no results.json"]
    what += [f"{len(checkpoints)} checkpoint{'s' if len(checkpoints) != 1 else ''}"] if checkpoints else []
    resume = f"resume it with: {resume_command(run)}; or " if "last.ckpt" in checkpoints and not finished else ""
    raise UserError(f"hydra.run.dir={run} already holds a {'finished' if finished else 'stopped'} run "
                    f"({', '.join(what)}); {resume}give a new hydra.run.dir, or delete that one: a new run "
                    "there would overwrite its results.json and mix their checkpoints")


def resume_argv(argv: list[str]) -> list[str]:
    """`ckpt_path=<run>/checkpoints/last.ckpt` (or `ckpt_path=<run dir>`) resumes *that* run:
    same run dir (so the same TensorBoard run and checkpoints), and the run's original overrides
    from <run>/.hydra/overrides.yaml, under the ones given now (which win, key by key)."""
    overrides = _overrides(argv)
    given = [a for a in overrides if override_key(a) == "ckpt_path"]
    if not given or "-m" in argv or "--multirun" in argv:
        return argv
    value = _value(given[-1])
    if value in ("", "null"):
        return argv
    # Lazy: torch (for the checkpoint format) is only worth importing when resuming.
    from src.checkpointing import missing_checkpoint_message, resolve_ckpt_path

    ckpt = resolve_ckpt_path(value)
    if not ckpt.is_file():
        raise CheckpointError(missing_checkpoint_message(value))
    ckpt = ckpt.resolve()
    if ckpt.parent.name != "checkpoints":  # a checkpoint outside a run dir: resume in a new run
        return argv
    run_dir = ckpt.parent.parent
    user_keys = {override_key(a) for a in overrides}
    original = []
    saved = run_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        import yaml

        original = [str(a) for a in yaml.safe_load(saved.read_text()) or [] if override_key(str(a)) not in user_keys]
    argv = [argv[0], *original, *argv[1:]]
    if "hydra.run.dir" not in user_keys:
        argv.append(override("hydra.run.dir", run_dir))
    print(f"resuming {ckpt} in {run_dir}" + (f" with its overrides: {' '.join(original)}" if original else ""),
          file=sys.stderr, flush=True)
    return argv


# ---------------------------------------------------------------------------------------------
# What a person sees first


def start_line(cfg) -> str:
    """The choices a user makes, on as few lines of 80 columns as they fit: `optim=sgd_mom lr=0.1
    momentum=0.9 · init=xavier · model relu [512,256,256,128] · 40 epochs` and `  accelerator=cpu ·
    seed 42`."""
    def fmt(v) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v).replace(" ", "")

    optim, init = cfg.get("optim") or {}, cfg.get("init") or {}
    optim_args = [f"{k}={fmt(optim[k])}" for k in ("lr", "momentum", "weight_decay")
                  if k in optim and not (k == "weight_decay" and not optim[k])]
    init_args = [f"{k}={fmt(v)}" for k, v in init.items() if not str(k).startswith("_")]
    model = cfg.get("model") or {}
    from omegaconf import ListConfig

    sizes = model.get("hidden_sizes", [])
    sizes = list(sizes) if isinstance(sizes, (list, tuple, ListConfig)) else sizes  # 5: the model says why
    parts = [" ".join([f"optim={cfg.get('optim_name') or '?'}", *optim_args]),
             " ".join([f"init={cfg.get('init_name') or '?'}", *init_args]),
             f"model {model.get('act_fn')} {fmt(sizes)}"]
    if "trainer" in cfg:
        epochs = cfg.trainer.max_epochs
        parts += [f"{epochs} epoch{'' if epochs == 1 else 's'}", f"accelerator={cfg.trainer.accelerator}"]
    parts.append(f"seed {cfg.seed}")
    # 80 columns a line, broken between parts: one long line wrapped mid-word in a terminal
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + len(" · ") + len(part) <= 80:
            lines[-1] += f" · {part}"
        else:
            lines.append(f"  {part}")
    return "\n".join(lines)


PRINT_CONFIG_OFF = ("false", "none", "off", "null")  # print_config values that print nothing
PRINT_CONFIG_VALUES = ("compact", "full", *PRINT_CONFIG_OFF)


def print_start(cfg) -> None:
    """The start block: one line of choices and the run dir; the whole tree with print_config=full."""
    mode = str(cfg.get("print_config", "compact")).lower()
    if mode in PRINT_CONFIG_OFF or not rank_zero():  # DDP: rank 1 printed the block a second time
        return
    if mode == "full":
        import rich
        import rich.syntax
        import rich.tree
        from omegaconf import DictConfig, OmegaConf

        tree = rich.tree.Tree("config", style="dim")
        for field, value in cfg.items():
            text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
            tree.add(str(field), style="bold").add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
        rich.print(tree)
    print(start_line(cfg), flush=True)
    print(f"run dir: {cfg.paths.output_dir}", flush=True)
