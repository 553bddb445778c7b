"""Stop a run the step its loss or a parameter stops being finite, and say why in one line.

On in every callbacks option (conf/callbacks/divergence.yaml). It keeps each step's loss (a reference, no work) and
checks them every `check_every_n_steps` steps with one stacked read; the parameters are
checked before validation and before a checkpoint is written.

How soon a run stops: on a CPU a read is free, so the loss is checked after every step and a
run stops at the step its loss stops being finite. On a GPU every read of a device value makes
the host wait for the GPU, so the default there is every GPU_CHECK_EVERY (50) steps, at the end
of every epoch, and before any checkpoint or validation: a run stops at most 49 steps after the
first non-finite loss, and `diverged_step` still names that first step exactly (the losses in
between are kept). `callbacks.divergence.check_every_n_steps=1` restores "within one step"
on a GPU at the price of one sync per step.

On divergence it sets `trainer.should_stop` and raises `Diverged`, which `train(cfg)` catches:
stopping by `should_stop` alone would let Lightning run validation and write `last.ckpt` with
NaN weights, which would poison a resume and the "best" checkpoint. The run then writes
results.json with `status: "diverged"`, `diverged_step` and the metrics of the finite epochs.
"""

from __future__ import annotations

import logging
import math
import re

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
                   num_classes: int = 10, weights_dtype: torch.dtype = torch.float32) -> str:
    """A human guess. A first loss already far above chance (ln C, 2.3 for 10 classes) or not
    finite at all means the init made the logits explode; a sane start that blew up later means
    the steps were too large. Float16 weights (trainer.precision=16-true) first: there Adam's
    eps=1e-8 is 0, and a zero gradient's step is 0 / 0."""
    optim_cfg, init_cfg = optim_cfg or {}, init_cfg or {}
    eps = optim_cfg.get("eps")
    if (weights_dtype == torch.float16 and isinstance(eps, (int, float)) and eps > 0
            and float(torch.tensor(eps, dtype=torch.float16)) == 0):
        return (f"optim.eps={_fmt(eps)} is 0 in float16, the weights' and optimizer state's type under "
                "trainer.precision=16-true, so the step of a zero gradient is 0 / 0; try "
                "trainer.precision=16-mixed (float32 weights), or optim.eps=1e-4")
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


GPU_CHECK_EVERY = 50  # steps between loss reads on an accelerator (check_every_n_steps=None)


class DivergenceDetector(pl.Callback):
    """Raises `Diverged` when the loss or a parameter becomes NaN/inf.

    The losses are what is checked: a NaN/inf parameter always makes the next loss NaN/inf
    (NaN·0 is NaN, ReLU keeps NaN). Parameters are checked directly only where a non-finite one
    would do harm before that next loss is read: before validation (which would pick a NaN
    model as "best") and on steps that write a checkpoint. Checking all parameters every step
    cost ~1 ms a step here (5 % of an epoch).

    `check_every_n_steps`: None = 1 when the loss lives on the CPU, GPU_CHECK_EVERY otherwise.
    """

    def __init__(self, check_every_n_steps: int | None = None, check_params_every_n_steps: int = 0):
        if check_every_n_steps is not None and (isinstance(check_every_n_steps, bool)
                                                or not isinstance(check_every_n_steps, int)
                                                or check_every_n_steps < 1):
            raise ValueError(f"check_every_n_steps={check_every_n_steps!r} must be an integer >= 1, "
                             "or null (1 on a CPU, 50 on a GPU)")
        self.check_every_n_steps = check_every_n_steps
        # The step checkpoint's interval (conf/callbacks/divergence.yaml): a NaN parameter must
        # not reach last.ckpt, so the parameters are checked on those steps too.
        self.check_params_every_n_steps = int(check_params_every_n_steps or 0)
        self.diverged: Diverged | None = None
        self._losses: list[torch.Tensor] = []  # the losses since the last check, still on the device
        self._steps: list[int] = []  # the global_step each of them ended

    def on_train_start(self, trainer, pl_module):
        self._losses, self._steps = [], []

    def _every(self, loss: torch.Tensor) -> int:
        if self.check_every_n_steps is None:
            return 1 if loss.device.type == "cpu" else GPU_CHECK_EVERY
        return self.check_every_n_steps

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._losses.append(loss.detach())
            self._steps.append(trainer.global_step)
            if trainer.global_step % self._every(loss) == 0:
                self._check_losses(trainer, pl_module)
        if self._checkpoint_due(trainer):
            self._check_losses(trainer, pl_module)
            if not _params_finite(pl_module):
                self._stop(trainer, pl_module, "the parameters became NaN/inf")

    @torch.no_grad()
    def on_validation_start(self, trainer, pl_module):
        # `trainer.training` is already False here; the stage that matters is the fit.
        if trainer.state.fn == "fit":
            self._check_losses(trainer, pl_module)
            if not _params_finite(pl_module):
                self._stop(trainer, pl_module, "the parameters became NaN/inf")

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module):
        self._check_losses(trainer, pl_module)

    def _check_losses(self, trainer, pl_module) -> None:
        """One read for all losses kept since the last check; on a non-finite one, stop and
        name the first such step."""
        if not self._losses:
            return
        losses, steps = torch.stack(self._losses), self._steps
        self._losses, self._steps = [], []
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0, 0])
        self._stop(trainer, pl_module, f"loss became {float(losses[first]):g}", step=steps[first])

    def _checkpoint_due(self, trainer) -> bool:
        n = self.check_params_every_n_steps
        return bool(n) and trainer.global_step % n == 0

    def _stop(self, trainer, pl_module, what: str, step: int | None = None):
        self.diverged = divergence(trainer, pl_module, what, step)
        trainer.should_stop = True
        raise self.diverged


def divergence(trainer, pl_module, what: str, step: int | None = None) -> Diverged:
    """The Diverged of `what` at `step` (default: the trainer's), with its probable cause."""
    step, epoch = trainer.global_step if step is None else step, trainer.current_epoch
    hp = getattr(pl_module, "hparams", {})
    num_classes = getattr(getattr(pl_module, "net", None), "config", {}).get("num_classes", 10)
    first_loss = pl_module.first_loss() if hasattr(pl_module, "first_loss") else None
    weights_dtype = next((p.dtype for p in pl_module.parameters()), torch.float32)
    cause = probable_cause(hp.get("optim_cfg"), hp.get("init_cfg"), first_loss, num_classes, weights_dtype)
    return Diverged(f"{what} at step {step} (epoch {epoch}): {cause}", step=step, epoch=epoch, what=what)


# torch.autograd's anomaly detection (`trainer.detect_anomaly=true`) raises this in the backward
# of the first NaN gradient, before any loss is checked.
ANOMALY = re.compile(r"Function '(\w+)' returned nan values in its \d+th output")


def anomaly_divergence(error: BaseException, trainer, pl_module) -> Diverged | None:
    """The Diverged that anomaly detection's error means, or None for any other error. The
    step is the one whose backward failed (global_step counts those done before it)."""
    match = ANOMALY.search(str(error)) if isinstance(error, RuntimeError) else None
    if match is None:
        return None
    return divergence(trainer, pl_module, f"a gradient became nan ({match.group(1)}, anomaly detection)",
                      step=trainer.global_step + 1)


def _params_finite(pl_module) -> bool:
    # One reduction per parameter tensor, stacked, one read: a sum is NaN/inf iff an entry is
    # (or the weights are so large that they overflow, which is divergence too).
    sums = torch.stack([p.detach().sum() for p in pl_module.parameters()])
    return bool(torch.isfinite(sums).all())
