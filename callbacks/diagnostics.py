"""Variance diagnostics (the tutorial's first half, live): per-linear-layer statistics of the
activations, weight gradients and weights, written to TensorBoard while the model trains.

Layers are named by their module path inside `pl_module.net` (the tutorial's "Layer 0, 2, 4, …"
are `layers.0`, `layers.2`, …). Tags:

    activations/var/<layer>, activations/mean/<layer>   scalars, on the fixed diagnostic batch
    gradients/var/<layer>,   gradients/norm/<layer>     scalars, weight gradient of the training step
    weights/var/<layer>,     weights/norm/<layer>       scalars
    activations|gradients|weights/<layer>               histograms (finite values only)
    <kind>/nonfinite/<layer>                            scalar, only when NaN/inf appear (+ a warning)
    distributions/<kind>                                the tutorial's plot_dists figure (Images tab)

Statistics are computed only on logging steps, all on the device, with one host transfer per
call, so the steps in between cost one integer comparison. The functions at the top
(`linear_layers`, `activations_of`, `weight_gradients_of`, `weights_of`, `tensor_stats`) are
shared with probe.py, so the probe and step 0 of a training run print the same numbers.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def linear_layers(net: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of `net` by module path, in forward-definition order."""
    return {name: m for name, m in net.named_modules() if isinstance(m, nn.Linear)}


class LinearOutputs:
    """Forward hooks that keep each Linear's output while active; removed on exit, even on errors.

    with LinearOutputs(net) as outs:
        net(x)
    outs.values  # {"layers.0": tensor, ...}
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> LinearOutputs:
        for name, layer in linear_layers(self.net).items():
            self._handles.append(layer.register_forward_hook(self._keeper(name)))
        return self

    def _keeper(self, name: str):
        def hook(module, inputs, output):
            self.values[name] = output.detach()
            # Returning None leaves the forward pass untouched.

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()


@torch.no_grad()
def activations_of(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output of every Linear on batch `x` (the tutorial's visualize_activations). Train/eval
    mode is left as it is; the hooks exist only for this one forward pass."""
    with LinearOutputs(net) as outs:
        net(x)
    return outs.values


def weight_gradients_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """d cross_entropy(net(x), y) / d weight for every Linear (the tutorial's visualize_gradients).
    Uses autograd.grad, so the parameters' `.grad` (and a training step in progress) is untouched."""
    layers = linear_layers(net)
    with torch.inference_mode(False), torch.enable_grad():
        loss = F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, [m.weight for m in layers.values()], allow_unused=True)
    return {name: g.detach() for name, g in zip(layers, grads, strict=True) if g is not None}


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach() for name, m in linear_layers(net).items()}


def tensor_stats(values: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """{name: {var, mean, norm, nonfinite}} over the finite elements of each tensor.

    var is the population variance over all elements (np.var, as the tutorial prints), by
    torch.var_mean (Welford: a constant tensor gets exactly 0). Computed on the tensors' device;
    two host transfers per call whatever the number of layers."""
    if not values:
        return {}
    flat = [t.detach().float().reshape(-1) for t in values.values()]
    nonfinite = torch.stack([(~torch.isfinite(t)).sum() for t in flat]).cpu().tolist()
    rows = []
    for t, bad in zip(flat, nonfinite, strict=True):
        if bad:
            t = t[torch.isfinite(t)]
        if t.numel() == 0:
            rows.append(torch.full((3,), float("nan"), device=t.device))
            continue
        var, mean = torch.var_mean(t, correction=0)
        rows.append(torch.stack([var, mean, torch.linalg.vector_norm(t)]))
    table = torch.stack(rows).cpu().tolist()
    return {name: {"var": r[0], "mean": r[1], "norm": r[2], "nonfinite": int(bad)}
            for name, r, bad in zip(values, table, nonfinite, strict=True)}


def add_histogram_fast(writer, tag: str, values: torch.Tensor, step: int, bins: int = 64) -> None:
    """`writer.add_histogram`, with the bucketing done by torch.histc on the tensor's device.

    SummaryWriter.add_histogram buckets with numpy on the host and took ~40 ms for a 400k-value
    weight matrix here, most of the diagnostics' cost; histc takes ~1 ms. Values must be finite.
    """
    v = values.detach().float().reshape(-1)
    lo, hi, total, total_sq = torch.stack([v.min(), v.max(), v.sum(), (v * v).sum()]).cpu().tolist()
    if hi > lo:
        counts = torch.histc(v, bins=bins, min=lo, max=hi).cpu().tolist()
        limits = torch.linspace(lo, hi, bins + 1)[1:].tolist()
    else:  # a constant tensor (const init): one bucket
        counts, limits = [float(v.numel())], [hi]
    writer.add_histogram_raw(tag, min=lo, max=hi, num=v.numel(), sum=total, sum_squares=total_sq,
                             bucket_limits=limits, bucket_counts=counts, global_step=step)


def finite_values(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().reshape(-1)
    mask = torch.isfinite(t)
    return t if bool(mask.all()) else t[mask]


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------

# One "no TensorBoard logger" warning per Trainer, however many diagnostics callbacks it has.
_warned_trainers: weakref.WeakSet = weakref.WeakSet()


def tensorboard_writer(trainer: pl.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger, or None (after one warning)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    if trainer not in _warned_trainers:
        _warned_trainers.add(trainer)
        rank_zero_warn("Variance diagnostics need a TensorBoardLogger; none is configured, so they "
                       "log nothing. (Disable them with callbacks=none.)")
    return None


def diagnostic_batch(trainer: pl.Trainer, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The datamodule's fixed diagnostic batch (first `n` training images, unshuffled), or None."""
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and callable(getattr(dm, "diagnostic_batch", None)):
        x, y = dm.diagnostic_batch(n)
        return x, y
    return None


def _net(pl_module: pl.LightningModule) -> nn.Module:
    return getattr(pl_module, "net", pl_module)


class _Diagnostics(pl.Callback):
    """Shared plumbing: the writer, the step schedule, and logging a dict of tensors."""

    kind = ""
    scalars: tuple[str, ...] = ("var",)

    def __init__(self, every_n_steps: int = 200, histograms: bool = True):
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps={every_n_steps} must be >= 0 (0 = only at start/end)")
        self.every_n_steps = int(every_n_steps)
        self.histograms = bool(histograms)
        self._last_step: int | None = None
        self._warned_nonfinite: set[str] = set()

    def _due(self, step: int) -> bool:
        return (self.every_n_steps > 0 and step % self.every_n_steps == 0
                and step != self._last_step)

    def log_values(self, writer, values: dict[str, torch.Tensor], step: int) -> None:
        self._last_step = step
        stats = tensor_stats(values)
        for name, s in stats.items():
            for stat in self.scalars:
                if s[stat] == s[stat]:  # skip NaN: a layer with no finite value has no statistic
                    writer.add_scalar(f"{self.kind}/{stat}/{name}", s[stat], step)
            if s["nonfinite"]:
                writer.add_scalar(f"{self.kind}/nonfinite/{name}", s["nonfinite"], step)
                if name not in self._warned_nonfinite:
                    self._warned_nonfinite.add(name)
                    rank_zero_warn(f"{self.kind} of {name} has {s['nonfinite']} NaN/inf values at step "
                                   f"{step}; statistics and histograms use the finite values only")
            if self.histograms and s["nonfinite"] < values[name].numel():
                v = finite_values(values[name]) if s["nonfinite"] else values[name]
                add_histogram_fast(writer, f"{self.kind}/{name}", v, step)


class ActivationStats(_Diagnostics):
    """Variance and mean of every Linear's output on a fixed diagnostic batch, at the start of
    training (step 0 = the init), every `every_n_steps` optimizer steps, and at the end.

    The batch is `datamodule.diagnostic_batch(batch_size)`; without one, the first training
    batch is used (with a warning). Hooks are installed only around this extra forward pass,
    so training and validation batches are never measured and cost nothing."""

    kind = "activations"
    scalars = ("var", "mean")

    def __init__(self, every_n_steps: int = 200, batch_size: int = 1024, histograms: bool = True):
        super().__init__(every_n_steps, histograms)
        self.batch_size = int(batch_size)
        self._x: torch.Tensor | None = None

    def on_train_start(self, trainer, pl_module):
        self._last_step = None
        if not trainer.is_global_zero or tensorboard_writer(trainer) is None:
            return
        batch = diagnostic_batch(trainer, self.batch_size)
        if batch is None:
            rank_zero_warn("The datamodule has no diagnostic_batch(n); activation statistics use the "
                           "first training batch instead.")
            return
        self._x = batch[0].to(pl_module.device)
        self._measure(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._x is None and trainer.is_global_zero and tensorboard_writer(trainer) is not None:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            self._x = x[: self.batch_size].detach().clone()
            self._measure(trainer, pl_module)  # the init, before the first update

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._x is not None and trainer.is_global_zero and self._due(trainer.global_step):
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if self._x is not None and trainer.is_global_zero and trainer.global_step != self._last_step:
            self._measure(trainer, pl_module)

    @torch.no_grad()
    def _measure(self, trainer, pl_module):
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        # activations_of holds the hooks in a `with`: removed after the pass, also on errors.
        self.log_values(writer, activations_of(_net(pl_module), self._x), trainer.global_step)


class GradientStats(_Diagnostics):
    """Variance and norm of every Linear's weight gradient, in `on_before_optimizer_step` (after
    AMP unscaling, before the update), every `every_n_steps` optimizer steps from step 0. Only
    the optimizer steps that log cost anything (no host sync on the others)."""

    kind = "gradients"
    scalars = ("var", "norm")

    def on_train_start(self, trainer, pl_module):
        self._last_step = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # every_n_steps=0: the first step's gradient only (the init's).
        first = self.every_n_steps == 0 and self._last_step is None
        if not trainer.is_global_zero or not (first or self._due(trainer.global_step)):
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        grads = {name: m.weight.grad for name, m in linear_layers(_net(pl_module)).items()
                 if m.weight.grad is not None}
        self.log_values(writer, grads, trainer.global_step)


class WeightStats(_Diagnostics):
    """Variance and norm of every Linear's weight, at the start, every `every_n_steps` optimizer
    steps, and at the end of training."""

    kind = "weights"
    scalars = ("var", "norm")

    def on_train_start(self, trainer, pl_module):
        self._last_step = None
        self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._due(trainer.global_step):
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step != self._last_step:
            self._measure(trainer, pl_module)

    def _measure(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        writer = tensorboard_writer(trainer)
        if writer is not None:
            self.log_values(writer, weights_of(_net(pl_module)), trainer.global_step)


class DistributionFigures(pl.Callback):
    """The tutorial's plot_dists figures (activations, weight gradients, weights; one panel per
    layer) at the start and end of training and every `every_n_epochs` epochs: to TensorBoard's
    Images tab and as `<run dir>/figures/<kind>_step<NNNNNN>.png`.

    Activations and gradients are taken on the diagnostic batch (gradient of the cross-entropy
    loss, computed with autograd.grad so the training step's `.grad` is untouched)."""

    XLABELS = {"activations": "Activation vals", "gradients": "Grad magnitude", "weights": "Weight vals"}

    def __init__(self, every_n_epochs: int = 0, batch_size: int = 1024,
                 kinds: tuple[str, ...] = ("activations", "gradients", "weights"),
                 save_png: bool = True, dirpath: str | None = None):
        unknown = set(kinds) - set(self.XLABELS)
        if unknown:
            raise ValueError(f"kinds={list(kinds)}: unknown {sorted(unknown)}; use {list(self.XLABELS)}")
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.kinds = tuple(kinds)
        self.save_png = bool(save_png)
        self.dirpath = dirpath
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step: int | None = None

    def on_train_start(self, trainer, pl_module):
        self._last_step = None
        if not trainer.is_global_zero or tensorboard_writer(trainer) is None:
            return
        batch = diagnostic_batch(trainer, self.batch_size)
        if batch is not None:
            self._batch = (batch[0].to(pl_module.device), batch[1].to(pl_module.device))
        self._draw(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._batch is None and isinstance(batch, (list, tuple)) and len(batch) == 2:
            self._batch = tuple(t[: self.batch_size].detach().clone() for t in batch)

    def on_train_epoch_end(self, trainer, pl_module):
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._draw(trainer, pl_module)

    def _draw(self, trainer, pl_module):
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last_step:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        self._last_step = step
        out = Path(self.dirpath or trainer.default_root_dir) / "figures"
        save_figures(distribution_figures(_net(pl_module), self._batch, self.kinds),
                     out if self.save_png else None, writer, step)


def save_figures(figures: dict, out: Path | None, writer, step: int) -> None:
    """Draw each figure once; write it as `<out>/<kind>_step<N>.png` (atomically) and to TensorBoard."""
    from callbacks.plotting import png_bytes, render
    from src.utils import atomic_write_bytes

    for kind, fig in figures.items():
        image = render(fig)
        if out is not None:
            atomic_write_bytes(out / f"{kind}_step{step:06d}.png", png_bytes(image))
        if writer is not None:
            writer.add_image(f"distributions/{kind}", image, global_step=step, dataformats="HWC")


def distribution_figures(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None,
                         kinds=("activations", "gradients", "weights"), title_suffix: str = "") -> dict:
    """{kind: matplotlib Figure} of the tutorial's plot_dists for `net` (activations and gradients
    need `batch`; they are skipped without one)."""
    from callbacks.plotting import plot_dists

    layers = linear_layers(net)
    shapes = {name: tuple(m.weight.shape) for name, m in layers.items()}
    figures = {}
    for kind in kinds:
        if kind == "activations" and batch is not None:
            values, stat = activations_of(net, batch[0]), "density"
        elif kind == "gradients" and batch is not None:
            values, stat = weight_gradients_of(net, *batch), "count"
        elif kind == "weights":
            values, stat = weights_of(net), "count"
        else:
            continue
        arrays = {name: finite_values(v).float().cpu().numpy() for name, v in values.items()}
        figures[kind] = plot_dists(arrays, shapes, xlabel=DistributionFigures.XLABELS[kind], stat=stat,
                                   title=f"{kind.capitalize()} distribution{title_suffix}",
                                   color={"activations": "C0", "gradients": "C1", "weights": "C2"}[kind])
    return figures
