"""Variance diagnostics (the tutorial's first half, live): per-linear-layer statistics of the
activations, weight gradients and weights, written to TensorBoard while the model trains.
Update sizes (callbacks/update_stats.py) and the step-0 probe (callbacks/variance_probe.py)
share the plumbing below. The derivations and what to look for: docs/diagnostics.md.

Layers are named by their module path inside `pl_module.net` (the tutorial's "Layer 0, 2, 4, …"
are `layers.0`, `layers.2`, …). Tags:

    activations/var/<layer>, activations/mean/<layer>   scalars, on the fixed diagnostic batch
    gradients/var/<layer>,   gradients/norm/<layer>     scalars, weight gradient of the training step
    weights/var/<layer>,     weights/norm/<layer>       scalars
    activations|gradients|weights/<layer>               histograms (finite values only)
    <kind>/nonfinite/<layer>                            scalar, only when NaN/inf appear (+ a warning)
    distributions/<kind>                                the tutorial's plot_dists figure (Images tab)
    depth/<kind>                                        value vs layer index, one line per logged step

TensorBoard's Custom Scalars tab gets one multi-line chart per quantity (all layers on one
chart, so depth is on one screen).

Cost: statistics are computed only on logging steps, on the device, with one host transfer per
call; the steps in between cost one integer comparison (no host sync). Each callback times its
own work (`seconds`); `diagnostics_seconds(trainer)` sums them for results.json. Every op they
call is checked against torch's list of ops that raise under `use_deterministic_algorithms` on
CUDA (tests/test_deterministic_ops.py): histograms are bucketed with arithmetic + bincount, not
torch.histc.

Vanishing/exploding: GradientStats (weight-gradient variance) and UpdateStats (update ratio) keep
a band; a layer outside it for `patience` consecutive logging steps gets one warning line, kept
in the callback's public `warnings` list (src/training.py copies every callback's into
results.json `warnings`).
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from callbacks.group import each_callback
from src.errors import is_int

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

    `detach=False` keeps the outputs in the autograd graph (the probe differentiates w.r.t. them).
    """

    def __init__(self, net: nn.Module, detach: bool = True):
        self.net = net
        self.detach = detach
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> LinearOutputs:
        for name, layer in linear_layers(self.net).items():
            self._handles.append(layer.register_forward_hook(self._keeper(name)))
        return self

    def _keeper(self, name: str):
        def hook(module, inputs, output):
            self.values[name] = output.detach() if self.detach else output
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


def _summary_rows(flat: list[torch.Tensor]) -> list[list[float]]:
    """[sum, norm, min, max] (float64) of each 1-D tensor: three cheap reductions on its device
    (torch.var_mean and an isfinite count cost 6x more on a CPU) and one host transfer for all."""
    rows = []
    for t in flat:
        if t.numel() == 0:
            rows.append(torch.full((4,), float("nan"), dtype=torch.float64, device=t.device))
            continue
        lo, hi = torch.aminmax(t)
        rows.append(torch.stack([torch.sum(t, dtype=torch.float64), torch.linalg.vector_norm(t, dtype=torch.float64),
                                 lo.double(), hi.double()]))
    return torch.stack(rows).cpu().tolist() if rows else []


def tensor_stats(values: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """{name: {var, mean, norm, min, max, sum, sum_sq, nonfinite}} over the finite elements of each tensor.

    var is the population variance over all elements (np.var, as the tutorial prints), from the
    float64 sum and sum of squares; a constant tensor (min == max) gets exactly 0. One host
    transfer per call, a second one only when a tensor holds NaN/inf (they are counted, then the
    statistics are taken over the finite elements)."""
    flat = [t.detach().reshape(-1) for t in values.values()]
    rows = _summary_rows(flat)
    nonfinite = [0] * len(flat)
    bad = [i for i, row in enumerate(rows) if flat[i].numel() and not all(math.isfinite(v) for v in row)]
    if bad:
        masks = [torch.isfinite(flat[i]) for i in bad]
        counts = torch.stack([(~m).sum() for m in masks]).cpu().tolist()
        finite_rows = _summary_rows([flat[i][m] for i, m in zip(bad, masks, strict=True)])
        for i, count, row in zip(bad, counts, finite_rows, strict=True):
            nonfinite[i], rows[i] = int(count), row
    out = {}
    for name, t, (total, norm, lo, hi), bad_count in zip(values, flat, rows, nonfinite, strict=True):
        n = t.numel() - bad_count
        mean = total / n if n else float("nan")
        var = float("nan") if not n else 0.0 if lo == hi else max(norm * norm / n - mean * mean, 0.0)
        out[name] = {"var": var, "mean": mean, "norm": norm, "min": lo, "max": hi, "sum": total,
                     "sum_sq": norm * norm, "nonfinite": bad_count}
    return out


def histogram_counts(values: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """Counts of `bins` equal buckets over [lo, hi] (the last one closed), on the values' device.

    Bucket index by arithmetic, counted with bincount *without* weights: both are deterministic
    on CUDA, unlike torch.histc (and bincount with weights), which raise under
    torch.use_deterministic_algorithms(True) there. ~4x faster than histc on a CPU (1.5 ms for 500k)."""
    # values >= lo, so truncation is floor; int32 halves the memory traffic of int64. Clamped as
    # floats: a range near float32's limit overflows to inf, which no integer cast survives.
    # Divided by the width, not multiplied by its inverse: that would be subnormal for such a range.
    index = (values.float() - lo).div_((hi - lo) / bins).clamp_(0, bins - 1).to(torch.int32)
    return torch.bincount(index, minlength=bins)


def add_histogram_fast(writer, tag: str, values: torch.Tensor, step: int, bins: int = 64,
                       summary: dict | None = None) -> None:
    """`writer.add_histogram`, with the bucketing done on the tensor's device.

    SummaryWriter.add_histogram buckets with numpy on the host and took ~40 ms for a 400k-value
    weight matrix here, most of the diagnostics' cost. `summary` = this tensor's `tensor_stats`
    row (min, max, sum, sum_sq), when the caller has it, saves a pass and a host transfer; then
    the only transfer is the 64 counts. Values must be finite."""
    v = values.detach().reshape(-1)
    if summary is None:
        summary = tensor_stats({"v": v})["v"]
    lo, hi, total, total_sq = summary["min"], summary["max"], summary["sum"], summary["sum_sq"]
    if hi > lo:
        counts = histogram_counts(v, lo, hi, bins).cpu().tolist()
        limits = [lo + (hi - lo) * (i + 1) / bins for i in range(bins)]
        limits[-1] = hi
    else:  # a constant tensor (const init): one bucket
        counts, limits = [float(v.numel())], [hi]
    writer.add_histogram_raw(tag, min=lo, max=hi, num=v.numel(), sum=total, sum_squares=total_sq,
                             bucket_limits=limits, bucket_counts=counts, global_step=step)


def finite_values(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().reshape(-1)
    mask = torch.isfinite(t)
    return t if bool(mask.all()) else t[mask]


# ---------------------------------------------------------------------------------------------
# Naming the run (figure titles)
# ---------------------------------------------------------------------------------------------


def _snake(name: str) -> str:
    # XavierNormal -> xavier_normal: the class names of src/init.py become their config names.
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def init_label(init_cfg: dict | None) -> str:
    """`normal std=0.1`, `kaiming`, `const fill=0.005` from an init config dict."""
    if not init_cfg:
        return "init ?"
    name = _snake(str(init_cfg.get("_target_", "?")).rsplit(".", 1)[-1])
    extra = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in init_cfg.items()
             if not k.startswith("_") and v is not None]
    return " ".join([name, *extra])


def optim_label(optim_cfg: dict | None) -> str:
    """`Adam lr=0.001`, `torch SGD lr=0.1 momentum=0.9` from an optimizer config dict."""
    if not optim_cfg:
        return "optim ?"
    target = str(optim_cfg.get("_target_", "?"))
    name = target.rsplit(".", 1)[-1]
    if target.startswith("torch."):
        name = "torch " + name
    parts = [name] + [f"{k}={optim_cfg[k]:g}" for k in ("lr", "momentum")
                      if isinstance(optim_cfg.get(k), float | int) and (k == "lr" or optim_cfg[k])]
    return " ".join(parts)


def run_label(pl_module: pl.LightningModule) -> str:
    """`kaiming · Adam lr=0.001 · relu`: what a figure title needs to say which run it shows."""
    hp = getattr(pl_module, "hparams", None) or {}
    act = (hp.get("model") or {}).get("act_fn") or getattr(_net(pl_module), "act_fn_name", "?")
    return f"{init_label(hp.get('init_cfg'))} · {optim_label(hp.get('optim_cfg'))} · {act}"


# ---------------------------------------------------------------------------------------------
# TensorBoard plumbing
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
        names = ", ".join(type(logger).__name__ for logger in trainer.loggers) or "no logger"
        if "DummyLogger" in names:
            names += " (trainer.fast_dev_run turns the loggers off)"
        rank_zero_warn(f"Variance diagnostics need a TensorBoardLogger and this run has {names}, so "
                       "they log nothing; logger=tensorboard logs them, callbacks=essential leaves them out")
    return None


# Custom Scalars: the charts each writer has so far. The layout is one summary per run and the
# plugin reads the newest, so each new chart rewrites the whole layout.
DEPTH_CHARTS = {"activations": ("activation var", r"activations/var/.*"),
                "gradients": ("gradient var", r"gradients/var/.*"),
                "weights": ("weight var", r"weights/var/.*"),
                "updates": ("update ratio ‖Δw‖/‖w‖", r"updates/ratio/.*")}
DEPTH_CATEGORY = "depth: every layer on one chart"
_charts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_depth_chart(writer, kind: str) -> None:
    """Add `kind`'s multi-line chart (all layers as lines) to the writer's Custom Scalars layout."""
    charts = _charts.setdefault(writer, {})
    if kind in charts or kind not in DEPTH_CHARTS:
        return
    charts[kind] = DEPTH_CHARTS[kind]
    ordered = [charts[k] for k in DEPTH_CHARTS if k in charts]
    writer.add_custom_scalars({DEPTH_CATEGORY: {title: ["Multiline", [regex]] for title, regex in ordered}})


def diagnostic_batch(trainer: pl.Trainer, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The datamodule's fixed diagnostic batch (first `n` training images, unshuffled), or None.
    The images in the dtype the run computes in, as Lightning converts every batch (float64 with
    `trainer.precision=64`; unchanged under mixed precision)."""
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and callable(getattr(dm, "diagnostic_batch", None)):
        x, y = dm.diagnostic_batch(n)
        plugin = getattr(trainer, "precision_plugin", None)
        return (plugin.convert_input(x) if plugin is not None else x), y
    return None


def _net(pl_module: pl.LightningModule) -> nn.Module:
    return getattr(pl_module, "net", pl_module)


def diagnostics_seconds(trainer: pl.Trainer) -> float:
    """Seconds the trainer's diagnostics callbacks spent on their own work (each times itself)."""
    return sum(float(getattr(cb, "seconds", 0.0) or 0.0) for cb in each_callback(trainer.callbacks)
               if isinstance(cb, Timed))


# ---------------------------------------------------------------------------------------------
# Vanishing / exploding watch
# ---------------------------------------------------------------------------------------------


class BandWatch:
    """Counts, per layer, consecutive logging steps with a value outside [low, high]; the
    `patience`-th in a row gives one warning line for that layer and direction (never repeated).
    A NaN counts as outside (the nonfinite counters say more)."""

    def __init__(self, what: str, low: float | None, high: float | None, patience: int = 3):
        if low is not None and high is not None and not low < high:
            raise ValueError(f"{what} band [{low}, {high}]: low must be < high")
        if patience < 1:
            raise ValueError(f"patience={patience} must be >= 1 (logging steps in a row)")
        self.what, self.low, self.high, self.patience = what, low, high, int(patience)
        self._run: dict[str, tuple[str, int, int]] = {}  # layer -> (direction, count, first step)
        self._warned: set[tuple[str, str]] = set()

    def direction(self, value: float) -> str | None:
        if value != value:
            return "non-finite"
        if self.low is not None and value < self.low:
            return "vanishing"
        if self.high is not None and value > self.high:
            return "exploding"
        return None

    def update(self, step: int, values: dict[str, float]) -> list[str]:
        lines = []
        for layer, value in values.items():
            d = self.direction(value)
            if d is None:
                self._run.pop(layer, None)
                continue
            prev_d, count, first = self._run.get(layer, (d, 0, step))
            count, first = (count + 1, first) if prev_d == d else (1, step)
            self._run[layer] = (d, count, first)
            if count >= self.patience and (layer, d) not in self._warned:
                self._warned.add((layer, d))
                # A NaN is neither below nor above the band: no edge in its line.
                bound = {"vanishing": self.low, "exploding": self.high}.get(d)
                edge = f" ({'below' if d == 'vanishing' else 'above'} {bound:.0e})" if bound is not None else ""
                lines.append(f"{d} {self.what}: {layer} = {value:.3g}{edge} for {count} logging steps in a "
                             f"row (steps {first}-{step})")
        return lines


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------


class Timed(pl.Callback):
    """A diagnostics callback that times its own work: `seconds` (wall, host side; every logging
    step ends in a host transfer, so device work is inside the measured time)."""

    seconds: float = 0.0

    @contextmanager
    def timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


# Figures are built, rendered and written on one background thread, so that the training does not
# wait for matplotlib (~0.5 s per set of figures on a CPU; the measurement on the main thread is
# what the figures show, taken before the job is handed over). One thread: matplotlib draws one
# figure at a time (Figure objects, no pyplot), and nothing else in a training process draws.
# The callbacks wait for their figures in `teardown` (before Lightning closes the loggers) and
# on an exception, so a run never ends with a figure half-written or missing.
_DRAWER: ThreadPoolExecutor | None = None
_PENDING: list[Future] = []


def _forget_drawer() -> None:
    # A forked child has no copy of the parent's drawing thread, but the executor would still
    # count it and start none: the child's first figure would wait forever.
    global _DRAWER
    _DRAWER = None
    _PENDING.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_drawer)


def draw_in_background(job: Callable[[], None]) -> None:
    global _DRAWER
    if _DRAWER is None:
        _DRAWER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="figures")
    _PENDING.append(_DRAWER.submit(job))


def finish_drawing() -> None:
    """Wait for every figure handed to draw_in_background; re-raise the first job's error (e.g.
    a full disk) once all are done."""
    first_error = None
    while _PENDING:
        error = _PENDING.pop(0).exception()
        first_error = first_error or error
    if first_error is not None:
        raise first_error


class DrawsInBackground(Timed):
    """A callback that hands figures to draw_in_background: it waits for them before Lightning
    closes the loggers, and on an exception (where the run's own error is the one to report)."""

    def teardown(self, trainer, pl_module, stage):
        finish_drawing()

    def on_exception(self, trainer, pl_module, exception):
        try:
            finish_drawing()
        except Exception as e:
            rank_zero_warn(f"{type(self).__name__}: figures not written: {e}")


class _Diagnostics(Timed):
    """Shared plumbing: the writer, the step schedule (with an optional time budget), logging a
    dict of tensors, the per-step history for depth profiles, warnings."""

    kind = ""
    scalars: tuple[str, ...] = ("var",)
    depth_stat = "var"  # the statistic of the depth profile and the custom-scalars chart

    def __init__(self, every_n_steps: int = 200, histograms: bool = True, budget: float | None = None):
        if not (is_int(every_n_steps) and every_n_steps >= 0):
            raise ValueError(f"every_n_steps={every_n_steps!r} must be an integer >= 0 (0 = only at start/end)")
        if not isinstance(histograms, bool):  # `maybe` was read as true
            raise ValueError(f"histograms={histograms!r} must be true or false")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 < budget < 1):
            raise ValueError(f"budget={budget!r} must be a fraction of the training time in (0, 1), or null")
        self.every_n_steps = every_n_steps
        self.base_every_n_steps = self.every_n_steps
        self.histograms = histograms
        self.budget = budget
        self.seconds = 0.0
        self.warnings: list[str] = []
        # {step: {layer: value of depth_stat}}, for the depth-profile figures.
        self.history: dict[int, dict[str, float]] = {}
        self._last_step: int | None = None
        self._warned_nonfinite: set[str] = set()
        self._watch: BandWatch | None = None
        self._budget_mark: tuple[float, float, int] | None = None  # (wall, own seconds, step)

    def _due(self, step: int) -> bool:
        return (self.every_n_steps > 0 and step % self.every_n_steps == 0
                and step != self._last_step)

    def _adapt_interval(self, step: int) -> None:
        """With a budget: after each logging step, every_n_steps = base x 2^k, the smallest that
        keeps (own seconds) / (wall seconds) since the last logging step under the budget. Powers
        of two keep callbacks with the same base on nested schedules (their curves still line up)."""
        if self.budget is None or self.every_n_steps == 0:
            return
        now = time.perf_counter()
        if self._budget_mark is not None:
            wall0, own0, step0 = self._budget_mark
            steps, wall, own = step - step0, now - wall0, self.seconds - own0
            if steps > 0 and wall > own > 0:
                per_log = own  # the cost of one logging step, paid once per interval
                per_step = (wall - own) / steps
                needed = per_log / (self.budget * per_step)
                factor = 2 ** max(0, math.ceil(math.log2(max(needed / self.base_every_n_steps, 1.0))))
                self.every_n_steps = self.base_every_n_steps * factor
        self._budget_mark = (now, self.seconds, step)

    def watch(self, what: str, band, patience: int) -> tuple[float | None, float | None]:
        """Warn when a layer's depth statistic leaves `band` = [low, high] (either may be None;
        band None = no watch) for `patience` logging steps in a row. Returns (low, high)."""
        low, high = tuple(band) if band is not None else (None, None)
        self.patience = int(patience)
        self._watch = BandWatch(what, low, high, patience) if (low is not None or high is not None) else None
        return low, high

    def log_values(self, writer, values: dict[str, torch.Tensor], step: int) -> dict[str, dict[str, float]]:
        self._last_step = step
        register_depth_chart(writer, self.kind)
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
                add_histogram_fast(writer, f"{self.kind}/{name}", v, step, summary=s)
        self.record(step, {name: s[self.depth_stat] for name, s in stats.items()})
        return stats

    def record(self, step: int, depth_values: dict[str, float]) -> None:
        """Keep the step's depth profile and feed the vanishing/exploding watch."""
        self.history[step] = dict(depth_values)
        if self._watch is not None:
            for line in self._watch.update(step, depth_values):
                self.warnings.append(line)
                rank_zero_warn(line)


class ActivationStats(_Diagnostics):
    """Variance and mean of every Linear's output on a fixed diagnostic batch, at the start of
    training (step 0 = the init), every `every_n_steps` optimizer steps, and at the end.

    The batch is `datamodule.diagnostic_batch(batch_size)`; without one, the first training
    batch is used (with a warning). Hooks are installed only around this extra forward pass,
    so training and validation batches are never measured and cost nothing."""

    kind = "activations"
    scalars = ("var", "mean")

    def __init__(self, every_n_steps: int = 200, batch_size: int = 1024, histograms: bool = True,
                 budget: float | None = None):
        super().__init__(every_n_steps, histograms, budget)
        self.batch_size = int(batch_size)
        self._x: torch.Tensor | None = None

    def on_train_start(self, trainer, pl_module):
        self._last_step = None
        if not trainer.is_global_zero or tensorboard_writer(trainer) is None:
            return
        with self.timed():
            batch = diagnostic_batch(trainer, self.batch_size)
            if batch is None:
                rank_zero_warn("The datamodule has no diagnostic_batch(n); activation statistics use the "
                               "first training batch instead.")
                return
            self._x = batch[0].to(pl_module.device)
            self._measure(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._x is None and trainer.is_global_zero and tensorboard_writer(trainer) is not None:
            with self.timed():
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                self._x = x[: self.batch_size].detach().clone()
                self._measure(trainer, pl_module)  # the init, before the first update

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._x is not None and trainer.is_global_zero and self._due(trainer.global_step):
            with self.timed():
                self._measure(trainer, pl_module)
            self._adapt_interval(trainer.global_step)

    def on_train_end(self, trainer, pl_module):
        if self._x is not None and trainer.is_global_zero and trainer.global_step != self._last_step:
            with self.timed():
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
    the optimizer steps that log cost anything (no host sync on the others).

    `var_band` = [low, high] of the weight-gradient variance: a layer outside it for `patience`
    logging steps in a row gets one warning (vanishing / exploding gradient)."""

    kind = "gradients"
    scalars = ("var", "norm")

    def __init__(self, every_n_steps: int = 200, histograms: bool = True, budget: float | None = None,
                 var_band: tuple[float | None, float | None] | None = (1e-14, 1e2), patience: int = 3):
        super().__init__(every_n_steps, histograms, budget)
        self.var_band = self.watch("weight-gradient variance", var_band, patience)

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
        with self.timed():
            grads = {name: m.weight.grad for name, m in linear_layers(_net(pl_module)).items()
                     if m.weight.grad is not None}
            self.log_values(writer, grads, trainer.global_step)
        self._adapt_interval(trainer.global_step)


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
            self._adapt_interval(trainer.global_step)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_step != self._last_step:
            self._measure(trainer, pl_module)

    def _measure(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        writer = tensorboard_writer(trainer)
        if writer is not None:
            with self.timed():
                self.log_values(writer, weights_of(_net(pl_module)), trainer.global_step)


class DistributionFigures(DrawsInBackground):
    """At the start and end of training and every `every_n_epochs` epochs:

    - the tutorial's plot_dists figures (activations, weight gradients, weights; one panel per
      layer, in a grid that stays readable in a TensorBoard card), as `distributions/<kind>`;
    - depth profiles: the depth statistic of every other diagnostics callback of the trainer
      (activation/gradient/weight variance, update ratio) vs layer index, one line per logged
      step so far, log y, as `depth/<kind>`.

    Both go to TensorBoard's Images tab and to `<run dir>/figures/<name>_step<NNNNNN>.png`. Titles
    name the run (init, optimizer with lr, activation) and the step/epoch.

    Activations and gradients are taken on the diagnostic batch (gradient of the cross-entropy
    loss, computed with autograd.grad so the training step's `.grad` is untouched).

    The values are taken on the spot; with `background=true` (default) the figures are drawn and
    written on a background thread while the training goes on, and the callback waits for them
    at teardown. `seconds` counts only the part on the training's path."""

    # the values, signed (the tutorial's "Grad magnitude" was not a magnitude)
    XLABELS = {"activations": "activation value", "gradients": "gradient value", "weights": "weight value"}

    def __init__(self, every_n_epochs: int = 0, batch_size: int = 1024,
                 kinds: tuple[str, ...] = ("activations", "gradients", "weights"),
                 save_png: bool = True, dirpath: str | None = None, depth_profiles: bool = True,
                 background: bool = True):
        unknown = set(kinds) - set(self.XLABELS)
        if unknown:
            raise ValueError(f"kinds={list(kinds)}: unknown {sorted(unknown)}; use {list(self.XLABELS)}")
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.kinds = tuple(kinds)
        self.save_png = bool(save_png)
        self.dirpath = dirpath
        self.depth_profiles = bool(depth_profiles)
        self.background = bool(background)
        self.seconds = 0.0
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step: int | None = None

    def on_train_start(self, trainer, pl_module):
        self._last_step = None
        if not trainer.is_global_zero or tensorboard_writer(trainer) is None:
            return
        batch = diagnostic_batch(trainer, self.batch_size)
        if batch is not None:
            self._batch = (batch[0].to(pl_module.device), batch[1].to(pl_module.device))
        self._draw(trainer, pl_module, "before training")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._batch is None and isinstance(batch, (list, tuple)) and len(batch) == 2:
            self._batch = tuple(t[: self.batch_size].detach().clone() for t in batch)

    def on_train_epoch_end(self, trainer, pl_module):
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module, f"end of epoch {trainer.current_epoch}")  # 0-based, as the epoch lines

    def on_train_end(self, trainer, pl_module):
        self._draw(trainer, pl_module, "end of training")

    def _draw(self, trainer, pl_module, when: str):
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last_step:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        self._last_step = step
        with self.timed():  # the measurement only: drawing goes on in the background
            out = Path(self.dirpath or trainer.default_root_dir) / "figures"
            label = run_label(pl_module)
            title = f"{label} · step {step} · {when}"
            net = _net(pl_module)
            values = distribution_values(net, self._batch, self.kinds)
            depth = []
            if self.depth_profiles:  # copies: the training goes on adding steps to the histories
                depth = [(cb.kind, cb.depth_stat, dict(cb.history)) for cb in each_callback(trainer.callbacks)
                         if isinstance(cb, _Diagnostics) and len(cb.history) > 1]  # one step: the probe shows it
            job = partial(_draw_and_save, values, layer_shapes(net), depth, title,
                          out if self.save_png else None, writer, step, label)
            if self.background:
                draw_in_background(job)
            else:
                job()


def _draw_and_save(values: dict, shapes: dict, depth: list, title: str, out: Path | None, writer, step: int,
                   label: str | None = None) -> None:
    figures = {f"distributions/{k}": f for k, f in plot_distribution_values(values, shapes, title).items()}
    for kind, stat, history in depth:
        # its own steps, not the drawing's: gradients and updates are not measured at the end of
        # training, so "step 585 · end of training" over lines that stop at 400 misled
        steps = sorted(history)
        own = f"{label} · logged at steps {steps[0]}–{steps[-1]}" if label is not None else title
        figures[f"depth/{kind}"] = depth_profile_figure(kind, stat, history, own)
    save_figures(figures, out, writer, step)


def save_figures(figures: dict, out: Path | None, writer, step: int) -> None:
    """Draw each figure once; write it as `<out>/<name>_step<N>.png` (atomically; the name is
    the tag's last part) and to TensorBoard under its tag (`distributions/<kind>` when the key
    has no slash)."""
    from callbacks.plotting import png_bytes, render
    from src.utils import atomic_write_bytes

    for key, fig in figures.items():
        tag = key if "/" in key else f"distributions/{key}"
        image = render(fig)
        if out is not None:
            prefix = "depth_" if tag.startswith("depth/") else ""
            atomic_write_bytes(out / f"{prefix}{tag.rsplit('/', 1)[-1]}_step{step:06d}.png", png_bytes(image))
        if writer is not None:
            writer.add_image(tag, image, global_step=step, dataformats="HWC")


def distribution_figures(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None,
                         kinds=("activations", "gradients", "weights"), title: str = "") -> dict:
    """{kind: matplotlib Figure} of the tutorial's plot_dists for `net` (activations and gradients
    need `batch`; they are skipped without one). `title` names the run and step."""
    return plot_distribution_values(distribution_values(net, batch, kinds), layer_shapes(net), title)


def layer_shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(m.weight.shape) for name, m in linear_layers(net).items()}


def distribution_values(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor] | None,
                        kinds=("activations", "gradients", "weights")) -> dict[str, dict[str, np.ndarray]]:
    """{kind: {layer: finite values as a numpy array}}: what distribution_figures draws, taken now
    (copies on the host, so the net may go on training)."""
    values_by_kind = {}
    for kind in kinds:
        if kind == "activations" and batch is not None:
            values = activations_of(net, batch[0])
        elif kind == "gradients" and batch is not None:
            values = weight_gradients_of(net, *batch)
        elif kind == "weights":
            values = weights_of(net)
        else:
            continue
        values_by_kind[kind] = {name: finite_values(v).float().cpu().numpy().copy() for name, v in values.items()}
    return values_by_kind


def plot_distribution_values(values_by_kind: dict, shapes: dict, title: str = "") -> dict:
    from callbacks.plotting import plot_dists

    headings = {"activations": "Activations (Linear outputs, diagnostic batch)",
                "gradients": "Weight gradients (diagnostic batch)", "weights": "Weights"}
    return {kind: plot_dists(arrays, shapes, xlabel=DistributionFigures.XLABELS[kind],
                             stat="density" if kind == "activations" else "count",
                             title=f"{headings[kind]}\n{title}" if title else headings[kind],
                             color={"activations": "C0", "gradients": "C1", "weights": "C2"}[kind])
            for kind, arrays in values_by_kind.items()}


DEPTH_YLABELS = {"activations": "activation variance", "gradients": "weight-gradient variance",
                 "weights": "weight variance", "updates": "update ratio ‖Δw‖/‖w‖"}


def depth_profile_figure(kind: str, depth_stat: str, history: dict[int, dict[str, float]], title: str):
    from callbacks.plotting import plot_depth_profile

    # the update ratio's usual healthy size (docs/diagnostics.md): far below it a layer barely moves
    guide = (1e-3, "~1e-3: a usual healthy update ratio") if kind == "updates" else None
    return plot_depth_profile(history, ylabel=DEPTH_YLABELS.get(kind, f"{kind} {depth_stat}"),
                              title=f"{DEPTH_YLABELS.get(kind, kind)} by depth\n{title}", guide=guide)
