"""How big each optimizer step is, per layer: the update-to-weight ratio ‖Δw‖/‖w‖ of the step the
optimizer actually took, and for Adam the distribution of effective per-element step sizes
η·m̂/(√v̂+ε). Works for any optimizer (the hand-written ones of src/optim.py and torch.optim alike):
the ratio is measured from the weights themselves, Adam's steps are read from its state.

Tags (TensorBoard):
    updates/ratio/<layer>             ‖w_after − w_before‖ / ‖w_before‖ of the logged step
    updates/adam_step_median/<layer>  median of |η·m̂/(√v̂+ε)| over the layer's weights (Adam only;
                                      from the histogram's buckets, ±0.05 decade)
    updates/adam_log10_step/<layer>   histogram of log10 |η·m̂/(√v̂+ε)| (Adam only)

Cost: on logging steps only, one copy of the weights before the step and one host transfer
after it; no extra forward or backward pass. Other steps: one integer comparison.
"""

from __future__ import annotations

import torch

from callbacks.diagnostics import (
    _Diagnostics,
    _net,
    add_histogram_fast,
    finite_values,
    histogram_counts,
    linear_layers,
    register_depth_chart,
    tensor_stats,
    tensorboard_writer,
)

# Where an Adam-like optimizer keeps its moments. torch.optim.Adam/AdamW and src.optim.Adam use
# exp_avg / exp_avg_sq / step (a tensor in torch, a float in ours); the tutorial's names are
# accepted too. amsgrad normalises by max_exp_avg_sq instead.
ADAM_STATE_KEYS = {"m": ("exp_avg", "param_momentum", "m"),
                   "v": ("exp_avg_sq", "param_2nd_momentum", "v"),
                   "step": ("step", "param_step", "t")}


def _first(state: dict, keys: tuple[str, ...]):
    return next((state[k] for k in keys if k in state), None)


def adam_effective_steps(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]
                         ) -> list[torch.Tensor] | None:
    """|η·m̂/(√v̂+ε)| per element for each of `params`, from the optimizer's state after a step
    (m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)); None when the optimizer keeps no Adam state.

    For Adam without weight decay this is exactly the step it just took; with coupled weight
    decay too (the decay is inside the gradient); for AdamW it is the adaptive part."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper
    group_of = {p: g for g in optimizer.param_groups for p in g["params"]}
    steps = []
    for p in params:
        state = optimizer.state.get(p) or {}
        group = group_of.get(p)
        m, v, t = (_first(state, ADAM_STATE_KEYS[k]) for k in ("m", "v", "step"))
        if group is None or m is None or v is None or t is None or "betas" not in group:
            return None
        if group.get("amsgrad") and "max_exp_avg_sq" in state:
            v = state["max_exp_avg_sq"]
        t = float(t)  # torch keeps a CPU scalar tensor (no device sync); ours a float
        beta1, beta2 = (float(b) for b in group["betas"])
        lr = float(group["lr"])
        m_hat = m.detach() / (1 - beta1**t)
        v_hat = v.detach() / (1 - beta2**t)
        steps.append((lr * m_hat / (v_hat.sqrt() + float(group["eps"]))).abs())
    return steps


class UpdateStats(_Diagnostics):
    """Per layer, the update-to-weight ratio ‖Δw‖/‖w‖ of the optimizer step taken at logging steps
    (every `every_n_steps` from step 0, aligned with GradientStats); for Adam also the effective
    per-element step sizes.

    The weights are copied in `on_before_optimizer_step` (after the backward, before the update)
    and compared in `on_train_batch_end` (after it). The step is logged under the index of the
    step it belongs to (gradient of step k, update of step k: same x).

    `ratio_band` = [low, high]: a layer outside it for `patience` logging steps in a row gets one
    warning (a ratio ~1e-3 is the usual healthy figure; ≪ 1e-6: the layer does not learn;
    ≳ 0.1: each step rewrites a good part of the weights)."""

    kind = "updates"
    scalars = ()
    depth_stat = "ratio"

    def __init__(self, every_n_steps: int = 200, histograms: bool = True, budget: float | None = None,
                 ratio_band: tuple[float | None, float | None] | None = (1e-6, 0.1), patience: int = 3):
        super().__init__(every_n_steps, histograms, budget)
        self.ratio_band = self.watch("update ratio ‖Δw‖/‖w‖", ratio_band, patience)
        self._before: dict[str, torch.Tensor] | None = None
        self._optimizer = None
        self._step: int | None = None

    def on_train_start(self, trainer, pl_module):
        self._last_step = None
        self._before = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        first = self.every_n_steps == 0 and self._last_step is None
        if not trainer.is_global_zero or not (first or self._due(step)):
            return
        if tensorboard_writer(trainer) is None:
            return
        with self.timed():
            self._before = {name: m.weight.detach().clone() for name, m in linear_layers(_net(pl_module)).items()}
            self._optimizer, self._step = optimizer, step
            self._last_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._before is None:
            return
        writer = tensorboard_writer(trainer)
        with self.timed():
            self._log(writer, pl_module)
        self._adapt_interval(self._step)

    def _log(self, writer, pl_module) -> None:
        before, self._before = self._before, None
        layers = linear_layers(_net(pl_module))
        names = [n for n in before if n in layers]
        # One host transfer: both norms of every layer.
        norms = torch.stack([torch.stack([torch.linalg.vector_norm(layers[n].weight.detach().float() - before[n].float()),
                                          torch.linalg.vector_norm(before[n].float())]) for n in names]).cpu().tolist()
        ratios = {n: (d / w if w > 0 else float("inf") if d > 0 else 0.0) for n, (d, w) in zip(names, norms, strict=True)}
        for n, r in ratios.items():
            if r == r and r != float("inf"):
                writer.add_scalar(f"updates/ratio/{n}", r, self._step)
        steps = adam_effective_steps(self._optimizer, [layers[n].weight for n in names])
        if steps is not None:
            self._log_adam_steps(writer, names, steps)
        register_depth_chart(writer, self.kind)
        self.record(self._step, ratios)

    def _log_adam_steps(self, writer, names: list[str], steps: list[torch.Tensor]) -> None:
        """Histogram of log10 |step| per layer and its median, read off the histogram's buckets
        (a sort of 400k values would cost 10x more; the bucket width is ~0.1 decade)."""
        logs = [torch.log10(s.reshape(-1).float().clamp_min(1e-30)) for s in steps]
        stats = tensor_stats(dict(zip(names, logs, strict=True)))
        for n, v in zip(names, logs, strict=True):
            # A NaN step (float16 weights with eps=1e-8, a diverging run) is left out, as the
            # other diagnostics leave it out: it has no bucket, and a layer of only NaN no median.
            if stats[n]["nonfinite"]:
                if stats[n]["nonfinite"] == v.numel():
                    continue
                v = finite_values(v)
            lo, hi = stats[n]["min"], stats[n]["max"]
            counts = histogram_counts(v, lo, hi, 64).cpu().tolist() if hi > lo else [v.numel()]
            writer.add_scalar(f"updates/adam_step_median/{n}", 10 ** _median_of_buckets(counts, lo, hi), self._step)
            if self.histograms:
                add_histogram_fast(writer, f"updates/adam_log10_step/{n}", v, self._step, summary=stats[n])


def _median_of_buckets(counts: list[int], lo: float, hi: float) -> float:
    """The median of values bucketed in equal buckets over [lo, hi], interpolated in its bucket."""
    half, seen = sum(counts) / 2, 0
    width = (hi - lo) / len(counts)
    for i, c in enumerate(counts):
        if seen + c >= half and c:
            return lo + width * (i + (half - seen) / c)
        seen += c
    return hi
