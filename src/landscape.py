"""Loss landscape of trained runs (Li et al., "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018), with the run's own recorded path on it. What `python landscape.py` runs.

    landscape(cfg)
      -> resolve_runs           run=<dir> | runs=[<dir>,...] | runs=<sweep dir>
      -> drawable               a sweep's jobs with no checkpoint to draw (diverged early) skipped
      -> load_run               checkpoint weights, what they were trained with (the checkpoint's stamp),
                                the first try's initial weights, the recorded path
      -> directions             random (filter-normalised, seeded) or pca (of the recorded path)
      -> evaluate_family        the grid: loss and accuracy of w + a*d1 + b*d2 on a fixed subset
      -> interpolation          (1-a)*w_init + a*w_final, a in [-0.5, 1.5], train and val loss
      -> honesty checks         grid centre = checkpoint loss; a=0/1 = init/final losses;
                                the model's weights unchanged
      -> landscape.json, landscape_2d.png, landscape_3d.png, interpolation.png (output dir),
         the same figures in each run's TensorBoard dir, if its own logger was TensorBoard

Fast because nothing is evaluated one parameter set at a time. For a family of parameter sets
base + sum_k c_k d_k (the grid: k = 2; the interpolation: base 0, d = w_init, w_final):
  * the first Linear sees the same images for every set, so its output is affine in c:
    z(c) = z_base + sum_k c_k z_k, three matmuls for the whole grid (this layer holds 63 % of
    the MLP's weights and multiply-adds);
  * the later Linears get one weight matrix per set, built by one einsum, and run as one
    batched matmul (torch.baddbmm) over a chunk of sets;
  * chunks of sets and of images keep the memory bounded (see `memory_plan`).
benchmarks/landscape_grid.py compares this with a plain loop and with torch.func.vmap.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from src.errors import CheckpointError, ConfigError, integer
from src.utils import atomic_savefig, atomic_write_json, read_json_object, read_yaml_mapping

log = logging.getLogger(__name__)

WEIGHT_PATH_HINT = ("train with the weight-path recorder on: `python train.py callbacks=with_path` "
                    "(callbacks/weight_path.py, conf/callbacks/weight_path.yaml)")
CENTRE_TOLERANCE = 1e-5  # relative: grid centre vs the checkpoint's loss, interpolation ends
PCA_MIN_POINTS = 3  # two offsets from w_final span at most the plane itself: nothing to choose
FEW_POINTS_HINT = ("train more epochs, or record more often: callbacks.weight_path.every_n_steps=N "
                   "(the default records the init and the end of each epoch)")


# ---------------------------------------------------------------------------------------------
# Parameters as flat vectors (the recorded path stores them this way)


@dataclass
class Layout:
    """Names and shapes of the network's parameters, in `net.named_parameters()` order."""

    names: list[str]
    shapes: list[tuple[int, ...]]

    @classmethod
    def of(cls, net: nn.Module) -> Layout:
        return cls([n for n, _ in net.named_parameters()], [tuple(p.shape) for _, p in net.named_parameters()])

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat vector (or of the last dim of a [K, P] matrix) as the parameters."""
        sizes = [math.prod(s) for s in self.shapes]
        parts = torch.split(flat, sizes, dim=-1)
        return [p.reshape(*flat.shape[:-1], *s) for p, s in zip(parts, self.shapes, strict=True)]

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].detach().reshape(-1).float().cpu() for n in self.names])


# ---------------------------------------------------------------------------------------------
# A run: weights, config, initial weights, recorded path


@dataclass
class Run:
    name: str
    dir: Path
    checkpoint: Path
    net: nn.Module                      # built from the checkpoint, eval mode, on the device
    layout: Layout
    final: torch.Tensor                 # [P] float32, the checkpoint's weights
    config: dict                        # the run's latest config as saved (`saved_config`): its loggers
    global_step: int
    epochs_done: float                  # at the checkpoint: 3.0 after the third epoch
    init: torch.Tensor | None = None    # [P] float32
    init_source: str = ""
    path: dict | None = None            # callbacks.weight_path.load_path, first/last made exact
    label: str = ""
    no_path: str = ""                   # why `path` is None: what directions=auto tells the user
    warnings: list[str] = field(default_factory=list)  # into landscape.json, beside the run's numbers
    trained: TrainedWith | None = None  # what the checkpoint's weights were trained with: labels, data


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """The file `checkpoint=` names in a run dir, whether or not it is there: `last` (the end of
    training, where the recorded path ends), `best` (ModelCheckpoint's best-*.ckpt) or a file path."""
    ckpts = run_dir / "checkpoints"
    if which == "last":
        return ckpts / "last.ckpt"
    if which == "best":
        from src.checkpointing import best_rank

        # the one the run tested (results.json: whatever it monitored), else by the val_acc in the names
        named = read_json_object(run_dir / "results.json").get("best_checkpoint")
        own = ckpts / Path(named).name if isinstance(named, str) and named else None
        best = sorted(ckpts.glob("best-*.ckpt"), key=best_rank)
        return own if own is not None and own.is_file() else best[-1] if best else ckpts / "best-*.ckpt"
    path = Path(which)
    if not path.is_absolute() and (ckpts / path).is_file():  # checkpoint=last.ckpt: a file of the run's
        path = ckpts / path
    if path.resolve().parent != ckpts.resolve():
        # another run's file would be drawn under this run's name
        raise ConfigError(f"checkpoint={which} is not one of {run_dir}'s checkpoints; accepted: last, best, "
                          f"or a file in {ckpts} (to draw that file, pass it as run=<file>)")
    return path


def why_no_checkpoint(run_dir: Path) -> str | None:
    """Why a run dir holds no checkpoint at all, as its results.json says (`diverged before its
    first checkpoint (loss became nan at step 3 ...)`); None when it has a .ckpt, or says nothing."""
    from src.report import status_of

    if any((run_dir / "checkpoints").glob("*.ckpt")):
        return None
    results = read_json_object(run_dir / "results.json")
    if not results:
        return None
    status = status_of(results)
    error = str(results.get("error") or "").strip().splitlines()
    detail = f" ({error[0].strip()})" if error else ""
    if status in ("diverged", "failed", "interrupted"):
        return f"{status} before its first checkpoint{detail}"
    return f"ended {status} (results.json), yet its checkpoints/ holds no .ckpt{detail}"


def skip_reason(run_dir: Path, which: str) -> str | None:
    """Why a job of a sweep dir has no checkpoint to draw (it is then skipped); None if it has one."""
    path = checkpoint_path(run_dir, which)
    if path.is_file():
        return None
    if (why := why_no_checkpoint(run_dir)) is not None:
        return why
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        return f"no checkpoint {path.name} (checkpoint={which})"
    return "no checkpoint and no results.json: killed before its first checkpoint, or still running"


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """The file `checkpoint=` names in a run dir (see `checkpoint_path`); one error line when it is
    not there, saying why where the run's results.json knows, and what is accepted."""
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        why = why_no_checkpoint(run_dir)
        accepted = {
            "last": "a run dir of train.py with checkpoints/last.ckpt (its always-on ModelCheckpoint writes "
                    "it after each epoch), or a .ckpt file as run=<file>",
            "best": "checkpoint=last, a run dir of train.py with a checkpoints/best-*.ckpt (written when "
                    "validation improves), or a .ckpt file as run=<file>",
        }.get(which, f"checkpoint=last, best, or a file in {run_dir / 'checkpoints'}")
        raise CheckpointError(f"{run_dir} has no checkpoint {path.name} (checkpoint={which})"
                              f"{f': the run {why}' if why else ''}; accepted: {accepted}")
    return path


def resolve_runs(cfg: DictConfig) -> list[tuple[Path, Path | None, Path | None]]:
    """(run dir, checkpoint file or None, the sweep dir it is a job of or None) for
    `run=<dir or .ckpt>`, `runs=[...]` or `runs=<sweep dir>`."""
    run, runs = cfg.get("run"), cfg.get("runs")
    if run is None and runs is None:
        raise ConfigError("pass a trained run: landscape.py run=<run dir> (or runs=[<dir>,<dir>] or "
                          "runs=<sweep dir>)")
    if run is not None and runs is not None:
        raise ConfigError("pass either run=<run dir> or runs=[...], not both")
    items = [run] if run is not None else (list(runs) if isinstance(runs, (list, ListConfig)) else [runs])
    if not items or any(item is None or str(item).strip() == "" for item in items):
        given = (f"run={run!r}" if run is not None else
                 f"runs={OmegaConf.to_container(runs) if isinstance(runs, ListConfig) else runs!r}")
        raise ConfigError(f"{given} names no run: pass run=<run dir>, runs=[<run dir>,<run dir>] or runs=<sweep dir>")
    out: list[tuple[Path, Path | None, Path | None]] = []
    for item in items:
        p = Path(str(item)).expanduser()
        if p.is_file() and p.suffix == ".ckpt":
            out.append((p.parent.parent if p.parent.name == "checkpoints" else p.parent, p, None))
        elif p.is_dir() and not (p / "checkpoints").is_dir() and not (p / ".hydra").is_dir():
            from src.report import find_jobs  # a sweep dir: its job dirs, in job order

            jobs = find_jobs(p)
            if not jobs:
                raise CheckpointError(f"{p} is neither a run dir (no checkpoints/) nor a sweep dir (no job dirs)")
            out += [(j, None, p) for j in jobs]
        elif p.is_dir():
            out.append((p, None, None))
        else:
            raise CheckpointError(f"run={item} does not exist; pass a run dir of train.py (logs/train/runs/...)")
    return out


def drawable(targets: list[tuple[Path, Path | None, Path | None]], which: str
             ) -> tuple[list[tuple[Path, Path | None]], list[dict]]:
    """The runs to draw, and the jobs of a sweep dir left out for having no checkpoint to draw
    (a learning-rate sweep's diverged jobs): {name, run_dir, status, reason} each. A run given
    by itself (run=, or in a list) is never skipped: its missing checkpoint is an error."""
    from src.report import status_of

    drawn, skipped = [], []
    for run_dir, ckpt, sweep in targets:
        reason = skip_reason(run_dir, which) if sweep is not None and ckpt is None else None
        if reason is None:
            drawn.append((run_dir, ckpt))
            continue
        results = read_json_object(run_dir / "results.json")
        skipped.append({"name": run_dir.name, "run_dir": str(run_dir), "sweep_dir": str(sweep),
                        "status": status_of(results) if results else None, "reason": reason})
    if not drawn:
        sweeps = ", ".join(dict.fromkeys(j["sweep_dir"] for j in skipped))
        raise CheckpointError(f"no job of {sweeps} has a checkpoint to draw: "
                              + "; ".join(f"{j['name']}: {j['reason']}" for j in skipped))
    return drawn, skipped


def saved_config(run_dir: Path) -> dict:
    """The run's latest config as saved: .hydra/config.yaml (written at the start of each try; a
    killed try has no results.json), unresolved, else results.json's `config`; {} if neither is
    readable. Enough for its loggers (`own_tensorboard`: their `_target_`s)."""
    config = read_yaml_mapping(run_dir / ".hydra" / "config.yaml")
    if config:
        return config
    config = read_json_object(run_dir / "results.json").get("config")
    return config if isinstance(config, dict) else {}


def run_config(run_dir: Path) -> dict:
    """The run's latest config, resolved (`saved_config`): what a checkpoint without a stamp is
    drawn with. Hydra saves config.yaml unresolved: `optim.lr: ${lr_around:${optim_name},${lr_decade}}`
    with `optim_name: ${hydra:runtime.choices.optim}`, which this process's own Hydra would answer
    with landscape.py's choices; the run's hydra.yaml answers them instead."""
    config = read_yaml_mapping(run_dir / ".hydra" / "config.yaml")
    if not config:
        return saved_config(run_dir)  # results.json's: resolved when it was written
    import src.resolvers  # noqa: F401  (registers ${lr_around:...}, as train.py does)

    def own_hydra(node):  # ${hydra:a.b} -> ${hydra.a.b}: the run's hydra.yaml, added below
        if isinstance(node, dict):
            return {k: own_hydra(v) for k, v in node.items()}
        if isinstance(node, list):
            return [own_hydra(v) for v in node]
        return node.replace("${hydra:", "${hydra.") if isinstance(node, str) else node

    hydra = read_yaml_mapping(run_dir / ".hydra" / "hydra.yaml").get("hydra")
    try:
        cfg = OmegaConf.create({**own_hydra(config), "hydra": hydra if isinstance(hydra, dict) else {}})
    except Exception:  # not a config OmegaConf takes: as it is
        return config
    out = {}
    for key in config:  # key by key: one that does not resolve (a resolver of another app) stays as saved
        try:
            node = cfg._get_node(key)
            out[key] = (OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node)
                        else cfg[key])
        except Exception:
            out[key] = config[key]
    return out


def first_seed_and_init(stamp: dict) -> tuple[int, dict, str | None]:
    """(seed, init config, init choice) of a run's first try, which made the initial weights (a
    resume with another seed or init= changes neither the weights already trained nor the init
    they came from), as a checkpoint's stamp records it (`recorded_first_try`). ValueError saying
    why when the stamp cannot tell them."""
    from src.checkpointing import recorded_first_try

    first = recorded_first_try(stamp)
    if first is None:
        if "first" in stamp:
            raise ValueError("the run was resumed from a checkpoint that holds no record of the first try's "
                             "seed and init")
        raise ValueError("its checkpoint predates the record of the first try's seed and init and "
                         + ("was resumed with a changed config" if stamp.get("changes") else "holds no history of resumes"))
    seed, init, init_name = ((first.get("seed"), first.get("init"), first.get("init_name"))
                             if isinstance(first, dict) else (None, None, None))
    if not isinstance(seed, int) or isinstance(seed, bool) or not isinstance(init, dict):
        raise ValueError("its checkpoint's record names no seed or no init of the first try")
    return seed, init, init_name if isinstance(init_name, str) else None


def was_resumed(run_dir: Path) -> bool:
    """The run's latest try resumed a checkpoint (its command line, `ckpt_path=` or Hydra's
    `+ckpt_path=` / `++ckpt_path=`, or its results.json says so)."""
    from src.utils import read_yaml

    overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml")
    given = isinstance(overrides, list) and any(
        str(o).lstrip("+").startswith("ckpt_path=") and str(o).lstrip("+") != "ckpt_path=null" for o in overrides)
    return given or bool(read_json_object(run_dir / "results.json").get("resumed_from"))


STAMPED = "the checkpoint's own record"


@dataclass
class TrainedWith:
    """What a checkpoint's weights were trained with, and what made the initial weights they came from."""

    config: dict                # the config of the try that wrote the checkpoint (labels, data)
    source: str                 # where `config` came from
    seed: int | None = None     # the first try's seed and init: None if not known
    init: dict | None = None
    init_name: str | None = None
    unknown: str = ""           # why seed and init are not known
    unchecked: str = ""         # known, but nothing tells whether a resume changed them


def trained_with(state: dict, run_dir: Path) -> TrainedWith:
    """The checkpoint's own stamp (src/training.py: `run` = {config_hash, seed, config, changes,
    first}, the config resolved and without seed and paths), else the run's latest config
    (`run_config`), which a resume may have changed: then the first try's seed and init are unchecked."""
    stamp = state.get("run")
    if isinstance(stamp, dict) and isinstance(stamp.get("config"), dict):
        out = TrainedWith(config=dict(stamp["config"]), source=STAMPED)
        try:
            out.seed, out.init, out.init_name = first_seed_and_init(stamp)
        except ValueError as e:
            out.unknown = str(e)
        return out
    hp = state.get("hyper_parameters") or {}
    config = run_config(run_dir)
    config.setdefault("init", hp.get("init_cfg"))
    out = TrainedWith(config=config, source="the run's config")
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not isinstance(config.get("init"), dict):
        out.unknown = "its config names no seed or no init"
        return out
    name = config.get("init_name")
    out.seed, out.init, out.init_name = seed, config["init"], name if isinstance(name, str) else None
    if was_resumed(run_dir):
        out.unchecked = ("the checkpoint holds no record of what it was trained with, and the run was resumed: "
                         "its config is the latest try's, whose seed or init may not be the first try's")
    return out


def run_label(config: dict, init_name: str) -> str:
    """`sgd_mom lr=0.1 momentum=0.9 · kaiming init · relu`: what a panel title needs to say, of the
    config the checkpoint was trained with and the first try's init."""
    optim = config.get("optim") or {}
    name = config.get("optim_name")
    name = name if isinstance(name, str) else str(optim.get("_target_", "?")).rsplit(".", 1)[-1]
    parts = [name] + [f"{k}={optim[k]:g}" for k in ("lr", "momentum")
                      if isinstance(optim.get(k), (int, float)) and not isinstance(optim.get(k), bool)]
    act = (config.get("model") or {}).get("act_fn", "")
    return " · ".join([" ".join(parts), f"{init_name} init", act] if act else [" ".join(parts), f"{init_name} init"])


def build_net(model_cfg: dict) -> nn.Module:
    from src.model import BaseNetwork

    return BaseNetwork(**{k: v for k, v in model_cfg.items() if k != "_target_"})


def recreate_init(config: dict, model_cfg: dict) -> torch.Tensor | None:
    """The run's initial weights, rebuilt as train(cfg) built them: seed_everything(seed), then
    src.training.build_module (the network's layers, then the init scheme). Deterministic on the
    CPU; tests/test_landscape.py checks it against the recorded path's first point. Runs of an
    older config layout (no model._target_) are rebuilt the same way by hand. None if the config
    lacks the seed or the init."""
    import hydra
    import pytorch_lightning as pl

    from src.checkpointing import collect_rng_states, set_rng_states

    if "seed" not in config or not isinstance(config.get("init"), dict):
        return None
    saved = collect_rng_states()  # leave this process's RNG streams as they were
    try:
        pl.seed_everything(int(config["seed"]), workers=True, verbose=False)
        if isinstance(config.get("model"), dict) and "_target_" in config["model"] and "module" in config:
            from src.training import build_module

            net = build_module(OmegaConf.create({k: config[k] for k in ("model", "init", "optim", "module")})).net
        else:
            init_fn = hydra.utils.instantiate(config["init"])
            net = build_net(model_cfg)
            init_fn(net)
        return Layout.of(net).flatten(dict(net.named_parameters()))
    except Exception as e:  # a config this code cannot build: say so, use the recorded path instead
        log.warning("cannot recreate the initial weights from the run's config (%s)", e)
        return None
    finally:
        set_rng_states(saved)


def load_run(run_dir: Path, which: str = "last", ckpt: Path | None = None, device: str = "cpu",
             need_path: bool = False) -> Run:
    from callbacks.weight_path import UnreadablePath, load_path

    ckpt = ckpt or find_checkpoint(run_dir, which)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{ckpt} is not a checkpoint ({type(e).__name__})") from None
    hp = state.get("hyper_parameters") or {}
    if "state_dict" not in state or "model" not in hp:
        raise CheckpointError(f"{ckpt} is not a checkpoint of train.py (no state_dict / model hyperparameters)")
    net = build_net(hp["model"])
    weights = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(weights)
    net.eval().requires_grad_(False)
    layout = Layout.of(net)
    from src.checkpointing import finite_weights

    if not finite_weights(weights):
        raise CheckpointError(f"{ckpt}'s weights hold NaN or inf (the run diverged): there is no landscape "
                              "around them; draw an earlier checkpoint (checkpoint=best, or run=<its .ckpt>)")
    # Labels, data and the initial weights go by what *this checkpoint* was trained with, not by
    # the latest try's config: a resume may have changed the seed, init= or optim.lr (and a resume
    # that diverged wrote no checkpoint, so its config is not the drawn weights')
    trained = trained_with(state, run_dir)
    trained.config.setdefault("model", hp["model"])
    trained.config.setdefault("optim", hp.get("optim_cfg"))
    init_name = trained.init_name or (str(trained.init.get("_target_", "?")).rsplit(".", 1)[-1]
                                      if trained.init is not None else "unknown")
    run = Run(name=run_dir.name, dir=run_dir, checkpoint=ckpt, net=net.to(device), layout=layout,
              final=layout.flatten(weights), config=saved_config(run_dir),
              global_step=int(state.get("global_step", 0)), epochs_done=_epochs_done(state),
              label=run_label(trained.config, init_name), trained=trained)

    try:
        path = load_path(run_dir)
    except UnreadablePath as e:
        if need_path:
            raise CheckpointError(f"{run_dir}'s recorded weight path, which directions=pca needs: {e}; "
                                  "use directions=random, or train the run again") from None
        log.warning("%s: the recorded path is left out: %s", run_dir, e)
        path, run.no_path = None, f"its recorded path is unreadable ({e})"
    if path is None and not run.no_path:
        run.no_path = f"it recorded no weight path (no weight_path/); {WEIGHT_PATH_HINT}"
    if path is not None and [n.removeprefix("net.") for n in path["names"]] != layout.names:
        log.warning("%s: the recorded path has other parameters than the checkpoint; ignored", run_dir)
        path, run.no_path = None, "its recorded path has other parameters than the checkpoint"
    if need_path and path is None:
        raise CheckpointError(f"{run_dir} has no recorded weight path (weight_path/), which "
                              f"directions=pca needs; {WEIGHT_PATH_HINT}, or use directions=random")

    recreated = None
    if trained.init is not None:
        recreated = recreate_init({**trained.config, "seed": trained.seed, "init": trained.init}, hp["model"])
    whose = "the first try's" if trained.source == STAMPED else "the run config's"
    made_by = f"{whose} seed {trained.seed} and init ({init_name})"
    if path is not None and path["steps"][0] == 0:
        first = path["weights"][0]
        dtype = getattr(torch, path["dtype"])
        if recreated is not None and torch.equal(recreated.to(dtype).float(), first):
            run.init, run.init_source = recreated, f"recreated from {made_by}; equals the recorded path's first point"
        else:
            run.init, run.init_source = first, f"the recorded path's first point ({path['dtype']})"
            if recreated is not None:
                run.warnings.append(f"the init recreated from {made_by} differs from the recorded one; "
                                    "the recorded one is used")
                log.warning("%s: %s", run_dir, run.warnings[-1])
    elif recreated is not None:
        run.init, run.init_source = recreated, f"recreated from {made_by} (no recorded path to check it against)"
        if trained.unchecked:
            run.init_source += f"; unchecked: {trained.unchecked}"
            run.warnings.append(f"the initial weights may not be the run's: {trained.unchecked}; the "
                                "interpolation starts from them")
            log.warning("%s: %s", run_dir, run.warnings[-1])
    elif trained.unknown:
        # a wrong init would draw a wrong interpolation under the run's name: none is drawn
        run.warnings.append(f"the initial weights cannot be recreated faithfully: {trained.unknown}, and the "
                            f"run recorded no weight path from step 0; the interpolation is left out")
        log.warning("%s: %s", run_dir, run.warnings[-1])
    elif trained.init is not None:  # recreate_init failed and logged why: into landscape.json too
        run.warnings.append(f"the initial weights could not be rebuilt from {made_by}, and the run recorded no "
                            "weight path from step 0; the interpolation is left out")
    if path is not None:
        # The recorded points at step 0 and at the checkpoint's step are the exact init and final
        # weights rounded to the path's dtype: use the exact ones (w_t - w_final is then exactly 0
        # at the end, not float16 rounding noise).
        w = path["weights"]
        for i, step in enumerate(path["steps"]):
            if step == run.global_step:
                w[i] = run.final
            elif step == 0 and run.init is not None:
                w[i] = run.init
    if path is not None and (bad := first_nonfinite(path)) is not None:
        # PCA of inf/NaN points fails deep in eigh: say which run and step, and what works instead
        step, epoch, dtype = path["steps"][bad], path["epochs"][bad], path["dtype"]
        cause = (f"its weights outgrew {dtype} (|w| > {torch.finfo(getattr(torch, dtype)).max:.6g}) or the run "
                 "diverged" if dtype == "float16" else "the run diverged")
        why = f"{run_dir}'s recorded weight path holds NaN or inf from step {step} (epoch {epoch:.3g}) on: {cause}"
        if need_path:
            raise CheckpointError(f"{why}; use directions=random, or train the run again (the recorder "
                                  "keeps points past float16's range in float32)")
        log.warning("%s; the recorded path is left out", why)
        path, run.no_path = None, f"its recorded path holds NaN or inf from step {step} on"
        if run.init is not None and not bool(torch.isfinite(run.init).all()):
            run.init = recreated
            run.init_source = f"recreated from {made_by} (the recorded path is not finite)" if recreated is not None else ""
    if path is not None and run.global_step in path["steps"]:  # exact, also mid-epoch
        run.epochs_done = path["epochs"][path["steps"].index(run.global_step)]
    if path is not None and path["steps"][-1] < run.global_step:
        # e.g. resumed without callbacks=with_path: the drawn path stops short of the checkpoint,
        # and nothing in the figure would show the steps it lacks
        run.warnings.append(
            f"the recorded path ends at step {path['steps'][-1]}, before the checkpoint's step {run.global_step}: "
            "the steps after it were not recorded (resumed without callbacks=with_path?); the PCA plane and "
            "the drawn path leave them out")
        log.warning("%s: %s", run_dir, run.warnings[-1])
    run.path = path
    return run


def why_no_pca(run: Run) -> str | None:
    """Why the run's recorded path cannot give a PCA plane, with what to do about it; None if it can."""
    if run.path is None:
        return run.no_path or "it has no recorded path"
    steps = run.path["steps"]
    if len(steps) < PCA_MIN_POINTS:
        return (f"its recorded path has {len(steps)} points (steps {', '.join(map(str, steps))}); PCA needs "
                f"at least {PCA_MIN_POINTS}: {FEW_POINTS_HINT}")
    return None


def auto_directions(runs: list[Run]) -> tuple[str, str]:
    """directions=auto: pca when every run's path gives a PCA plane, else random; and why, naming
    each run that has none with its own reason (runs sharing one are named together)."""
    by_reason: dict[str, list[str]] = {}
    for run in runs:
        if (why := why_no_pca(run)) is not None:
            by_reason.setdefault(why, []).append(run.name)
    if not by_reason:
        return "pca", "every run has a usable recorded path"
    return "random", "no PCA plane for " + "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())


def first_nonfinite(path: dict) -> int | None:
    """Index of the first recorded point holding NaN or inf, None if all are finite."""
    finite = torch.isfinite(path["weights"]).all(dim=1)
    return None if bool(finite.all()) else int((~finite).nonzero()[0])


def _epochs_done(state: dict) -> float:
    """Epochs trained when the checkpoint was written, fractional mid-epoch (1.5 after a stop by
    max_steps or Ctrl-C halfway through the second epoch): the index of the epoch in progress plus
    the share of its batches done. The epoch's length is the one train.py stored, else what the
    earlier epochs took; without either, the fit loop's count of epochs (Lightning's `epoch` is the
    0-based index of the epoch in progress; an end-of-epoch checkpoint is written during that
    epoch's validation)."""
    try:
        fit = state["loops"]["fit_loop"]
        batches = fit["epoch_loop.batch_progress"]
        # "processed", not "completed": a checkpoint written in on_train_batch_end (every N steps)
        # comes before Lightning counts that batch completed
        here, total = int(batches["current"]["processed"]), int(batches["total"]["processed"])
        epoch = int(state["epoch"])
        per_epoch = state.get("batches_per_epoch") or ((total - here) / epoch if epoch > 0 else None)
        if batches.get("is_last_batch") or (per_epoch and here >= per_epoch):
            return float(epoch + 1)
        if per_epoch:
            return epoch + here / per_epoch
    except (KeyError, TypeError, ValueError):
        pass
    try:
        return float(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return float(state.get("epoch", 0))


# ---------------------------------------------------------------------------------------------
# Directions


def random_directions(layout: Layout, final: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian directions, filter-normalised (Li et al. sec. 4): for a Linear layer each row
    (one output unit's incoming weights) is scaled to the norm of that row of the weights;
    biases and other 1-D parameters get 0, as in the paper. Seeded: d1 from `seed`, d2 after it."""
    gen = torch.Generator().manual_seed(int(seed))
    weights = layout.split(final)
    dirs = []
    for _ in range(2):
        parts = []
        for w in weights:
            if w.dim() <= 1:
                parts.append(torch.zeros_like(w).reshape(-1))
                continue
            d = torch.randn(w.shape, generator=gen)
            w_rows, d_rows = w.reshape(w.shape[0], -1), d.reshape(d.shape[0], -1)
            scale = w_rows.norm(dim=1, keepdim=True) / (d_rows.norm(dim=1, keepdim=True) + 1e-10)
            parts.append((d_rows * scale).reshape(-1))
        dirs.append(torch.cat(parts))
    return dirs[0], dirs[1]


@dataclass
class PathProjection:
    d1: torch.Tensor                    # [P] unit vectors spanning the plane through w_final
    d2: torch.Tensor
    coords: np.ndarray                  # [T, 2] (w_t - w_final) . d_k
    residual: np.ndarray                # [T] |w_t - w_final - projection| / |w_t - w_final|
    explained: tuple[float, float]      # share of sum_t |w_t - w_final|^2 along d1, d2
    singular_values: list[float]


def pca_of_path(points: torch.Tensor, final: torch.Tensor, chunk: int = 1 << 16) -> PathProjection:
    """PCA of the path's offsets from the final weights, m_t = w_t - w_final (Li et al. sec. 7).

    Not centred: the plane must pass through w_final (the grid's origin), so the directions are
    the two leading right-singular vectors of M = [m_t], and `explained` is s_k^2 / sum s^2, the
    share of sum_t |m_t|^2 the plane holds. Computed via the T x T Gram matrix in float64, in
    column chunks, so a long path never needs a float64 copy of [T, P]."""
    T, P = points.shape
    if T < PCA_MIN_POINTS:
        raise CheckpointError(f"the recorded path has {T} points; PCA needs at least {PCA_MIN_POINTS}: "
                              f"{FEW_POINTS_HINT}")
    gram = torch.zeros(T, T, dtype=torch.float64)
    for j in range(0, P, chunk):
        m = (points[:, j:j + chunk] - final[j:j + chunk]).double()
        gram += m @ m.T
    finite = torch.isfinite(gram.diagonal())  # |m_t|^2: inf/NaN iff m_t holds one (float64 cannot overflow)
    if not bool(finite.all()):  # eigh would fail ("ill-conditioned") or return NaN
        what = "the final weights hold" if not bool(torch.isfinite(final).all()) else \
            f"point {int((~finite).nonzero()[0])} of the recorded path ({T} points) holds"
        raise CheckpointError(f"{what} NaN or inf; PCA needs finite weights: use directions=random")
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    s = evals.sqrt()
    # The points are float32: a straight path's rounding alone leaves s_2 / s_1 ~ 1e-7, not 0.
    if s[1] <= 1e-6 * max(float(s[0]), 1e-300):
        log.warning("the path is (numerically) a straight line: the second PCA direction is arbitrary")
    dirs = torch.zeros(2, P, dtype=torch.float64)
    for j in range(0, P, chunk):
        m = (points[:, j:j + chunk] - final[j:j + chunk]).double()
        dirs[:, j:j + chunk] = evecs[:, :2].T @ m
    dirs /= dirs.norm(dim=1, keepdim=True).clamp_min(1e-300)  # = / s_k, robust when s_2 ~ 0
    coords = torch.zeros(T, 2, dtype=torch.float64)
    for j in range(0, P, chunk):
        coords += (points[:, j:j + chunk] - final[j:j + chunk]).double() @ dirs[:, j:j + chunk].T
    # the residual directly, |m_t - coords_t @ dirs|, not as a difference of squares
    res_sq = torch.zeros(T, dtype=torch.float64)
    for j in range(0, P, chunk):
        m = (points[:, j:j + chunk] - final[j:j + chunk]).double()
        res_sq += ((m - coords @ dirs[:, j:j + chunk]) ** 2).sum(dim=1)
    norms = gram.diagonal().sqrt()
    residual = torch.where(norms > 0, res_sq.sqrt() / norms.clamp_min(1e-300), torch.zeros_like(norms))
    total = float(evals.sum())
    explained = (float(evals[0]) / total, float(evals[1]) / total) if total > 0 else (1.0, 0.0)
    return PathProjection(dirs[0].float(), dirs[1].float(), coords.numpy(), residual.numpy(), explained,
                          [float(v) for v in s[: min(T, 10)]])


# ---------------------------------------------------------------------------------------------
# Evaluation: many parameter sets at once


def linear_and_activations(net: nn.Module) -> list[nn.Module]:
    """The network as a flat list of Linear layers and elementwise activations (BaseNetwork.layers)."""
    from src.model import ACT_FNS

    modules = list(getattr(net, "layers", []))
    elementwise = tuple(ACT_FNS.values())
    if not modules or not isinstance(modules[0], nn.Linear) or not all(
            isinstance(m, (nn.Linear, *elementwise)) for m in modules):
        raise ConfigError("landscape.py evaluates MLPs made of Linear layers and elementwise activations "
                          "(src/model.py BaseNetwork)")
    return modules


def _linear_params(net: nn.Module, layout: Layout) -> list[tuple[int, int | None]]:
    """(weight index, bias index or None) into layout order, per Linear of net.layers."""
    index = {n: i for i, n in enumerate(layout.names)}
    out = []
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            out.append((index[f"{name}.weight"], index.get(f"{name}.bias")))
    return out


def per_point_bytes(net: nn.Module, layout: Layout, n_images: int) -> int:
    """Memory one parameter set of a chunk costs: its activations on `n_images` images (each
    layer's output and its activation, float32) plus its own copy of the later layers' weights."""
    modules = linear_and_activations(net)
    widths = [m.out_features for m in modules if isinstance(m, nn.Linear)]
    first = modules[0].weight.numel() + (modules[0].bias.numel() if modules[0].bias is not None else 0)
    return 4 * (2 * n_images * sum(widths) + (layout.numel - first))


@torch.no_grad()
def evaluate_family(net: nn.Module, layout: Layout, base: torch.Tensor | None, dirs: list[torch.Tensor],
                    coefs: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_points: int = 32,
                    batch_images: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy on (x, y) of every parameter set base + sum_k coefs[i, k] dirs[k].

    base: [P] or None (= 0); dirs: K vectors [P]; coefs: [N, K]. Returns two float64 arrays [N].
    Exact at the family's anchor points: coefficients 0 and 1 reproduce `base` and `dirs[k]`
    bit for bit in every weight, so the grid centre runs the checkpoint's own weights."""
    modules = linear_and_activations(net)
    device = x.device
    lin = _linear_params(net, layout)
    split = lambda v: [t.to(device) for t in layout.split(v)]  # noqa: E731
    base_p = split(base) if base is not None else None
    dir_p = [split(d) for d in dirs]
    coefs = coefs.to(device=device, dtype=torch.float32)
    # Later Linears: the directions stacked as [K, in, out] (transposed, contiguous), so a chunk's
    # weights are one einsum and feed torch.baddbmm without a copy.
    stacked = []
    for wi, bi in lin[1:]:
        dw = torch.stack([d[wi].T for d in dir_p]).contiguous()
        db = torch.stack([d[bi] for d in dir_p]) if bi is not None else None
        bw = base_p[wi].T.contiguous() if base_p is not None else None
        bb = base_p[bi] if base_p is not None and bi is not None else None
        stacked.append((dw, db, bw, bb))
    w0, b0 = lin[0]
    x = x.reshape(x.shape[0], -1)
    width = max(m.out_features for m in modules if isinstance(m, nn.Linear))
    loss_sum = torch.zeros(len(coefs), dtype=torch.float64, device=device)
    correct = torch.zeros(len(coefs), dtype=torch.float64, device=device)
    for i0 in range(0, len(x), batch_images):
        xb, yb = x[i0:i0 + batch_images], y[i0:i0 + batch_images]
        # First layer: affine in the coefficients, the same images for every set: K + 1 matmuls.
        zk = torch.stack([F.linear(xb, d[w0], d[b0] if b0 is not None else None) for d in dir_p])  # [K, n, h]
        zbase = F.linear(xb, base_p[w0], base_p[b0] if b0 is not None else None) if base_p is not None else None
        for p0 in range(0, len(coefs), batch_points):
            c = coefs[p0:p0 + batch_points]
            n = len(c)
            weights = []
            for dw, db, bw, bb in stacked:
                w = torch.einsum("ck,kio->cio", c, dw)
                w = w + bw if bw is not None else w
                b = (c @ db + bb if bb is not None else c @ db) if db is not None else None
                weights.append((w, b))
            # Images in sub-chunks whose activations stay below ~8 MB: on a CPU, larger tensors
            # come fresh from the OS each time and page faults cost more than the arithmetic.
            sub = max(16, (2 << 20) // (n * width)) if device.type == "cpu" else len(xb)
            for j0 in range(0, len(xb), sub):
                yj = yb[j0:j0 + sub]
                h = torch.einsum("ck,knh->cnh", c, zk[:, j0:j0 + sub])
                if zbase is not None:
                    h += zbase[j0:j0 + sub]
                layer = 0
                for m in modules[1:]:
                    if not isinstance(m, nn.Linear):
                        h = m(h)
                        continue
                    w, b = weights[layer]
                    layer += 1
                    h = torch.baddbmm(b.unsqueeze(1), h, w) if b is not None else torch.bmm(h, w)
                losses = F.cross_entropy(h.reshape(-1, h.shape[-1]), yj.repeat(n), reduction="none")
                loss_sum[p0:p0 + n] += losses.view(n, -1).double().sum(dim=1)
                correct[p0:p0 + n] += (h.argmax(dim=-1) == yj).double().sum(dim=1)
    return (loss_sum / len(x)).cpu().numpy(), (correct / len(x)).cpu().numpy()


@torch.no_grad()
def evaluate_points(net: nn.Module, layout: Layout, points: torch.Tensor, x, y, batch_points: int = 32,
                    batch_images: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy at arbitrary parameter vectors points [T, P] (the recorded path): each
    point is a direction of its own with coefficient 1, in groups of `batch_points`."""
    losses, accs = [], []
    for t0 in range(0, len(points), batch_points):
        group = list(points[t0:t0 + batch_points])
        loss, acc = evaluate_family(net, layout, None, group, torch.eye(len(group)), x, y, batch_points, batch_images)
        losses.append(loss)
        accs.append(acc)
    return np.concatenate(losses), np.concatenate(accs)


@torch.no_grad()
def evaluate_loop(net: nn.Module, layout: Layout, points: torch.Tensor, x, y) -> tuple[np.ndarray, np.ndarray]:
    """The plain way, one parameter set after another through the module's own forward: the
    reference the vectorised code is tested and benchmarked against."""
    from torch.func import functional_call

    out_loss, out_acc = [], []
    for p in points:
        params = dict(zip(layout.names, (t.to(x.device) for t in layout.split(p)), strict=True))
        logits = functional_call(net, params, (x,))
        out_loss.append(F.cross_entropy(logits, y, reduction="sum").double().item() / len(x))
        out_acc.append((logits.argmax(-1) == y).double().sum().item() / len(x))
    return np.array(out_loss), np.array(out_acc)


@torch.no_grad()
def plain_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_images: int = 2048) -> float:
    """The loaded model's own loss (its forward, its weights): the honesty reference."""
    total = 0.0
    for i0 in range(0, len(x), batch_images):
        total += F.cross_entropy(net(x[i0:i0 + batch_images]), y[i0:i0 + batch_images], reduction="sum").double().item()
    return total / len(x)


# ---------------------------------------------------------------------------------------------
# Data: fixed, seeded subsets of the run's training and validation splits


def fixed_subset(indices: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """`size` of `indices`, drawn by a generator seeded with `seed` (all if size is None or larger)."""
    if size is None or size >= len(indices):
        return indices
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(int(seed)))
    return indices[order[:size]].sort().values


_DATA_CACHE: dict = {}


def load_subsets(data_dir: str, run_config: dict, subset: int | None, seed: int):
    """(x_train, y_train, x_val, y_val): `subset` images of the split the run trained on (its
    data.train_subset, if any, respected) and as many of its validation split."""
    from src.data import load_split_tensors, prepare_fashion_mnist, split_indices

    data = run_config.get("data") or {}
    split_seed = data.get("split_seed", 42)
    split_seed = split_seed if isinstance(split_seed, int) else 42
    train_subset = data.get("train_subset")
    key = (str(data_dir), split_seed, train_subset, subset, seed)
    if key not in _DATA_CACHE:
        prepare_fashion_mnist(data_dir)
        if str(data_dir) not in _DATA_CACHE:
            _DATA_CACHE[str(data_dir)] = load_split_tensors(data_dir, train=True)
        x, y = _DATA_CACHE[str(data_dir)]
        train_idx, val_idx = split_indices(seed=split_seed)
        if isinstance(train_subset, int) and train_subset > 0:
            train_idx = train_idx[:train_subset]
        tr = fixed_subset(train_idx, subset, seed)
        va = fixed_subset(val_idx, subset, seed + 1)
        _DATA_CACHE[key] = (x[tr].reshape(len(tr), -1), y[tr], x[va].reshape(len(va), -1), y[va])
    return _DATA_CACHE[key]


# ---------------------------------------------------------------------------------------------
# Memory: how many parameter sets a chunk holds, and what does not fit at all


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return int(info.get("MemAvailable", info["MemFree"]))
    except (OSError, KeyError, ValueError):
        return 8 << 30


def memory_plan(net, layout, n_points: int, resolution: int, n_images: int, batch_points, batch_images: int,
                device: torch.device, available: int | None = None) -> int:
    """The chunk size (parameter sets per batched evaluation). A grid or a chunk that cannot fit
    is a ConfigError naming the largest that fits."""
    available = available_bytes(device) if available is None else available
    budget = available // 2  # leave room for the allocator, the process, other jobs
    img = min(n_images, batch_images)
    per_point = per_point_bytes(net, layout, img)
    # the images, the base and two directions, the first layer's three outputs on an image chunk
    fixed = 4 * (n_images * layout.shapes[0][1] + 3 * layout.numel + 3 * img * layout.shapes[0][0])
    result_bytes = 2 * 8 * n_points  # loss and accuracy, float64
    if fixed + result_bytes + per_point > budget:
        # what would fit with a chunk of one set: solve resolution^2 * 16 + fixed + per_point <= budget
        largest = math.isqrt(max(0, (budget - fixed - per_point) // 16))
        if largest < 2:
            raise ConfigError(
                f"even one parameter set on {img} images needs {(fixed + per_point) / 2**30:.2f} GiB, "
                f"{budget / 2**30:.2f} GiB usable on {device}: lower landscape.batch_images (now {batch_images})")
        raise ConfigError(
            f"landscape.resolution={resolution} ({n_points} points) needs {(fixed + result_bytes + per_point) / 2**30:.1f} "
            f"GiB, {budget / 2**30:.1f} GiB usable on {device}: the largest grid that fits is "
            f"landscape.resolution={largest}")
    fits = int((budget - fixed - result_bytes) // per_point)
    if batch_points in (None, "auto"):
        # CPU: ~32 sets per chunk is as fast as more (benchmarks/landscape_grid.py); GPU: as many as fit
        cap = 32 if device.type == "cpu" else 4096
        return max(1, min(fits, cap, n_points))
    batch_points = int(batch_points)
    if batch_points > fits:
        raise ConfigError(
            f"landscape.batch_points={batch_points} needs {batch_points * per_point / 2**30:.1f} GiB on {img} images, "
            f"{(budget - fixed) / 2**30:.1f} GiB usable on {device}: the largest that fits is "
            f"landscape.batch_points={fits}")
    return batch_points


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    directions: str
    checkpoint: str
    resolution: int
    range: tuple[float, float] | None
    subset: int | None
    seed: int
    alpha_range: tuple[float, float]
    alpha_points: int
    batch_points: int | str
    batch_images: int
    device: torch.device


def _pair(key: str, value, ordered: bool = True) -> tuple[float, float]:
    ok = isinstance(value, (list, tuple, ListConfig)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or (ordered and not value[0] < value[1]):
        raise ConfigError(f"{key}={value!r} must be [low, high] with low < high, e.g. [-1, 1]")
    return float(value[0]), float(value[1])


def read_settings(cfg: DictConfig) -> Settings:
    ls = cfg.landscape
    directions = str(cfg.get("directions", "auto"))
    if directions not in ("auto", "random", "pca"):
        raise ConfigError(f"directions={directions} is not one of: auto, random, pca")
    subset = ls.get("subset", 2048)
    if subset == "full" or subset is None:
        subset = None
    else:
        subset = integer("landscape.subset", subset)
    device = str(ls.get("device", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"landscape.device={device} is not one of: auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("landscape.device=cuda, but no CUDA device is available; use landscape.device=cpu")
    batch_points = ls.get("batch_points", "auto")
    if batch_points != "auto":
        batch_points = integer("landscape.batch_points", batch_points)
    return Settings(
        directions=directions, checkpoint=str(cfg.get("checkpoint", "last")),
        resolution=integer("landscape.resolution", ls.get("resolution", 31), 2),
        range=None if ls.get("range") is None else _pair("landscape.range", ls.get("range")),
        subset=subset, seed=integer("landscape.seed", ls.get("seed", 0), 0),
        alpha_range=_pair("landscape.alpha_range", ls.get("alpha_range", [-0.5, 1.5])),
        alpha_points=integer("landscape.alpha_points", ls.get("alpha_points", 41), 2),
        batch_points=batch_points, batch_images=integer("landscape.batch_images", ls.get("batch_images", 4096)),
        device=torch.device(device))


# ---------------------------------------------------------------------------------------------
# One run's landscape


def grid_axis(lo: float, hi: float, n: int) -> np.ndarray:
    """n points over [lo, hi], shifted by less than a step so that 0 is exactly a node when it
    lies in the window (the centre check needs the checkpoint itself on the grid)."""
    step = (hi - lo) / (n - 1)
    if lo <= 0 <= hi:
        k0 = round(-lo / step)
        return (np.arange(n) - k0) * step
    return lo + np.arange(n) * step


def _window(coords: np.ndarray | None, fixed: tuple[float, float] | None, kind: str):
    """Grid window per axis: the configured range; else [-1, 1] (random, the paper's) or the path's
    extent with a margin (pca)."""
    if fixed is not None:
        return fixed, fixed
    if kind == "random" or coords is None:
        return (-1.0, 1.0), (-1.0, 1.0)
    out = []
    for axis in range(2):
        lo, hi = min(coords[:, axis].min(), 0.0), max(coords[:, axis].max(), 0.0)
        span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1e-6))
        out.append((float(lo - 0.2 * span), float(hi + 0.2 * span)))
    return out[0], out[1]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def landscape_of_run(run: Run, s: Settings, data, directions: str) -> dict:
    import time

    started = time.time()
    x, y, xv, yv = data
    net, layout = run.net, run.layout
    before = [p.detach().clone() for p in net.parameters()]
    ckpt_stat = run.checkpoint.stat()

    n_points = s.resolution ** 2
    chunk = memory_plan(net, layout, n_points, s.resolution, len(x), s.batch_points, s.batch_images, s.device)
    projection = None
    if directions == "pca":
        projection = pca_of_path(run.path["weights"], run.final)
        d1, d2 = projection.d1, projection.d2
        dir_info = {"kind": "pca", "explained_variance": list(projection.explained),
                    "explained_total": sum(projection.explained), "singular_values": projection.singular_values,
                    "centred": False, "note": "PCA of w_t - w_final over the recorded path (not centred: the "
                    "plane passes through w_final); unit vectors; coordinates in parameter-space units"}
    else:
        d1, d2 = random_directions(layout, run.final, s.seed)
        dir_info = {"kind": "random", "seed": s.seed, "seeds": [s.seed, s.seed],
                    "note": "Gaussian, one generator seeded with `seed` drawing d1 then d2; each row of a "
                    "Linear weight scaled to that weight row's norm (filter normalisation); biases 0"}
    xr, yr = _window(projection.coords if projection is not None else None, s.range, directions)
    xs, ys = grid_axis(*xr, s.resolution), grid_axis(*yr, s.resolution)
    A, B = np.meshgrid(xs, ys)  # [iy, ix]
    coefs = torch.tensor(np.stack([A.reshape(-1), B.reshape(-1)], 1), dtype=torch.float32)
    has_origin = bool((xs == 0).any() and (ys == 0).any())
    if not has_origin:
        coefs = torch.cat([coefs, torch.zeros(1, 2)])
    t0 = time.time()
    loss, acc = evaluate_family(net, layout, run.final, [d1, d2], coefs, x, y, chunk, s.batch_images)
    grid_seconds = time.time() - t0
    if has_origin:
        iy, ix = int(np.flatnonzero(ys == 0)[0]), int(np.flatnonzero(xs == 0)[0])
        centre_value = float(loss.reshape(len(ys), len(xs))[iy, ix])
    else:
        centre_value, loss, acc = float(loss[-1]), loss[:-1], acc[:-1]
    ckpt_loss = plain_loss(net, x, y)

    # Interpolation (1 - a) w_init + a w_final on both splits.
    interp = None
    if run.init is not None:
        alphas = np.linspace(*s.alpha_range, s.alpha_points)
        alphas = np.unique(np.concatenate([np.round(alphas, 12), [0.0, 1.0]]))
        ac = torch.tensor(np.stack([1 - alphas, alphas], 1), dtype=torch.float32)
        tl, ta = evaluate_family(net, layout, None, [run.init, run.final], ac, x, y, chunk, s.batch_images)
        vl, va = evaluate_family(net, layout, None, [run.init, run.final], ac, xv, yv, chunk, s.batch_images)
        init_loss, _ = evaluate_loop(net, layout, run.init[None], x, y)
        i0, i1 = int(np.flatnonzero(alphas == 0)[0]), int(np.flatnonzero(alphas == 1)[0])
        interp = {"alpha": alphas.tolist(), "train_loss": tl.tolist(), "val_loss": vl.tolist(),
                  "train_acc": ta.tolist(), "val_acc": va.tolist(), "init_source": run.init_source,
                  "check": {"alpha0_loss": float(tl[i0]), "init_loss": float(init_loss[0]),
                            "alpha1_loss": float(tl[i1]), "final_loss": ckpt_loss}}

    path = None
    if projection is not None:
        pts = run.path["weights"]
        true_loss, true_acc = evaluate_points(net, layout, pts, x, y, chunk, s.batch_images)
        on_plane, _ = evaluate_family(net, layout, run.final, [d1, d2],
                                      torch.tensor(projection.coords, dtype=torch.float32), x, y, chunk,
                                      s.batch_images)
        path = {"steps": run.path["steps"], "epochs": run.path["epochs"], "dtype": run.path["dtype"],
                "x": projection.coords[:, 0].tolist(), "y": projection.coords[:, 1].tolist(),
                "residual": projection.residual.tolist(), "loss": true_loss.tolist(), "acc": true_acc.tolist(),
                "loss_on_plane": on_plane.tolist(),
                "note": "epochs = epochs completed at the point (1.0: the end of epoch 0, epochs counting from "
                "0 as everywhere in the app; 1.5: halfway through epoch 1); residual = |w_t - w_final - "
                "projection| / |w_t - w_final| (0 at w_final); loss = at the recorded w_t; loss_on_plane = at "
                "its projection, what the contour shows there"}

    unchanged = all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    after_stat = run.checkpoint.stat()
    checks = {
        "centre": {"grid": centre_value, "checkpoint": ckpt_loss, "relative_difference": _rel(centre_value, ckpt_loss)},
        "weights_unchanged": unchanged,
        "checkpoint_file_unchanged": (ckpt_stat.st_size, ckpt_stat.st_mtime_ns) == (after_stat.st_size, after_stat.st_mtime_ns),
        "tolerance": CENTRE_TOLERANCE,
    }
    ok = checks["centre"]["relative_difference"] <= CENTRE_TOLERANCE and unchanged and checks["checkpoint_file_unchanged"]
    if interp is not None:
        c = interp["check"]
        checks["interpolation_ends"] = {"alpha0_vs_init": _rel(c["alpha0_loss"], c["init_loss"]),
                                        "alpha1_vs_final": _rel(c["alpha1_loss"], c["final_loss"])}
        ok &= max(checks["interpolation_ends"].values()) <= CENTRE_TOLERANCE
    checks["passed"] = bool(ok)
    return {
        "name": run.name, "run_dir": str(run.dir), "checkpoint": str(run.checkpoint), "label": run.label,
        "trained_with": None if run.trained is None else {
            "source": run.trained.source, "first_seed": run.trained.seed, "init": run.trained.init,
            "init_source": run.init_source or None, "why_no_init": run.trained.unknown or None},
        "epochs": run.epochs_done, "global_step": run.global_step,  # epochs completed, as the path's
        "directions": dir_info,
        "images": {"train": len(x), "val": len(xv), "subset_seed": s.seed},
        "grid": {"x": xs.tolist(), "y": ys.tolist(), "loss": loss.reshape(len(ys), len(xs)).tolist(),
                 "acc": acc.reshape(len(ys), len(xs)).tolist(), "indexing": "loss[iy][ix] at (x[ix], y[iy])",
                 "seconds": round(grid_seconds, 3), "points_per_batch": chunk, "device": str(s.device)},
        "interpolation": interp,
        "path": path,
        "checks": checks,
        "warnings": list(run.warnings),
        "seconds": round(time.time() - started, 3),
    }


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API on Agg canvases: no pyplot state, no window)


def _fmt_loss(v: float) -> str:
    text = f"{v:.3g}"
    return "0" if text in ("-0", "0") else text


def _loss_norm(results: list[dict]):
    from matplotlib.colors import LogNorm

    values = np.concatenate([np.asarray(r["grid"]["loss"]).ravel() for r in results])
    values = values[np.isfinite(values) & (values > 0)]
    return LogNorm(vmin=float(values.min()), vmax=float(values.max()))


def _loss_ticks(lo: float, hi: float) -> list[float]:
    """Round values within [lo, hi] for log colour bars and axes: 1, 2, 5 x 10^k, finer when
    the range is short."""
    inside = []
    for mantissas in ((1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mantissas]
        inside = [t for t in ticks if lo <= t <= hi]
        if len(inside) >= 4:
            break
    return inside if len(inside) >= 2 else [lo, hi]


def short_name(name: str, limit: int = 28) -> str:
    """A run dir's name for a panel title: sweep job dirs (`0_optim=sgd,...`) become `job 0`."""
    if len(name) <= limit:
        return name
    head = name.split("_", 1)[0]
    return f"job {head}" if head.isdigit() else name[: limit - 1] + "…"


def _title(r: dict) -> str:
    return f"{r['label']}\n{short_name(r['name'])} · after {r['epochs']:.3g} epochs (step {r['global_step']})"


def _axis_labels(ax, r: dict) -> None:
    d = r["directions"]
    if d["kind"] == "pca":
        e = d["explained_variance"]
        ax.set_xlabel(f"PCA direction 1 ({100 * e[0]:.1f} % of the path)")
        ax.set_ylabel(f"PCA direction 2 ({100 * e[1]:.1f} %)")
    else:
        ax.set_xlabel(f"random direction 1 (filter-normalised, seed {d['seed']})")
        ax.set_ylabel("random direction 2")


def _draw_path(ax, r: dict, z_of=None) -> None:
    p = r["path"]
    if p is None:
        return
    px, py = np.asarray(p["x"]), np.asarray(p["y"])
    ax.plot(px, py, "-", color="white", linewidth=2.6, zorder=4)
    ax.plot(px, py, "o-", color="crimson", markersize=3.5, linewidth=1.3, zorder=5, label="training path (projected)")
    # the network's own loss at both ends: the contour under the init marker is the plane's, which
    # can be far lower (0.61 under a true 2.54), and a reader takes the colour for the start's loss
    true = p.get("loss") or []
    init_loss = f" (loss {_fmt_loss(true[0])})" if true else ""
    final = (r.get("checks") or {}).get("centre", {}).get("checkpoint")
    final_loss = f", loss {_fmt_loss(final)}" if final is not None else ""
    ax.plot(px[0], py[0], "o", color="white", markeredgecolor="black", markersize=9, zorder=6, label=f"init{init_loss}")
    ax.plot(0, 0, "*", color="gold", markeredgecolor="black", markersize=15, zorder=6,
            label=f"final (checkpoint{final_loss})")
    epochs = np.asarray(p["epochs"])
    # label whole epochs (at most 5 of them), else 4 evenly spaced points
    whole = [i for i in range(1, len(px) - 1) if float(epochs[i]).is_integer()]
    shown = whole[:: max(1, math.ceil(len(whole) / 5))] if whole else \
        np.linspace(0, len(px) - 1, 6).round().astype(int).tolist()[1:-1]
    for i in shown:
        ax.annotate(point_label(p["steps"][i], float(epochs[i])), (px[i], py[i]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8, color="black", zorder=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.75, lw=0))


def point_label(step: int, epochs_done: float) -> str:
    """A recorded point's label. The path stores epochs *completed*, while the app numbers epochs
    from 0 (docs/reliability.md): the point with 1.0 epochs done is `after epoch 0`, not `epoch 1`."""
    if step == 0:
        return "init"
    if epochs_done >= 1 and float(epochs_done).is_integer():
        return f"after epoch {int(epochs_done) - 1} (step {step})"
    return f"step {step}, in epoch {math.floor(epochs_done)}"


def path_faithfulness(r: dict) -> list[str]:
    """How far to trust the drawn path: the plane's share of the path, the off-plane residual,
    and how far the contour under each projected point is from the loss at the real w_t."""
    p, d = r["path"], r["directions"]
    keep = np.asarray(p["steps"]) != r["global_step"]  # the end is w_final itself: residual 0
    res, steps = np.asarray(p["residual"])[keep], np.asarray(p["steps"])[keep]
    true, plane = np.asarray(p["loss"])[keep], np.asarray(p["loss_on_plane"])[keep]
    off = np.abs(plane - true) / np.maximum(true, 1e-12)
    worst = int(np.argmax(res))
    return [f"the plane holds {100 * d['explained_total']:.1f} % of the path's variance",
            f"off the plane: median {100 * np.median(res):.0f} % of a point's way to the end, "
            f"max {100 * res[worst]:.0f} % (step {steps[worst]})",
            f"colour under the path = loss on the plane: median {100 * np.median(off):.0f} % off the network's; "
            f"init {_fmt_loss(plane[0])} vs {_fmt_loss(true[0])}"]


def plot_2d(results: list[dict], subtitle: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(results)
    fig = Figure(figsize=(5.2 * n + 1.2, 9.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    norm = _loss_norm(results)
    levels = np.geomspace(norm.vmin, norm.vmax, 25)
    acc_lo = min(float(np.min(r["grid"]["acc"])) for r in results)
    acc_levels = np.arange(5 * math.floor(20 * acc_lo), 100.1, 5)
    for j, r in enumerate(results):
        g = r["grid"]
        X, Y = np.meshgrid(g["x"], g["y"])
        L, A = np.asarray(g["loss"]), 100 * np.asarray(g["acc"])
        ax = axes[0, j]
        cs = ax.contourf(X, Y, np.clip(L, norm.vmin, norm.vmax), levels=levels, norm=norm, cmap="viridis")
        ax.contour(X, Y, L, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.5)
        _draw_path(ax, r)
        ax.plot(0, 0, "*", color="gold", markeredgecolor="black", markersize=15, zorder=6)
        ax.set_title(_title(r), fontsize=10)
        _axis_labels(ax, r)
        if r["path"] is not None and j == 0:
            ax.legend(loc="best", fontsize=8, framealpha=0.8)
        ax2 = axes[1, j]
        ca = ax2.contourf(X, Y, A, levels=acc_levels, cmap="magma")
        _draw_path(ax2, r)
        ax2.plot(0, 0, "*", color="gold", markeredgecolor="black", markersize=15, zorder=6)
        ax2.set_title(f"training accuracy · {short_name(r['name'])}", fontsize=10)
        _axis_labels(ax2, r)
        if r["path"] is not None:  # under the panels, where it hides nothing
            ax2.set_xlabel(ax2.get_xlabel() + "\n\n" + "\n".join(path_faithfulness(r)), fontsize=9)
    cb = fig.colorbar(cs, ax=axes[0, :].tolist(), label="training loss (log scale)")
    cb.set_ticks(_loss_ticks(norm.vmin, norm.vmax))
    cb.set_ticklabels([_fmt_loss(v) for v in _loss_ticks(norm.vmin, norm.vmax)])
    cb.minorticks_off()
    fig.colorbar(ca, ax=axes[1, :].tolist(), label="training accuracy (%)", ticks=np.arange(0, 101, 10))
    fig.suptitle(f"Loss landscape around the checkpoint (gold star)\n{subtitle}", fontsize=11)
    return fig


def plot_3d(results: list[dict], subtitle: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(results)
    fig = Figure(figsize=(6 * n, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    norm = _loss_norm(results)
    lo, hi = math.log10(norm.vmin), math.log10(norm.vmax)
    ticks = [math.log10(t) for t in _loss_ticks(norm.vmin, norm.vmax)]
    for j, r in enumerate(results):
        g = r["grid"]
        X, Y = np.meshgrid(g["x"], g["y"])
        Z = np.log10(np.clip(np.asarray(g["loss"]), norm.vmin, norm.vmax))
        ax = fig.add_subplot(1, n, j + 1, projection="3d")
        ax.plot_surface(X, Y, Z, cmap="viridis", vmin=lo, vmax=hi, linewidth=0, antialiased=True, alpha=0.85)
        p = r["path"]
        if p is not None:
            z = np.log10(np.clip(np.asarray(p["loss_on_plane"]), norm.vmin, norm.vmax))
            ax.plot(p["x"], p["y"], z, "o-", color="crimson", markersize=2.5, linewidth=1.5, zorder=10)
            ax.plot([p["x"][0]], [p["y"][0]], [z[0]], "o", color="white", markeredgecolor="black", markersize=8,
                    zorder=11)
        centre = math.log10(min(max(r["checks"]["centre"]["grid"], norm.vmin), norm.vmax))
        ax.plot([0], [0], [centre], "*", color="gold", markeredgecolor="black", markersize=13, zorder=11)
        ax.set_zlim(lo, hi)
        ax.set_zticks(ticks)
        ax.set_zticklabels([_fmt_loss(10 ** t) for t in ticks])
        ax.set_zlabel("training loss (log)")
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
        ax.set_title(_title(r), fontsize=9)
        ax.view_init(elev=35, azim=-60)
    fig.suptitle(f"Loss surface (log scale)\n{subtitle}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_interpolation(results: list[dict], subtitle: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    if not any(r["interpolation"] for r in results):
        return None  # no initial weights (no recorded path, no seed in the run's config)
    fig = Figure(figsize=(12, 5.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for j, r in enumerate(results):
        it = r["interpolation"]
        if it is None:
            continue
        c = colors[j % len(colors)]
        a = np.asarray(it["alpha"])
        ax_loss.plot(a, it["train_loss"], "-", color=c, label=f"{r['label']}: train")
        ax_loss.plot(a, it["val_loss"], "--", color=c, label=f"{r['label']}: val")
        ax_acc.plot(a, 100 * np.asarray(it["train_acc"]), "-", color=c, label=f"{r['label']}: train")
        ax_acc.plot(a, 100 * np.asarray(it["val_acc"]), "--", color=c, label=f"{r['label']}: val")
    for ax in (ax_loss, ax_acc):
        for v, name in ((0, "init"), (1, "final")):
            ax.axvline(v, color="grey", linewidth=0.8, linestyle=":")
            ax.text(v, 1.01, name, transform=ax.get_xaxis_transform(), ha="center", fontsize=9, color="grey")
        ax.set_xlabel("α   (weights = (1 − α)·w_init + α·w_final)")
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")
    lo = min(min(min(r["interpolation"]["train_loss"]), min(r["interpolation"]["val_loss"]))
             for r in results if r["interpolation"])
    hi = max(max(max(r["interpolation"]["train_loss"]), max(r["interpolation"]["val_loss"]))
             for r in results if r["interpolation"])
    ax_loss.set_yticks(_loss_ticks(lo, hi), [_fmt_loss(v) for v in _loss_ticks(lo, hi)])
    ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_loss.set_ylabel("loss (log scale)")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(0, 100)
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=9)
    # the subtitle's images only: the plane's directions have nothing to do with a straight line
    fig.suptitle(f"Straight line from the initial to the final weights\n{subtitle.split(' · ', 1)[-1]}", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------
# The app


def _subtitle(results: list[dict], s: Settings) -> str:
    r = results[0]
    kind = r["directions"]["kind"]
    what = "PCA of the recorded path" if kind == "pca" else f"random filter-normalised directions, seed {s.seed}"
    return f"{what} · {r['images']['train']} training images (seed {s.seed})"


def write_figures(results: list[dict], subtitle: str, out: Path) -> dict[str, Path]:
    """landscape_2d.png, landscape_3d.png, interpolation.png in `out`: {TensorBoard tag: file}."""
    written = {}
    for tag, name, plot in (("2d", "landscape_2d.png", plot_2d), ("3d", "landscape_3d.png", plot_3d),
                            ("interpolation", "interpolation.png", plot_interpolation)):
        fig = plot(results, subtitle)
        if fig is not None:
            atomic_savefig(fig, out / name)
            written[tag] = out / name
    return written


def own_tensorboard(run: Run) -> tuple[Path | None, str]:
    """(<run dir>/tensorboard, "") when the run's own logger was TensorBoard, else (None, why not).

    Decided by the run's config, not by whether <run dir>/tensorboard exists: that dir can be there
    without the run having logged into it (landscape.py wrote it into logger=none and logger=csv
    runs before this check; a resume then advertised it), and a TensorBoard run killed before its
    logger's first write has none yet, though its resume logs there. The config is what the run's
    loggers were built from: .hydra/config.yaml, written at the start of each try (a killed run has
    no results.json), else results.json's (`saved_config`). Only when neither is readable (a .ckpt
    outside a run dir) is the dir's existence, before anything here wrote, all there is to go on."""
    from src.report import tensorboard_in

    tb = run.dir / "tensorboard"
    said = tensorboard_in(run.config)
    if said is None:
        return (tb, "") if tb.is_dir() else (
            None, "its config (.hydra/config.yaml, results.json) is unreadable and it has no tensorboard/ dir")
    if said:
        return tb, ""
    loggers = run.config.get("logger")
    name = ",".join(map(str, loggers)) if isinstance(loggers, dict) and loggers else "none"  # the config's
    return None, f"it was trained with logger={name}"


def write_tensorboard(r: dict, pngs: dict[str, Path], tb_dir: Path) -> None:
    """The run's figures and a summary in *its* TensorBoard dir (`own_tensorboard`), beside its
    training curves."""
    from matplotlib import image as mpimg
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tb_dir)) as tb:
        for tag, png in pngs.items():
            tb.add_image(f"landscape/{tag}", mpimg.imread(png)[..., :3], global_step=r["global_step"],
                         dataformats="HWC")
        c = r["checks"]
        lines = [f"**{r['label']}**, checkpoint `{r['checkpoint']}` (step {r['global_step']})",
                 f"- directions: {r['directions']['kind']}",
                 f"- grid {len(r['grid']['x'])}x{len(r['grid']['y'])} on {r['images']['train']} training images",
                 f"- centre loss {c['centre']['grid']:.6g} vs checkpoint {c['centre']['checkpoint']:.6g} "
                 f"(relative difference {c['centre']['relative_difference']:.1e}); checks passed: {c['passed']}"]
        if r["directions"]["kind"] == "pca":
            lines.append(f"- the PCA plane holds {100 * r['directions']['explained_total']:.1f} % of the path's variance")
        lines.append("\nGrid (training loss, rows = direction 2 from low to high):\n")
        lines.append("\n".join("    " + " ".join(f"{v:.3g}" for v in row) for row in r["grid"]["loss"]))
        tb.add_text("landscape/summary", "\n".join(lines), global_step=r["global_step"])


def landscape(cfg: DictConfig) -> dict:
    """The landscape of one or several runs; writes into cfg.paths.output_dir; returns the record."""
    s = read_settings(cfg)
    targets, skipped = drawable(resolve_runs(cfg), s.checkpoint)
    for job in skipped:  # a sweep's jobs without a checkpoint (diverged early, by design in an lr sweep)
        print(f"skipped {job['name']}: {job['reason']}", flush=True)
    out = Path(cfg.paths.output_dir)
    data_dir = str(cfg.paths.data_dir)
    need_path = s.directions == "pca"
    runs = [load_run(d, s.checkpoint, ckpt, str(s.device), need_path) for d, ckpt in targets]
    tensorboards = [own_tensorboard(run) for run in runs]  # before anything here writes
    directions, directions_reason = s.directions, None
    if directions == "auto":
        directions, directions_reason = auto_directions(runs)
        log.info("directions=auto: %s (%s)", directions, directions_reason)
    results = []
    for run in runs:
        # the data split the checkpoint's weights were trained on (its data.train_subset)
        trained = run.trained.config if run.trained is not None else run.config
        data = tuple(t.to(s.device) for t in load_subsets(data_dir, trained, s.subset, s.seed))
        log.info("%s: %s", run.name, run.label)
        results.append(landscape_of_run(run, s, data, directions))
        r = results[-1]
        log.info("%s: grid %dx%d in %.1f s, centre loss %.5f (checkpoint %.5f), checks passed: %s",
                 run.name, s.resolution, s.resolution, r["grid"]["seconds"], r["checks"]["centre"]["grid"],
                 r["checks"]["centre"]["checkpoint"], r["checks"]["passed"])
    for r in results:  # before anything is written: no figure can be drawn of an inf grid
        grid = np.asarray(r["grid"]["loss"], dtype=float)
        bad = int((~np.isfinite(grid)).sum())
        if bad:
            where = (f"landscape.range={list(s.range)} reaches weights too large for float32; accepted: a "
                     "narrower landscape.range, e.g. [-1, 1]" if s.range is not None else
                     "the weights along the directions grow too large for float32; try landscape.range=[-1, 1]")
            raise ConfigError(f"the loss is not finite at {bad} of {grid.size} grid points of {r['name']}: {where}")
    for r, (tb, why) in zip(results, tensorboards, strict=True):
        r["tensorboard"] = {"dir": str(tb) if tb is not None else None, "left_out": why or None}
    record = {"directions": directions, "directions_reason": directions_reason, "settings": {
        "resolution": s.resolution, "range": s.range, "subset": s.subset or "full", "seed": s.seed,
        "alpha_range": list(s.alpha_range), "checkpoint": s.checkpoint, "device": str(s.device)},
        "runs": results, "skipped": skipped}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "landscape.json", record)

    subtitle = _subtitle(results, s)
    written = write_figures(results, subtitle, out)
    for r, (tb, why) in zip(results, tensorboards, strict=True):
        # each run's own figures go to its TensorBoard (for several runs, drawn again one by one)
        pngs = written if len(results) == 1 else write_figures([r], subtitle, out / "runs" / r["name"])
        if tb is not None:
            write_tensorboard(r, pngs, tb)
        else:
            print(f"{r['name']}: no TensorBoard images: {why}, so its run dir gets no tensorboard/ "
                  f"(the figures and landscape.json are in {out})", flush=True)
    failed = [r["name"] for r in results if not r["checks"]["passed"]]
    if failed:
        raise RuntimeError(f"honesty checks failed for {', '.join(failed)}: see checks in {out / 'landscape.json'}")
    return record


def summary_lines(record: dict, out: Path) -> list[str]:
    lines = []
    for r in record["runs"]:
        c = r["checks"]
        line = (f"{short_name(r['name'])} ({r['label']}): {record['directions']} directions, centre loss "
                f"{c['centre']['grid']:.4f} = checkpoint {c['centre']['checkpoint']:.4f}, grid "
                f"{r['grid']['seconds']:.1f} s")
        if r["directions"]["kind"] == "pca":
            res = np.asarray(r["path"]["residual"])[np.asarray(r["path"]["steps"]) != r["global_step"]]
            line += (f", plane holds {100 * r['directions']['explained_total']:.1f} % of the path, "
                     f"residual median {100 * np.median(res):.0f} %")
        lines.append(line)
    lines.append(f"landscape: {out}")
    return lines
