"""Stop a run the step its loss or a parameter stops being finite, and say why in one line.

Always on (src/training.py adds it). After every optimizer step it checks, on the device, that
the step's loss and every parameter are finite: one fused reduction, one bool read per step
(`.item()` on a 0-dim tensor; on CPU that is free, on a GPU it is one small sync per step).

On divergence it sets `trainer.should_stop` and raises `Diverged`, which `train(cfg)` catches:
stopping by `should_stop` alone would let Lightning run validation and write `last.ckpt` with
NaN weights, which would poison a resume and the "best" checkpoint. The run then writes
results.json with `status: "diverged"`, `diverged_step` and the metrics of the finite epochs.
"""

from __future__ import annotations

import logging
import math

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class Diverged(Exception):
    """Raised out of `trainer.fit` when the loss or a parameter became NaN/inf."""

    def __init__(self, message: str, step: int, epoch: int, what: str):
        super().__init__(message)
        self.step, self.epoch, self.what = step, epoch, what


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def probable_cause(optim_cfg: dict | None, init_cfg: dict | None, first_loss: float | None,
                   num_classes: int = 10) -> str:
    """A human guess. A first loss already far above chance (ln C, 2.3 for 10 classes) or not
    finite at all means the init made the logits explode; a sane start that blew up later means
    the steps were too large."""
    optim_cfg, init_cfg = optim_cfg or {}, init_cfg or {}
    lr = f"optim.lr={_fmt(optim_cfg['lr'])}" if "lr" in optim_cfg else "the learning rate"
    init_name = str(init_cfg.get("_target_", "")).rsplit(".", 1)[-1].lower() or "the init"
    init_args = ", ".join(f"init.{k}={_fmt(init_cfg[k])}" for k in ("std", "fill", "gain")
                          if init_cfg.get(k) is not None)
    init = f"the init ({init_name}{', ' + init_args if init_args else ''})"
    chance = math.log(num_classes)
    if first_loss is None or not math.isfinite(first_loss):
        return f"{init} is probably too wide (the first loss was already {first_loss}), or {lr} too high"
    if first_loss > 10 * chance:
        return (f"{init} is probably too wide (the first loss was {first_loss:.3g}, chance is "
                f"{chance:.2g}), or {lr} too high")
    return f"{lr} is probably too high, or {init} too wide"


def _first_loss(pl_module) -> float | None:
    """The run's first training loss: ClassifierModule keeps finished epochs' losses in
    `history` (restored on resume) and the current epoch's in `_step_losses`."""
    done = getattr(pl_module, "history", {}).get("train_losses") or []
    pending = getattr(pl_module, "_step_losses", [])
    if done:
        return done[0]
    return float(pending[0]) if pending else None


class DivergenceDetector(pl.Callback):
    """Checks loss and parameters after each optimizer step; raises `Diverged` on NaN/inf."""

    def __init__(self):
        self.diverged: Diverged | None = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        params = [p for p in pl_module.parameters()]
        # One reduction per parameter tensor, stacked, one read: sum() is NaN/inf iff an entry is
        # (or the weights are so large that they overflow, which is divergence too).
        params_ok = torch.isfinite(torch.stack([p.sum() for p in params])).all()
        loss_ok = torch.isfinite(loss.detach()) if loss is not None else torch.tensor(True)
        ok = torch.stack([loss_ok.to(params_ok.device), params_ok]).all()
        if bool(ok.item()):
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        if not bool(loss_ok):
            what = f"loss became {float(loss):g}"
        else:
            what = "the parameters became NaN/inf"
        hp = getattr(pl_module, "hparams", {})
        num_classes = getattr(getattr(pl_module, "net", None), "config", {}).get("num_classes", 10)
        cause = probable_cause(hp.get("optim_cfg"), hp.get("init_cfg"), _first_loss(pl_module), num_classes)
        message = f"{what} at step {step} (epoch {epoch}): {cause}"
        self.diverged = Diverged(message, step=step, epoch=epoch, what=what)
        trainer.should_stop = True
        raise self.diverged
