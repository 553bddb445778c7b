"""`train(cfg)`: one training run from a composed Hydra config. Pure: no argv, no exit."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from callbacks.divergence import Diverged
from src.entry import resolve_ckpt_path
from src.errors import CheckpointError, ConfigError, UserError
from src.module import ClassifierModule
from src.provenance import provenance
from src.utils import AtomicCheckpointIO, atomic_write_json
from src.validate import check_accelerator, validate_config

log = logging.getLogger(__name__)


def output_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def print_config_tree(cfg: DictConfig, fields=("data", "model", "init", "optim", "trainer", "callbacks",
                                                  "logger", "paths", "seed", "ckpt_path")) -> None:
    """The composed config as a rich tree, group by group."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", style="dim")
    for field in fields:
        if field not in cfg:
            continue
        value = cfg[field]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(field, style="bold").add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)


def instantiate_optimizer(cfg: DictConfig):
    """The optimizer factory, checked now on a dummy parameter so a bad lr fails in seconds."""
    try:
        factory = hydra.utils.instantiate(cfg.optim)
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optim: {_root_message(e)}") from None
    return factory


def instantiate_init(cfg: DictConfig):
    try:
        return hydra.utils.instantiate(cfg.init)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"init: {_root_message(e)}") from None


def _root_message(e: BaseException) -> str:
    # Hydra wraps constructor errors in InstantiationException; the user wants the innermost line.
    while e.__cause__ is not None:
        e = e.__cause__
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def build_callbacks(cfg: DictConfig, out: Path) -> list[pl.Callback]:
    from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar

    from callbacks.divergence import DivergenceDetector
    from callbacks.progress import EpochLinePrinter

    checkpoints = out / "checkpoints"
    # `best` is judged once per epoch on val/acc; `last.ckpt` is written then too, and every
    # `checkpoint.every_n_train_steps` steps when set, so a kill loses at most that much work.
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=str(checkpoints), filename="best-epoch={epoch:02d}-val_acc={val/acc:.4f}",
                        auto_insert_metric_name=False, monitor="val/acc", mode="max", save_top_k=1,
                        save_last=True, enable_version_counter=False),
    ]
    if cfg.checkpoint.get("every_n_train_steps"):
        # Both callbacks write the same last.ckpt (no "last-v1.ckpt"): the newest state wins.
        callbacks.append(ModelCheckpoint(dirpath=str(checkpoints), save_top_k=0, save_last=True,
                                         every_n_train_steps=int(cfg.checkpoint.every_n_train_steps),
                                         enable_version_counter=False))
    # Always on: a NaN/inf loss or weight stops the run at once with status "diverged".
    callbacks.append(DivergenceDetector())
    if show_progress(cfg):
        if sys.stdout.isatty():
            callbacks.append(RichProgressBar(refresh_rate=cfg.get("progress_refresh_rate", 10)))
        else:
            callbacks.append(EpochLinePrinter())
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is not None and "_target_" in cb_cfg:
            log.debug("callback %s", name)
            callbacks.append(hydra.utils.instantiate(cb_cfg))
    return callbacks


def show_progress(cfg: DictConfig) -> bool:
    return bool(cfg.trainer.get("enable_progress_bar", True))


def hparams_of(cfg: DictConfig) -> dict:
    """Flat hyperparameters for TensorBoard's HParams tab (scalars and strings only)."""
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    init = OmegaConf.to_container(cfg.init, resolve=True)
    hp = {
        "optim": str(optim.get("_target_", "")).rsplit(".", 1)[-1],
        "optim_name": cfg.get("optim_name") or "",
        "lr": float(optim.get("lr", float("nan"))),
        "momentum": float(optim.get("momentum", 0.0) or 0.0),
        "weight_decay": float(optim.get("weight_decay", 0.0) or 0.0),
        "init": str(init.get("_target_", "")).rsplit(".", 1)[-1],
        "act_fn": cfg.model.act_fn,
        "hidden_sizes": str(list(cfg.model.hidden_sizes)),
        "batch_size": int(cfg.data.batch_size),
        "seed": int(cfg.seed),
        "accelerator": str(cfg.trainer.accelerator),
        "max_epochs": int(cfg.trainer.max_epochs),
    }
    # Every run declares the same keys (0.0 / "" = not used): TensorBoard's HParams tab takes
    # its column list from one arbitrary run of the logdir, so a key only Adam runs have
    # (beta1) would vanish from a sweep whose first run is SGD.
    betas = optim.get("betas") or (0.0, 0.0)
    hp["beta1"], hp["beta2"] = (float(b) for b in betas)
    hp["init_fill"] = float(init.get("fill") or 0.0)
    hp["init_std"] = float(init.get("std") or 0.0)
    hp["init_nonlinearity"] = str(init.get("nonlinearity") or "")
    return hp


def check_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from, checked against the config; None for a fresh run.

    A path that does not exist, a file that is not a Lightning checkpoint of this app, or a
    checkpoint of another architecture or optimizer class is a CheckpointError (one line)."""
    given = cfg.get("ckpt_path")
    if not given:
        return None
    path = resolve_ckpt_path(str(given))
    hint = "pass a run's checkpoints/last.ckpt (or the run dir)"
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={given} does not exist; {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights-only errors all mean "not a checkpoint"
        raise CheckpointError(f"ckpt_path={given} is not a checkpoint ({type(e).__name__}); {hint}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(f"ckpt_path={given} is not a training checkpoint (no weights/loop state); {hint}")
    hp = ckpt.get("hyper_parameters") or {}
    saved, current = hp.get("model") or {}, OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("hidden_sizes", "act_fn", "input_size", "num_classes"):
        if key in saved and key in current and saved[key] != current[key]:
            raise CheckpointError(
                f"ckpt_path={given} holds a model with model.{key}={saved[key]}, but this run has "
                f"model.{key}={current[key]}; resume with the checkpoint's model")
    saved_opt = (hp.get("optim_cfg") or {}).get("_target_")
    current_opt = cfg.optim.get("_target_")
    if saved_opt and current_opt and saved_opt != current_opt:
        raise CheckpointError(
            f"ckpt_path={given} was trained with optimizer {saved_opt}, but this run asks for {current_opt}; "
            "resume with the same optim= (its hyperparameters, e.g. optim.lr, may change)")
    return str(path)


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def train(cfg: DictConfig) -> float | None:
    """Train, test the best-val checkpoint, write results.json. Returns `cfg.optimized_metric`."""
    started = time.time()
    validate_config(cfg)
    check_accelerator(str(cfg.trainer.accelerator))
    ckpt_path = check_checkpoint(cfg)  # a bad ckpt_path fails here, before the data is loaded
    out = output_dir_of(cfg)
    out.mkdir(parents=True, exist_ok=True)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    init_fn = instantiate_init(cfg)
    optimizer = instantiate_optimizer(cfg)
    datamodule.prepare_data()  # data problems surface before the model is built

    model = ClassifierModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=optimizer, init_fn=init_fn,
        optim_cfg=OmegaConf.to_container(cfg.optim, resolve=True),
        init_cfg=OmegaConf.to_container(cfg.init, resolve=True),
    )

    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False)
    callbacks = build_callbacks(cfg, out)
    # A live bar only in a terminal; elsewhere EpochLinePrinter writes one line per epoch.
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        enable_progress_bar=show_progress(cfg) and sys.stdout.isatty())
    hp_metrics = {"hp/best_val_acc": 0.0, "hp/test_acc": 0.0}
    logger.log_hyperparams(hparams_of(cfg), hp_metrics)

    log.info("Output directory: %s", out)
    if ckpt_path:
        log.info("Resuming from %s", ckpt_path)
    diverged = None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except Diverged as e:
        diverged = e
        print(f"diverged: {e}", file=sys.stderr, flush=True)
        model.drain_losses()  # the steps of the unfinished epoch, up to the non-finite one

    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    history = model.history
    val_scores = history["val_scores"]
    best_epoch = max(range(len(val_scores)), key=lambda i: (val_scores[i], -i)) if val_scores else -1
    test_acc = None
    if not cfg.get("skip_test", False) and diverged is None and trainer.state.finished and not trainer.interrupted:
        metrics = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_acc = _finite(metrics[0]["test/acc"]) if metrics else None
        logger.log_metrics({"hp/test_acc": test_acc or 0.0,
                            "hp/best_val_acc": val_scores[best_epoch] if val_scores else 0.0},
                           step=trainer.global_step)
        logger.finalize("success")

    results = {
        "status": "diverged" if diverged else "ok" if not trainer.interrupted else "interrupted",
        "test_acc": test_acc,
        "best_val_acc": val_scores[best_epoch] if val_scores else None,
        "best_val_epoch": best_epoch,
        "epochs": len(val_scores),
        "val_scores": val_scores,
        "train_scores": history["train_scores"],
        "train_losses": history["train_losses"],
        "global_step": trainer.global_step,
        "resumed_from": ckpt_path,
        "seconds": round(time.time() - started, 3),
        "best_checkpoint": best_path,
        "data_source": datamodule.source,
        "output_dir": str(out),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": provenance(cfg),
    }
    if diverged:
        # val/train scores above are those of the epochs that finished with finite weights.
        results.update(diverged_step=diverged.step, diverged_epoch=diverged.epoch, error=str(diverged))
    if trainer.is_global_zero:  # under DDP every rank gets here; rank 0's history is the one
        atomic_write_json(out / "results.json", results)
    log.info("test_acc=%s best_val_acc=%s (epoch %d); results in %s",
             test_acc, results["best_val_acc"], best_epoch, out / "results.json")
    metric = cfg.get("optimized_metric")
    if diverged:
        return float("nan")  # Optuna marks a NaN trial as failed and goes on
    if metric:
        return {"test_acc": test_acc, "best_val_acc": results["best_val_acc"]}.get(metric)
    return test_acc


def write_failure(out: Path, error: UserError | str, cfg: DictConfig | None = None, status: str = "failed") -> None:
    """Mark a run dir as failed, so no reader mistakes it for a finished run."""
    payload = {"status": status, "error": str(error)}
    if cfg is not None:
        try:
            payload["config"] = OmegaConf.to_container(cfg, resolve=False)
        except Exception:  # a config that fails to convert is part of what went wrong
            pass
    atomic_write_json(out / "results.json", payload)
