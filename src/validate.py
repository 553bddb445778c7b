"""Check a composed config before any work starts, so a typo costs seconds, not an epoch.

Every failure is a ConfigError whose one-line message names the key, the bad value and what
is accepted. Hydra itself already refuses unknown options (`optim=adamw`) and unknown keys
(`optim.lrr=…`); this module covers values.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from src.errors import ConfigError
from src.model import ACT_FNS

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _number(key: str, value, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} is not a number; expected a {'integer' if kind is int else 'number'}")
    if kind is int and not float(value).is_integer():
        raise ConfigError(f"{key}={value!r} is not an integer")
    return kind(value)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate_optim(optim: DictConfig, prefix: str = "optim") -> None:
    if "lr" in optim:
        lr = _number(f"{prefix}.lr", optim.lr)
        _check(lr > 0, f"{prefix}.lr={optim.lr} must be > 0")
    if "momentum" in optim:
        m = _number(f"{prefix}.momentum", optim.momentum)
        _check(0 <= m < 1, f"{prefix}.momentum={optim.momentum} must be in [0, 1)")
    if "betas" in optim:
        betas = optim.betas
        _check(not isinstance(betas, (str, int, float)) and len(betas) == 2,
               f"{prefix}.betas={betas} must be two numbers in [0, 1), e.g. [0.9,0.999]")
        for i, b in enumerate(betas):
            b = _number(f"{prefix}.betas[{i}]", b)
            _check(0 <= b < 1, f"{prefix}.betas[{i}]={b} must be in [0, 1)")
    if "eps" in optim:
        eps = _number(f"{prefix}.eps", optim.eps)
        _check(eps > 0, f"{prefix}.eps={optim.eps} must be > 0")
    if optim.get("weight_decay") is not None:
        wd = _number(f"{prefix}.weight_decay", optim.weight_decay)
        _check(wd >= 0, f"{prefix}.weight_decay={optim.weight_decay} must be >= 0")


def validate_model(model: DictConfig) -> None:
    _check(model.act_fn in ACT_FNS, f"model.act_fn={model.act_fn!r} is not one of: {', '.join(ACT_FNS)}")
    hs = model.hidden_sizes
    _check(not isinstance(hs, (str, int, float)) and len(hs) > 0,
           f"model.hidden_sizes={hs} must be a non-empty list of positive integers, e.g. [512,256,256,128]")
    for h in hs:
        _check(not isinstance(h, bool) and isinstance(h, int) and h > 0,
               f"model.hidden_sizes={list(hs)} must be a non-empty list of positive integers, e.g. [512,256,256,128]")


def validate_data(data: DictConfig) -> None:
    bs = _number("data.batch_size", data.batch_size, int)
    _check(bs > 0, f"data.batch_size={data.batch_size} must be > 0")
    if "eval_batch_size" in data:
        ebs = _number("data.eval_batch_size", data.eval_batch_size, int)
        _check(ebs > 0, f"data.eval_batch_size={data.eval_batch_size} must be > 0")
    _check(data.get("pipeline", "tensor") in ("tensor", "torchvision"),
           f"data.pipeline={data.get('pipeline')!r} is not one of: tensor, torchvision")
    data_dir = Path(str(data.data_dir))
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    _check(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
           f"data.data_dir={data.data_dir} is not writable; pass a writable directory, "
           "e.g. data.data_dir=/tmp/fashion-mnist")


def validate_trainer(trainer: DictConfig) -> None:
    me = _number("trainer.max_epochs", trainer.max_epochs, int)
    _check(me >= 0, f"trainer.max_epochs={trainer.max_epochs} must be >= 0")
    acc = str(trainer.get("accelerator", "auto"))
    _check(acc in ACCELERATORS, f"trainer.accelerator={acc!r} is not one of: {', '.join(ACCELERATORS)}")


def check_accelerator(accelerator: str) -> None:
    """Refuse an accelerator this machine does not have, in one line instead of a traceback."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but CUDA is not available on this machine "
                          "(torch.cuda.is_available() is False); use trainer.accelerator=cpu or auto")
    if accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator=mps but MPS (Apple GPU) is not available on this machine; "
                          "use trainer.accelerator=cpu or auto")
    if accelerator == "tpu":
        raise ConfigError("trainer.accelerator=tpu is not supported by this app; use cpu, gpu or auto")


def check_ddp_launch(trainer: DictConfig) -> None:
    """Lightning's `ddp` starts the extra processes by re-running the command line; inside a
    local multirun that line is the whole sweep (`-m ...`), so each child would restart it.
    Allowed under SLURM, where the tasks already exist and Lightning launches nothing."""
    from src.entry import is_multirun

    strategy, devices = str(trainer.get("strategy", "auto")), trainer.get("devices", 1)
    if (strategy.startswith("ddp") and strategy not in ("ddp_spawn", "ddp_fork", "ddp_notebook")
            and str(devices) != "1" and "SLURM_NTASKS" not in os.environ and is_multirun()):
        raise ConfigError(f"trainer.strategy={strategy} (devices={devices}) cannot run inside a local "
                          "multirun: Lightning re-runs the command line per process, which would "
                          "restart the sweep; run it as a single run, or per SLURM job "
                          "(hydra/launcher=slurm hydra.launcher.tasks_per_node=<devices>)")


def validate_config(cfg: DictConfig) -> None:
    _check(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool),
           f"seed={cfg.seed!r} must be an integer")
    validate_data(cfg.data)
    validate_model(cfg.model)
    validate_optim(cfg.optim)
    validate_trainer(cfg.trainer)
    check_ddp_launch(cfg.trainer)
