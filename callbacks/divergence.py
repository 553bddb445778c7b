"""Stop a run the step its loss or a parameter stops being finite, and say why in one line.

On in every callbacks option (conf/callbacks/divergence.yaml). After every optimizer step it checks that the step's loss
is finite (one bool read per step: free on a CPU, one small sync on a GPU), and the parameters
before validation and before a checkpoint is written.

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


class DivergenceDetector(pl.Callback):
    """Raises `Diverged` when the loss or a parameter becomes NaN/inf.

    The loss is checked after every step: a NaN/inf parameter always makes the next loss NaN/inf
    (NaN·0 is NaN, ReLU keeps NaN), so this alone stops a run within one step. Parameters are
    checked directly only where a non-finite one would do harm before that next loss exists:
    before validation (which would pick a NaN model as "best") and on steps that write a
    checkpoint. Checking all parameters every step cost ~1 ms a step here (5 % of an epoch).
    """

    def __init__(self, check_params_every_n_steps: int = 0):
        # The step checkpoint's interval (conf/callbacks/divergence.yaml): a NaN parameter must
        # not reach last.ckpt, so the parameters are checked on those steps too.
        self.check_params_every_n_steps = int(check_params_every_n_steps or 0)
        self.diverged: Diverged | None = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(torch.isfinite(loss.detach())):
            self._stop(trainer, pl_module, f"loss became {float(loss):g}")
        if self._checkpoint_due(trainer) and not _params_finite(pl_module):
            self._stop(trainer, pl_module, "the parameters became NaN/inf")

    @torch.no_grad()
    def on_validation_start(self, trainer, pl_module):
        if trainer.training and not _params_finite(pl_module):
            self._stop(trainer, pl_module, "the parameters became NaN/inf")

    def _checkpoint_due(self, trainer) -> bool:
        n = self.check_params_every_n_steps
        return bool(n) and trainer.global_step % n == 0

    def _stop(self, trainer, pl_module, what: str):
        step, epoch = trainer.global_step, trainer.current_epoch
        hp = getattr(pl_module, "hparams", {})
        num_classes = getattr(getattr(pl_module, "net", None), "config", {}).get("num_classes", 10)
        first_loss = pl_module.first_loss() if hasattr(pl_module, "first_loss") else None
        cause = probable_cause(hp.get("optim_cfg"), hp.get("init_cfg"), first_loss, num_classes)
        message = f"{what} at step {step} (epoch {epoch}): {cause}"
        self.diverged = Diverged(message, step=step, epoch=epoch, what=what)
        trainer.should_stop = True
        raise self.diverged


def _params_finite(pl_module) -> bool:
    # One reduction per parameter tensor, stacked, one read: a sum is NaN/inf iff an entry is
    # (or the weights are so large that they overflow, which is divergence too).
    sums = torch.stack([p.detach().sum() for p in pl_module.parameters()])
    return bool(torch.isfinite(sums).all())
