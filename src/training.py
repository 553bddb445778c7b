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

from src.errors import ConfigError, UserError
from src.module import ClassifierModule
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

    from callbacks.progress import EpochLinePrinter

    checkpoints = out / "checkpoints"
    # `best` is judged once per epoch on val/acc; `last.ckpt` is written then too, and every
    # `checkpoint.every_n_train_steps` steps when set, so a kill loses at most that much work.
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=str(checkpoints), filename="best-epoch={epoch:02d}-val_acc={val/acc:.4f}",
                        auto_insert_metric_name=False, monitor="val/acc", mode="max", save_top_k=1,
                        save_last=True),
    ]
    if cfg.checkpoint.get("every_n_train_steps"):
        callbacks.append(ModelCheckpoint(dirpath=str(checkpoints), save_top_k=0, save_last=True,
                                         every_n_train_steps=int(cfg.checkpoint.every_n_train_steps)))
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
    if "betas" in optim:
        hp["beta1"], hp["beta2"] = (float(b) for b in optim["betas"])
    for k in ("fill", "std", "nonlinearity"):
        if init.get(k) is not None:
            hp[f"init_{k}"] = init[k] if isinstance(init[k], (int, float)) else str(init[k])
    return hp


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def train(cfg: DictConfig) -> float | None:
    """Train, test the best-val checkpoint, write results.json. Returns `cfg.optimized_metric`."""
    started = time.time()
    validate_config(cfg)
    check_accelerator(str(cfg.trainer.accelerator))
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
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    history = model.history
    val_scores = history["val_scores"]
    best_epoch = max(range(len(val_scores)), key=lambda i: (val_scores[i], -i)) if val_scores else -1
    test_acc = None
    if not cfg.get("skip_test", False) and trainer.state.finished and not trainer.interrupted:
        metrics = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_acc = _finite(metrics[0]["test/acc"]) if metrics else None
        logger.log_metrics({"hp/test_acc": test_acc or 0.0,
                            "hp/best_val_acc": val_scores[best_epoch] if val_scores else 0.0},
                           step=trainer.global_step)
        logger.finalize("success")

    results = {
        "status": "ok" if not trainer.interrupted else "interrupted",
        "test_acc": test_acc,
        "best_val_acc": val_scores[best_epoch] if val_scores else None,
        "best_val_epoch": best_epoch,
        "epochs": len(val_scores),
        "val_scores": val_scores,
        "train_scores": history["train_scores"],
        "train_losses": history["train_losses"],
        "global_step": trainer.global_step,
        "seconds": round(time.time() - started, 3),
        "best_checkpoint": best_path,
        "data_source": datamodule.source,
        "output_dir": str(out),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    atomic_write_json(out / "results.json", results)
    log.info("test_acc=%s best_val_acc=%s (epoch %d); results in %s",
             test_acc, results["best_val_acc"], best_epoch, out / "results.json")
    metric = cfg.get("optimized_metric")
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
