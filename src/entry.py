"""What the entry scripts share: print the config, turn user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from src.errors import UserError

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # called outside a Hydra app (tests calling run_task directly)
        return False


def run_task(task: Callable[[DictConfig], object], cfg: DictConfig, print_config: bool = True):
    """Run `task(cfg)`. A UserError becomes one line on stderr and a results.json marked failed;
    in a single run the process exits with status 2, in a multirun the sweep goes on."""
    from src.training import print_config_tree, write_failure

    if print_config and cfg.get("print_config", True):
        print_config_tree(cfg)
    try:
        return task(cfg)
    except UserError as e:
        out = Path(cfg.paths.output_dir)
        if out.exists():
            write_failure(out, e, cfg)
        print(f"error: {e}", file=sys.stderr, flush=True)
        if is_multirun():
            return None
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        # A crash (a bug, OOM, a NaN check...) in one job of a multirun must not throw away
        # the others: keep the traceback in the job's log, mark the job failed, go on. The
        # sweep report lists it and the multirun exits 1 (src/hydra_callbacks.py).
        if not is_multirun():
            raise
        log.exception("job crashed")
        out = Path(cfg.paths.output_dir)
        if out.exists():
            write_failure(out, f"{type(e).__name__}: {e}", cfg)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return None


# ---------------------------------------------------------------------------------------------
# Before Hydra: the command line itself. Hydra's own "Could not find 'optim/adamw'" is a dozen
# lines; and a resume must land in the checkpoint's run dir with the run's own overrides.


def resolve_ckpt_path(path: str) -> Path:
    """`ckpt_path` may name the checkpoint or the run dir (then its checkpoints/last.ckpt)."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.ckpt", p / "last.ckpt"):
            if candidate.is_file():
                return candidate
    return p


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and not a.startswith("-")]


def check_group_options(argv: list[str], conf_dir: Path) -> None:
    """`group=option` for a group in conf/ must name a file there (sweeps: each of a,b,c)."""
    for arg in _overrides(argv):
        key, value = _override_key(arg), arg.split("=", 1)[1]
        group = conf_dir / key
        if arg.startswith("~") or "." in key or key.startswith("hydra") or not group.is_dir():
            continue
        if "(" in value or value in ("null", ""):  # sweep functions: choice(...), glob(...)
            continue
        available = sorted(str(p.relative_to(group).with_suffix("")) for p in group.rglob("*.yaml"))
        for option in value.split(","):
            if option.strip() not in available:
                raise UserError(f"{key}={option} is not an available option; available: "
                                f"{', '.join(available) or '(none)'}")


def _option_keys(group_dir: Path, option: str) -> set[str] | None:
    """Top-level keys an option file of a group provides, following its own `defaults` list
    within the group (trainer/cpu.yaml extends trainer/default.yaml). None if unknown."""
    from omegaconf import OmegaConf

    path = group_dir / f"{option}.yaml"
    if not path.is_file():
        return None
    node = OmegaConf.to_container(OmegaConf.load(path)) or {}
    keys = {k for k in node if k != "defaults"}
    for entry in node.get("defaults", []) or []:
        if isinstance(entry, str) and entry != "_self_":
            inherited = _option_keys(group_dir, entry)
            if inherited is None:
                return None
            keys |= inherited
        elif not isinstance(entry, str):
            return None  # a defaults entry that reaches outside the group: leave it to Hydra
    return keys


def check_group_keys(argv: list[str], conf_dir: Path, config_name: str = "train") -> None:
    """`group.key=value` must name a key the chosen option has (Hydra refuses it too, but in
    five lines); `+group.key=value` adds one. Skipped when an experiment or search preset may
    add keys of its own."""
    from omegaconf import OmegaConf

    overrides = _overrides(argv)
    keys = [_override_key(a) for a in overrides]
    if any(k in ("experiment", "hparams_search") for k in keys):
        return
    chosen: dict[str, str] = {}
    for entry in OmegaConf.load(conf_dir / f"{config_name}.yaml").get("defaults", []):
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for group, option in dict(entry).items():
                chosen[str(group)] = option
    for arg in overrides:
        key, value = _override_key(arg), arg.split("=", 1)[1]
        if "." not in key and (conf_dir / key).is_dir():
            chosen[key] = value.split(",")[0].strip()
    for arg, key in zip(overrides, keys, strict=True):
        if arg[0] in "+~" or "." not in key:
            continue
        group, sub = key.split(".", 1)
        option = chosen.get(group)
        if group == "hydra" or not (conf_dir / group).is_dir() or option in (None, "null"):
            continue
        known = _option_keys(conf_dir / group, str(option))
        top = sub.split(".", 1)[0].split("[", 1)[0]
        if known is not None and top not in known:
            raise UserError(f"{key} is not a key of {group}={option}; its keys: "
                            f"{', '.join(sorted(k for k in known if not k.startswith('_'))) or '(none)'} "
                            f"(add a new one with +{key}=…)")


def resume_argv(argv: list[str]) -> list[str]:
    """`ckpt_path=<run>/checkpoints/last.ckpt` (or `ckpt_path=<run dir>`) resumes *that* run:
    same run dir (so the same TensorBoard run and checkpoints), and the run's original overrides
    from <run>/.hydra/overrides.yaml, under the ones given now (which win, key by key)."""
    given = [a for a in _overrides(argv) if _override_key(a) == "ckpt_path"]
    if not given or "-m" in argv or "--multirun" in argv:
        return argv
    value = given[-1].split("=", 1)[1]
    if value in ("", "null"):
        return argv
    from src.errors import CheckpointError
    ckpt = resolve_ckpt_path(value)
    if not ckpt.is_file():
        raise CheckpointError(f"ckpt_path={value} does not exist; pass a run's checkpoints/last.ckpt "
                              "(or the run dir)")
    ckpt = ckpt.resolve()
    if ckpt.parent.name != "checkpoints":  # a checkpoint outside a run dir: resume in a new run
        return argv
    run_dir = ckpt.parent.parent
    user_keys = {_override_key(a) for a in _overrides(argv)}
    original = []
    saved = run_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        from omegaconf import OmegaConf

        original = [str(a) for a in OmegaConf.load(saved) if _override_key(str(a)) not in user_keys]
    argv = [argv[0], *original, *argv[1:]]
    if "hydra.run.dir" not in user_keys:
        argv.append(f"hydra.run.dir={run_dir}")
    print(f"resuming {ckpt} in {run_dir}" + (f" with its overrides: {' '.join(original)}" if original else ""),
          file=sys.stderr, flush=True)
    return argv


def prepare_argv(argv: list[str], conf_dir: Path) -> list[str]:
    """What train.py runs before hydra.main: a bad option or ckpt_path exits 2 with one line."""
    try:
        check_group_options(argv, conf_dir)
        check_group_keys(argv, conf_dir)
        return resume_argv(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
