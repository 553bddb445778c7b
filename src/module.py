"""The LightningModule: the tutorial's MLP, an injected init scheme, an injected optimizer."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from src import step_graph
from src.checkpointing import (
    collect_rng_states,
    resume_a_cut_epoch,
    resume_after_epoch_end,
    set_rng_states,
    share_step_count,
)

log = logging.getLogger(__name__)


# Optimizer hyperparameters the config may change on resume (keys of param_groups).
OPTIM_HPARAMS = ("lr", "momentum", "betas", "eps", "weight_decay")


def apply_optim_hparams(optimizers, optim_cfg: dict) -> dict:
    """Set each param group's hyperparameters to the config's; return {key: (old, new)} changed."""
    changed = {}
    for opt in optimizers:
        for group in opt.param_groups:
            for key in OPTIM_HPARAMS:
                if key not in group or optim_cfg.get(key) is None:
                    continue
                new = optim_cfg[key]
                new = tuple(float(v) for v in new) if isinstance(group[key], (tuple, list)) else type(group[key])(new)
                if group[key] != new:
                    changed[key] = (group[key], new)
                    group[key] = new
    return changed


def target_of(obj) -> str:
    """`module.Class` of an object, as Hydra's `_target_` says it."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def describe(obj) -> dict | None:
    """A plain-dict record of an optimizer or init scheme, for checkpoints and messages:
    `_target_` plus its hyperparameters (an optimizer's defaults, a scheme's attributes)."""
    if obj is None:
        return None
    if isinstance(obj, torch.optim.Optimizer):
        args = dict(obj.defaults)
    else:
        args = {k: v for k, v in vars(obj).items() if k != "generator"}
    return {"_target_": target_of(obj), **{k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}}


def mean_per_step(losses: list[float], steps: list[int]) -> list[float]:
    """The mean loss of each run of batches with the same optimizer step, in order."""
    means, total, count = [], 0.0, 0
    for i, (loss, step) in enumerate(zip(losses, steps, strict=True)):
        total, count = total + loss, count + 1
        if i + 1 == len(steps) or steps[i + 1] != step:
            means.append(total / count)
            total, count = 0.0, 0
    return means


class CheapHookName:
    """Mixin for a LightningModule. Lightning sets `_current_fx_name` before and after each hook
    it calls, 44 times a training step. nn.Module.__setattr__ first checks the value against
    parameters, submodules and buffers (1.3 µs here, a plain set 0.1 µs), and a hook's name is
    none of those. Set plainly, a bare module's step took 75-119 µs less at tiny sizes
    (benchmarks/callback_dispatch.py, three runs), where a GPU step is mostly launch time."""

    def __setattr__(self, name, value):
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class ClassifierModule(CheapHookName, pl.LightningModule):
    """The tutorial's classifier: `network` initialised in place by `init_scheme`, trained by
    `optimizer` (built on `network.parameters()` by src/training.py from conf/optim; None for
    evaluation only).

    Neither object goes into the checkpoint's hyperparameters (it would break
    `torch.load(weights_only=True)`); plain records of them do (`optim_cfg`, `init_cfg`), which a
    resume checks and the divergence message quotes.
    """

    def __init__(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 init_scheme: Callable[[torch.nn.Module], object] | None = None,
                 progress_every_n_steps: int = 10, manual_step: bool = True,
                 cuda_graph: bool | str = False):
        super().__init__()
        self.save_hyperparameters({"model": dict(network.config), "optim_cfg": describe(optimizer),
                                   "init_cfg": describe(init_scheme)})
        self.net = network
        if init_scheme is not None:
            init_scheme(self.net)
        self.optimizer = optimizer
        if isinstance(progress_every_n_steps, bool) or not isinstance(progress_every_n_steps, int) \
                or progress_every_n_steps < 1:  # 0 divided by zero at the first step
            raise ValueError(f"Invalid progress_every_n_steps={progress_every_n_steps!r}: must be an integer >= 1")
        self.progress_every_n_steps = progress_every_n_steps
        if not isinstance(manual_step, bool):  # `maybe` would read as true
            raise ValueError(f"Invalid manual_step={manual_step!r}: must be true or false")
        self.manual_step = manual_step
        if not (isinstance(cuda_graph, bool) or cuda_graph == "auto"):
            raise ValueError(f"Invalid cuda_graph={cuda_graph!r}: must be true, false or auto")
        # true: replay each step as a CUDA graph where the fit can, and warn where it cannot;
        # auto: the same, silent where it cannot (a CPU run), warning only if a capture fails
        self.cuda_graph = cuda_graph
        # src/step_graph.py: the graph once captured; why a fit that asked for one runs without
        # (None: undecided, or in use); the warning the run gave about it, for results.json
        self._graph: step_graph.StepGraph | None = None
        self.graph_not_used: str | None = None
        self.graph_warning: str | None = None
        num_classes = self.net.config["num_classes"]
        # validate_args=False: the argument checks sync with the host on every update.
        acc = dict(num_classes=num_classes, average="micro", validate_args=False)
        self.train_acc = MulticlassAccuracy(**acc)
        self.val_acc = MulticlassAccuracy(**acc)
        self.test_acc = MulticlassAccuracy(**acc)
        # Saved with the checkpoint, so an epoch resumed mid-way reports the same train accuracy.
        self.train_acc.persistent(True)
        # Per-step losses stay on the device until the epoch ends: one host sync per epoch.
        self._step_losses: list[torch.Tensor] = []
        # With trainer.accumulate_grad_batches > 1, the optimizer step each batch's loss belongs
        # to: train_losses holds one loss per step, the mean of its batches'.
        self._step_of_loss: list[int] = []
        self._accumulating = False
        # Per-step (logits, labels) wait for train_acc in one update (flush_train_acc): its update
        # is 13 small ops, i.e. 13 kernel launches a step on a GPU; holding them launches none.
        self._step_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.history = {"train_losses": [], "train_scores": [], "val_scores": [], "val_losses": []}
        # Wall seconds of training before this process (earlier tries of a resumed run).
        self.seconds_before = 0.0
        self._fit_started = time.time()
        # Wall seconds of each epoch this process ran (train + validation), for results.json's
        # `timing`: an epoch ends with a host sync (drain_losses), so on a GPU this is its time.
        self.epoch_seconds: list[float] = []
        self.resume_notes: list[str] = []  # what a resume could not make as if never stopped
        self.tested_images = 0
        self.validated_images = 0  # in the last validation: what val_scores are over (limit_val_batches)
        self._epoch_started = None

    def first_loss(self) -> float | None:
        """The run's first training loss (finished epochs' or the current one's), or None."""
        if self.history["train_losses"]:
            return self.history["train_losses"][0]
        return float(self._step_losses[0]) if self._step_losses else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        graph = self._step_graph(x, y)
        if graph is not None:
            # forward, loss and backward in one replay; its outputs are overwritten by the next
            # one, and this step's are kept (train accuracy, loss curve, divergence check)
            logits, loss = (t.clone() for t in graph.step(x, y))
        else:
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
        self._step_outputs.append((logits.detach(), y))
        self._step_losses.append(loss.detach())
        if self._accumulating:
            self._step_of_loss.append(self.trainer.global_step)
        # self.log costs ~2 ms a call on a CPU (Lightning moves its whole result collection each
        # time), 15 % of a step here. The per-step loss curve goes to the logger in one batch
        # (drain_losses); self.log feeds only the progress bar, every progress_every_n_steps.
        # Only on the CPU: Lightning reads progress-bar values with .item() after every step,
        # which on a GPU is a host sync per step; there the bar shows the epoch metrics.
        if batch_idx % self.progress_every_n_steps == 0 and loss.device.type == "cpu":
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        if not self.automatic_optimization:
            # What Lightning's automatic loop does, in its order: zero_grad, backward, then
            # step(), whose closure runs the on_before_optimizer_step hooks (the diagnostics').
            optimizer = self.optimizers()
            if graph is None:  # the replay set every .grad already
                optimizer.zero_grad()
                self.manual_backward(loss)
            optimizer.step()
        return loss

    def _step_graph(self, x, y) -> step_graph.StepGraph | None:
        """The CUDA graph this step replays, or None to run it eagerly (module.cuda_graph=false,
        a fit that cannot use one, a batch of another shape, a hook on the network)."""
        if not self.cuda_graph or self.graph_not_used is not None:
            return None
        if self._graph is not None:
            return self._graph if self._graph.fits(x, y) else None
        if (reason := step_graph.why_not(self)) is not None:
            self.graph_not_used = reason
            if self.cuda_graph is True:
                self._warn_graph_not_used()
            return None
        if step_graph.hooked(list(self.net.modules()), list(self.net.parameters())):
            return None  # this step eagerly; capture at a step without hooks
        try:
            # step_graph.cuda_capture looked up now: tests put a CPU stand-in there
            self._graph = step_graph.StepGraph(self.net, x, y, capture=step_graph.cuda_capture)
        except Exception as e:  # a kernel that cannot be captured: the fit goes on eagerly
            self.graph_not_used = f"the capture failed ({type(e).__name__}: {e})"
            self._warn_graph_not_used()
            return None
        return self._graph

    def _warn_graph_not_used(self) -> None:
        value = "true" if self.cuda_graph is True else self.cuda_graph
        self.graph_warning = f"module.cuda_graph={value}: not used, {self.graph_not_used}"
        log.warning("%s", self.graph_warning)

    @property
    def graphed_steps(self) -> int:
        """Training steps of this process that replayed the CUDA graph."""
        return self._graph.replays if self._graph is not None else 0

    def setup(self, stage: str) -> None:
        # The step is ours (manual optimization) unless a Trainer setting needs Lightning's loop:
        # gradient clipping and accumulation are done by it, and refused under manual
        # optimization. The numbers are the same either way (tests/test_module.py); the
        # automatic loop adds a closure, two hook layers and three ops a step (the loss divided
        # by accumulate_grad_batches, that division's backward, a clone), which on a GPU are
        # three kernel launches.
        if stage == "fit":
            trainer = self.trainer
            self._accumulating = trainer.accumulate_grad_batches > 1
            self.automatic_optimization = not (self.manual_step and not trainer.gradient_clip_val
                                               and trainer.accumulate_grad_batches == 1)

    def drain_losses(self) -> None:
        """Move the device-side per-step losses into `history` (one host sync) and write them to
        the loggers as the `train/loss` curve, one point per optimizer step."""
        if not self._step_losses:
            return
        start = len(self.history["train_losses"])
        values = torch.stack(self._step_losses).float().cpu().tolist()
        self._step_losses.clear()
        if self._step_of_loss:
            values = mean_per_step(values, self._step_of_loss)
            self._step_of_loss.clear()
        self.history["train_losses"] += values
        if self._trainer is not None:
            for logger in self.loggers:
                for i, v in enumerate(values):
                    logger.log_metrics({"train/loss": v}, step=start + i)

    def flush_train_acc(self) -> None:
        """Feed the held (logits, labels) of this epoch's steps to train_acc, in one update."""
        if self._step_outputs:
            logits, labels = (torch.cat(t) for t in zip(*self._step_outputs, strict=True))
            self._step_outputs.clear()
            self.train_acc.update(logits, labels)

    def state_dict(self, *args, **kwargs):
        # A checkpoint reads train_acc's counts here, before any on_save_checkpoint hook runs:
        # the held steps go into them first, so a mid-epoch checkpoint has them all.
        self.flush_train_acc()
        return super().state_dict(*args, **kwargs)

    def on_train_epoch_start(self):
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self):
        if self._epoch_started is not None:
            self.epoch_seconds.append(time.perf_counter() - self._epoch_started)
            self._epoch_started = None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # The epoch's train/acc is computed at its last batch, before validation: Lightning calls
        # the callbacks' on_train_epoch_end (the progress bar, the epoch line) before the
        # module's, so numbers computed there would show one epoch late.
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.end_train_epoch()

    def end_train_epoch(self):
        self.flush_train_acc()
        acc = self.train_acc.compute()
        self.log("train/acc", acc, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        self.train_acc.reset()
        self.drain_losses()
        # One loss per optimizer step: Lightning steps after every k-th batch and the last.
        batches, k = self.trainer.num_training_batches, self.trainer.accumulate_grad_batches
        steps = math.ceil(batches / k) if k > 1 else batches
        epoch_losses = self.history["train_losses"][-steps:]
        if epoch_losses:
            self.log("train/epoch_loss", sum(epoch_losses) / len(epoch_losses), on_step=False, on_epoch=True,
                     sync_dist=True)
        self.history["train_scores"].append(float(acc))

    def on_validation_epoch_start(self):
        self.validated_images = 0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc.update(logits, y)
        self.validated_images += len(y)
        # sync_dist: under DDP the epoch's loss over every rank's batches (reduced once, at its end);
        # the accuracies are synced by torchmetrics already, and say so to Lightning
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=False, sync_dist=True)

    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self.log("val/acc", acc, prog_bar=True, sync_dist=True)
        self.val_acc.reset()
        if not self.trainer.sanity_checking:
            self.history["val_scores"].append(float(acc))

    def on_test_epoch_start(self):
        self.tested_images = 0

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.test_acc.update(logits, y)
        self.tested_images += len(y)  # what test_acc is over (trainer.limit_test_batches)
        self.log("test/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)

    def on_test_epoch_end(self):
        self.log("test/acc", self.test_acc.compute(), sync_dist=True)
        self.test_acc.reset()

    def configure_optimizers(self):
        if self.optimizer is None:
            raise RuntimeError("ClassifierModule needs an optimizer to train")
        return self.optimizer

    # The per-epoch history travels with the checkpoint, so a resumed run writes a complete
    # results.json (val_scores from before the interruption included).
    def on_save_checkpoint(self, checkpoint):
        self.drain_losses()
        checkpoint["history"] = {k: list(v) for k, v in self.history.items()}
        checkpoint["seconds_trained"] = self.seconds_before + time.time() - self._fit_started
        # Lightning does not save RNG states; a resumed run that draws random numbers (dropout,
        # augmentations) needs them to continue the same stream.
        checkpoint["rng_states"] = collect_rng_states()
        # The epoch's length in batches: what landscape.py needs to say "1.5 epochs" of a checkpoint
        # written mid-epoch in the first epoch (later ones can tell it from the loop's counts)
        batches = self._trainer.num_training_batches if self._trainer is not None else 0
        if 0 < batches < float("inf"):
            checkpoint["batches_per_epoch"] = int(batches)

    def on_load_checkpoint(self, checkpoint):
        # Only when resuming a fit: `trainer.test(ckpt_path=best)` loads the best epoch's
        # checkpoint, which must neither rewind the RNG nor cut the run's history back to it.
        if self._trainer is None or self.trainer.state.fn != "fit":
            return
        if "history" in checkpoint:
            self.history = {k: list(v) for k, v in checkpoint["history"].items()}
            self._step_losses, self._step_outputs, self._step_of_loss = [], [], []
            self.seconds_before = float(checkpoint.get("seconds_trained", 0.0))
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        share_step_count(checkpoint)
        if (cut := resume_a_cut_epoch(checkpoint)) is not None:
            self.resume_notes.append(cut)
        if self.trainer.max_steps != -1:
            resume_after_epoch_end(checkpoint)

    def on_train_start(self):
        if getattr(getattr(self.trainer, "fit_loop", None), "restarted_mid_epoch", False):
            # Lightning calls no on_train_epoch_start for the epoch it resumes mid-way: its time
            # in this process is timed from here (it was missing from timing.epoch_seconds)
            self._epoch_started = time.perf_counter()
        # On resume Lightning restores the optimizer's param_groups from the checkpoint, which
        # would silently override `optim.lr=...` given on the command line. The config wins:
        # its hyperparameters are applied on top of the restored state (buffers, moments, steps).
        changed = apply_optim_hparams(self.trainer.optimizers, self.hparams.get("optim_cfg") or {})
        for key, (old, new) in changed.items():
            log.warning("resume: optim.%s=%s applied (the checkpoint had %s)", key, new, old)
