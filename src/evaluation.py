"""`evaluate(cfg)`: the accuracy of a trained checkpoint on the test (or val) split, through the
same LightningModule and data module as training, so it equals the run's own `test_acc`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from src.checkpointing import HINT
from src.errors import CheckpointError, ConfigError, check_accelerator, in_group
from src.model import BaseNetwork
from src.module import ClassifierModule
from src.utils import atomic_write_json

log = logging.getLogger(__name__)
SPLITS = ("test", "val")


def best_checkpoint(given: str) -> Path:
    """A .ckpt as given; for a run dir, the best-val checkpoint its results.json names (or the
    only best-*.ckpt in it)."""
    p = Path(given)
    if p.is_file():
        return p
    if p.is_dir():
        results = p / "results.json"
        if results.is_file():
            best = json.loads(results.read_text()).get("best_checkpoint")
            if best and Path(best).is_file():
                return Path(best)
        found = sorted((p / "checkpoints").glob("best-*.ckpt"))
        if found:
            return found[-1]
        raise CheckpointError(f"ckpt_path={given} has no best-*.ckpt in checkpoints/; {HINT}")
    if p.exists():
        raise CheckpointError(f"ckpt_path={given} is neither a checkpoint file nor a run dir; {HINT}")
    raise CheckpointError(f"ckpt_path={given} does not exist; {HINT}")


def evaluate(cfg: DictConfig) -> float:
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r} is not one of: {', '.join(SPLITS)}")
    path = best_checkpoint(str(cfg.ckpt_path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model_cfg = state["hyper_parameters"]["model"]
    except Exception as e:
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {path} is not a checkpoint of this app "
                              f"({type(e).__name__}); {HINT}") from None
    module = ClassifierModule(BaseNetwork(**model_cfg))
    module.load_state_dict(state["state_dict"])
    datamodule = hydra.utils.instantiate(cfg.data)
    check_accelerator("accelerator", cfg.accelerator)
    try:
        trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, deterministic=True)
    except (MisconfigurationException, ImportError, ValueError) as e:  # an accelerator Lightning refuses
        raise ConfigError(in_group("accelerator", e)) from None
    run = trainer.test if cfg.split == "test" else trainer.validate
    metrics = run(module, datamodule=datamodule, verbose=False)[0]
    acc, loss = float(metrics[f"{cfg.split}/acc"]), float(metrics[f"{cfg.split}/loss"])
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "eval.json", {"status": "ok", "checkpoint": str(path), "split": cfg.split,
                                          "acc": acc, "loss": loss})
    print(f"{cfg.split} acc {100 * acc:.2f} %  (loss {loss:.4f})  {path}", flush=True)
    return acc
