"""`evaluate(cfg)`: the accuracy of a trained checkpoint on the test (or val) split, through the
same LightningModule, data module and trainer precision as training, so it equals the run's own
`test_acc`."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from src.checkpointing import HINT, best_rank, finite_weights
from src.cli import job_overrides, override_key
from src.errors import CheckpointError, ConfigError, check_accelerator, in_group, seed_value
from src.model import BaseNetwork
from src.module import ClassifierModule
from src.utils import atomic_write_json, read_json_object

log = logging.getLogger(__name__)
SPLITS = ("test", "val")


def best_checkpoint(given: str) -> Path:
    """A .ckpt as given; for a run dir, the best-val checkpoint its results.json names (or the
    best of its best-*.ckpt, when the run wrote no readable results.json)."""
    p = Path(given)
    if p.is_file():
        return p
    if p.is_dir():
        best = read_json_object(p / "results.json").get("best_checkpoint")
        if isinstance(best, str) and best:
            # The file of that name in *this* dir's checkpoints/: results.json holds an absolute
            # path, which in a copied or moved run dir names the original's file
            own = p / "checkpoints" / Path(best).name
            if own.is_file():
                return own
            if Path(best).is_file() and Path(best).parent.name != "checkpoints":
                return Path(best)  # a checkpoint dirpath set outside any run dir's checkpoints/
        found = sorted((p / "checkpoints").glob("best-*.ckpt"), key=best_rank)
        if found:
            return found[-1]
        results = read_json_object(p / "results.json")
        if results.get("status") in ("diverged", "failed", "interrupted") and not any((p / "checkpoints").glob("*.ckpt")):
            # say why there is nothing to test, rather than point to a last.ckpt that is not there
            why = str(results.get("error") or "").splitlines()[0:1]
            raise CheckpointError(f"ckpt_path={given}: the run ended {results['status']} with no best-val "
                                  f"checkpoint{(': ' + why[0]) if why else ''}; it has no weights to test")
        last = p / "checkpoints" / "last.ckpt"
        if last.is_file():  # no epoch validated (trainer.limit_val_batches=0): its last weights are there
            raise CheckpointError(f"ckpt_path={given} has no best-*.ckpt in checkpoints/ (no validation chose "
                                  f"one); to test its last weights, pass the file: ckpt_path={last}")
        raise CheckpointError(f"ckpt_path={given} has no best-*.ckpt in checkpoints/; {HINT}")
    if p.exists():
        raise CheckpointError(f"ckpt_path={given} is neither a checkpoint file nor a run dir; {HINT}")
    raise CheckpointError(f"ckpt_path={given} does not exist; {HINT}")


def run_config(given: str, path: Path, state: dict) -> dict:
    """The config the run tested with: its results.json's (the run dir given, or the one whose
    checkpoints/ holds the file), else the one stamped into the checkpoint (a killed run wrote
    no results.json); {} when neither says."""
    # results.json first: a run resumed with another setting tested with the last one, while
    # its best checkpoint may carry an earlier try's stamp.
    run_dir = (Path(given) if Path(given).is_dir()
               else path.parent.parent if path.parent.name == "checkpoints" else None)
    stamp = state.get("run")
    for config in (read_json_object(run_dir / "results.json").get("config") if run_dir else None,
                   stamp.get("config") if isinstance(stamp, dict) else None):
        if isinstance(config, dict):
            return config
    return {}


def _section(config: dict, key: str) -> dict:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def precision_of(run: dict) -> str | int:
    """The `trainer.precision` of a run's config (run_config); 32-true, Lightning's default,
    when it does not say."""
    precision = _section(run, "trainer").get("precision")
    return precision if precision is not None else "32-true"


# The data settings that decide which images a split holds (split_seed: which 10,000 of the
# training file are validation) and how they are batched (the last bit of a mean over batches).
RUN_DATA_KEYS = ("split_seed", "eval_batch_size")


def run_data_settings(run: dict) -> dict:
    """The run's RUN_DATA_KEYS, less those given on eval.py's command line (those win)."""
    given = {override_key(o) for o in job_overrides()}
    data = _section(run, "data")
    return {k: data[k] for k in RUN_DATA_KEYS if k in data and f"data.{k}" not in given}


def evaluate(cfg: DictConfig) -> float:
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r} is not one of: {', '.join(SPLITS)}")
    if cfg.ckpt_path is None or not str(cfg.ckpt_path).strip():  # `ckpt_path=` was read as "."
        raise ConfigError(f"ckpt_path={'null' if cfg.ckpt_path is None else ''} names no checkpoint; {HINT}")
    seed_value("seed", cfg.seed)  # else data.shuffle_seed, which it fills in, was named
    path = best_checkpoint(str(cfg.ckpt_path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model_cfg = state["hyper_parameters"]["model"]
    except Exception as e:
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {path} is not a checkpoint of this app "
                              f"({type(e).__name__}); {HINT}") from None
    run = run_config(str(cfg.ckpt_path), path, state)
    # The run's precision unless given: a bf16 run's test pass in float32 scores other images right.
    precision = cfg.precision if cfg.get("precision") is not None else precision_of(run)
    # The run's split unless given: split=val of another split_seed holds images it trained on.
    data_cfg = OmegaConf.merge(cfg.data, run_data_settings(run))
    datamodule = hydra.utils.instantiate(data_cfg)
    check_accelerator("accelerator", cfg.accelerator)
    try:
        trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, precision=precision, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             deterministic=True)
    except (MisconfigurationException, ImportError, ValueError) as e:  # an accelerator or precision Lightning refuses
        raise ConfigError(in_group("precision" if str(e).startswith("Precision ") else "accelerator", e)) from None
    try:  # the file loads but its inside is not what train.py writes (edited, or another app's)
        module = ClassifierModule(BaseNetwork(**model_cfg))
        if trainer.precision == "64-true":
            module.double()  # a float64 run's weights, not rounded to float32 on the way in
        module.load_state_dict(state["state_dict"])
    except Exception as e:
        why = " ".join(str(e).split())[:200]
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {path} is not a checkpoint of this app "
                              f"({type(e).__name__}: {why}); {HINT}") from None
    if not finite_weights(state["state_dict"]):
        # a diverged run's weights score chance level with a NaN loss: that is no test result
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: {path}'s weights hold NaN or inf (the run diverged); "
                              "test a checkpoint from before the divergence (a best-*.ckpt, or an earlier last.ckpt)")
    test = trainer.test if cfg.split == "test" else trainer.validate
    metrics = test(module, datamodule=datamodule, verbose=False)[0]
    acc, loss = float(metrics[f"{cfg.split}/acc"]), float(metrics[f"{cfg.split}/loss"])
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "eval.json", {"status": "ok", "checkpoint": str(path), "split": cfg.split,
                                          "split_seed": data_cfg.split_seed, "precision": trainer.precision,
                                          "acc": acc, "loss": loss})
    print(f"{cfg.split} acc {100 * acc:.2f} %  (loss {loss:.4f})  {path}", flush=True)
    print(f"results: {out / 'eval.json'}", flush=True)  # as train.py says where its results.json is
    return acc
