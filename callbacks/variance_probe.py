"""Theory beside measurement: the variance each Linear's output (forward) and the gradient w.r.t. it
(backward) should have at init, next to what K independent init draws x B batches measure.

The prediction is the mean-field recursion of Glorot & Bengio / He et al. (derivation in
docs/diagnostics.md), per sample n, from the layer's fan-in and fan-out, its weight and bias
variance (the init's formula), the activation's Gaussian gain and the measured input:

    forward   v_n(l)   = fan_in(l)·σ_w²(l)·q_n(l) + σ_b²(l)      q_n(0) = mean_j x_nj²  (measured)
              q_n(l+1) = E_z[f(√v_n(l)·z)²]                        (ReLU: v/2, identity: v, tanh: < v)
    backward  g_n(L)   = E‖softmax(logits) − onehot‖²/C, logits ~ N(0, v_n(L)) (Monte Carlo, once)
              g_n(l)   = E_z[f'(√v_n(l)·z)²]·fan_out(l+1)·σ_w²(l+1)·g_n(l+1)

Predicted value of a layer = mean over samples (and batches). Measured: population variance of the
Linear's output, and of d(Σ_n loss_n)/d(output) (the per-sample loss, so a gradient does not shrink
with the batch size), per draw averaged over the batches; the band is the 95 % confidence interval
of the mean over draws (Student t). A layer whose prediction lies outside the band is flagged:
the difference is more than K draws of sampling noise explain, so an assumption of the theory
fails there (constant init: weights not random; a saturated softmax: the output gradient depends on
the weights it flows back through). A backward variance at or below its float32 rounding bound is
numerically zero (`summarize`): it agrees with a prediction no larger, and no trend is read
from it.

Used by probe.py (src/probe.py) and, inside training, by the `VarianceProbe` callback at step 0.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from callbacks.diagnostics import (
    DrawsInBackground,
    LinearOutputs,
    _net,
    diagnostic_batch,
    draw_in_background,
    linear_layers,
    run_label,
    tensorboard_writer,
)
from src.utils import atomic_write_json

QUANTITIES = ("forward", "backward")
GAUSS_HERMITE_NODES = 96  # for mean_energy's outer mean, whose integrand is smooth


# ---------------------------------------------------------------------------------------------
# What the init's formula says: weight and bias variance per layer
# ---------------------------------------------------------------------------------------------


def init_variances(init_scheme, net: nn.Module) -> list[tuple[float, float, str]]:
    """[(σ_w², σ_b², source)] per Linear, from the init scheme's formula (src/init.py); for a
    scheme without a known formula (or none), the variance of the net's current weights and
    biases (source "measured")."""
    from src import init as schemes

    out = []
    for index, layer in enumerate(linear_layers(net).values()):
        d_in, d_out = layer.in_features, layer.out_features
        kind = type(init_scheme)
        if kind is schemes.Const:
            w, b = 0.0, 0.0  # all equal: no variance (the mean is not 0: the theory does not apply)
        elif kind is schemes.Normal:
            w = b = init_scheme.std * init_scheme.std  # inf past 1e154, where `** 2` raises OverflowError
        elif kind is schemes.EqualVar:
            w, b = 1 / d_in, 0.0
        elif kind in (schemes.Xavier, schemes.XavierNormal):
            w, b = 2 / (d_in + d_out), 0.0
        elif kind is schemes.Kaiming:
            w, b = (1.0 if index == 0 else 2.0) / d_in, 0.0
        elif kind is schemes.KaimingGain:
            w, b = (1.0 if index == 0 else init_scheme.gain_for(net) ** 2) / d_in, 0.0
        elif kind is schemes.Default:  # torch's kaiming_uniform(a=√5): W, b ~ U[±1/√d_in]
            w = b = 1 / (3 * d_in)
        else:
            w = float(layer.weight.detach().double().var(correction=0))
            b = float(layer.bias.detach().double().var(correction=0)) if layer.bias is not None else 0.0
            out.append((w, b, "measured"))
            continue
        out.append((w, b, "formula"))
    return out


def activations_after(net: nn.Module) -> list[nn.Module | None]:
    """The activation module that follows each Linear (None after the last one). Needs the
    tutorial's layout: `net.layers` alternating Linear and activation."""
    layers = list(getattr(net, "layers", []))
    linears = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the variance theory needs a net with `layers` alternating nn.Linear and activation")
    acts = []
    for i in linears:
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        acts.append(None if nxt is None or isinstance(nxt, nn.Linear) else nxt)
    return acts


# ---------------------------------------------------------------------------------------------
# The theory
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _gauss_hermite() -> tuple[torch.Tensor, torch.Tensor]:
    z, w = np.polynomial.hermite_e.hermegauss(GAUSS_HERMITE_NODES)  # weight e^{-z²/2}
    return torch.from_numpy(z), torch.from_numpy(w / w.sum())


def _trapezoid(lo: float, hi: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n equally spaced nodes on [lo, hi] and their trapezoid weights."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    w = torch.full_like(x, (hi - lo) / (n - 1))
    w[[0, -1]] /= 2
    return x, w


@functools.lru_cache(maxsize=2)
def _standard_normal_trapezoid(half_width: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z on [-half_width, half_width] and weights for E[g(z)], z ~ N(0, 1)."""
    z, w = _trapezoid(-half_width, half_width, n)
    return z, w * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _gaussian_nodes(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes y and weights, one row per v (all <= 1 or all > 1), for E[g(y)], y ~ N(0, v), when
    g may bend at 0 (see gaussian_moments).

    v <= 1: a trapezoid in z = y/√v on |z| <= 12. v > 1: the Gaussian is wider than the
    activation's features (tanh bends within |y| < 3), so trapezoids in y on |y| <= 6 and in ln|y|
    beyond, out to 12 standard deviations (a trapezoid in y on those geometric points overweights
    the tail by (ln r)²/6: 5e-5 of E[f²] at v = 1e8). Even node counts put no node at y = 0, where
    a kinked f' jumps (a node there weighs torch's one-sided slope: a leaky ReLU's E[f'²] was 0.2 %
    off at v = 1)."""
    v = v[:, None]
    if bool((v <= 1).all()):
        z, w = _standard_normal_trapezoid(12.0, 4800)
        return v.sqrt() * z, w.expand(len(v), -1)
    inner, w_inner = _trapezoid(-6.0, 6.0, 2400)
    s, w_s = _trapezoid(0.0, 1.0, 600)
    span = torch.log(12 * v.sqrt()) - math.log(6.0)  # of ln|y| beyond 6
    outer = torch.exp(math.log(6.0) + span * s)
    w_outer = w_s * span * outer  # dy = y·d(ln y)
    w_inner = w_inner.expand(len(v), -1).clone()
    w_inner[:, [0, -1]] += w_outer[:, :1]  # y = ±6 ends both pieces
    y = torch.cat([-outer[:, 1:].flip(1), inner.expand(len(v), -1), outer[:, 1:]], dim=1)
    w = torch.cat([w_outer[:, 1:].flip(1), w_inner, w_outer[:, 1:]], dim=1)
    return y, w * torch.exp(-y * y / (2 * v)) / torch.sqrt(2 * math.pi * v)


def gaussian_moments(act: nn.Module, v, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(E[f(y)²], E[f'(y)²]) for y ~ N(0, v_i), for each v_i > 0; within 2e-6 of adaptive
    quadrature for v in [1e-12, 1e12] (tested). Gauss-Hermite, used before, converges slowly
    across a kink at 0 (ELU's E[f'²] was 0.5 % off at v = 1), hence trapezoids (`_gaussian_nodes`),
    up to `chunk` values of v through the activation at once."""
    v = torch.as_tensor(np.asarray(v, dtype=np.float64))
    q, d = torch.empty_like(v), torch.empty_like(v)
    for part in (torch.nonzero(v <= 1).flatten(), torch.nonzero(v > 1).flatten()):
        for rows in part.split(chunk):
            y, w = _gaussian_nodes(v[rows])
            with torch.enable_grad():
                y.requires_grad_(True)
                out = act(y)
                (slope,) = torch.autograd.grad(out.sum(), y)
            q[rows], d[rows] = (out.detach() ** 2 * w).sum(1), (slope**2 * w).sum(1)
    return q.numpy(), d.numpy()


@functools.lru_cache(maxsize=16)
def _moment_table(act_key: str, act: nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ln v grid, E[f²]/v and E[f'²] on it (both smooth in ln v), for cubic interpolation."""
    log_v = np.linspace(math.log(1e-8), math.log(1e8), 161)
    q, d = gaussian_moments(act, np.exp(log_v))
    return log_v, q / np.exp(log_v), d


def gaussian_gains(act: nn.Module | None, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[f(y)²], E[f'(y)²]) for y ~ N(0, v), elementwise in `v` (float64). Identity: (v, 1);
    ReLU: (v/2, 1/2) exactly — the factor 2 of Kaiming's gain √2; others (tanh, GELU, ELU,
    leaky ReLU) from a table of accurate integrals, interpolated in ln v."""
    if act is None or isinstance(act, nn.Identity):
        return v.clone(), torch.ones_like(v)
    if isinstance(act, nn.ReLU):
        return v / 2, torch.full_like(v, 0.5)
    from scipy.interpolate import CubicSpline

    log_v, q_ratio, d = _moment_table(repr(act), act)
    v = np.clip(v.numpy(), 0, None)
    lv = np.log(np.clip(v, 1e-8, 1e8))
    q, d = CubicSpline(log_v, q_ratio)(lv) * v, CubicSpline(log_v, d)(lv)
    # Outside the table the ratios are not flat (tanh: E[f²] -> 1 as v grows; ELU: E[f'²] =
    # 1 - O(√v) as v shrinks), so a vanishing or exploding layer gets the integrals themselves;
    # v = 0 gets their limit.
    outside = np.flatnonzero((v < 1e-8) | (v > 1e8))
    if len(outside):
        at = np.maximum(v[outside], 1e-300)
        q_at, d[outside] = gaussian_moments(act, at)
        q[outside] = q_at / at * v[outside]
    return torch.from_numpy(q), torch.from_numpy(d)


@functools.lru_cache(maxsize=8)
def _softmax_gradient_table(classes: int, samples: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """log10 v grid and E‖softmax(ℓ) − e_y‖²/C for ℓ ~ N(0, v·I_C), y uniform and independent of ℓ
    (so E[p_y] = 1/C): (E[Σp²] − 2/C + 1)/C. Scrambled Sobol normals (the same for every v, so
    the curve is smooth in v; error ~1e-4 relative)."""
    sobol = torch.quasirandom.SobolEngine(classes, scramble=True, seed=0).draw(samples, dtype=torch.float64)
    z = torch.special.ndtri(sobol.clamp(1e-12, 1 - 1e-12))
    log_v = np.linspace(-10, 8, 73)  # every quarter decade; cubic interpolation in between
    scale = torch.from_numpy(10.0 ** (log_v / 2))[:, None, None]
    sum_p2 = torch.cat([torch.softmax(z[None] * chunk, dim=2).pow(2).sum(2).mean(1) for chunk in scale.split(16)])
    return log_v, ((sum_p2 - 2 / classes + 1) / classes).numpy()


def softmax_gradient_second_moment(v: torch.Tensor, classes: int) -> torch.Tensor:
    from scipy.interpolate import CubicSpline

    log_v, g = _softmax_gradient_table(classes)
    lv = np.log10(np.clip(v.numpy(), 10.0**log_v[0], 10.0**log_v[-1]))
    return torch.from_numpy(CubicSpline(log_v, g)(lv))


def mean_energy(act: nn.Module | None, common: float, spread: float) -> float:
    """E_u[(E_z f(√common·u + √spread·z))²] for independent standard normal u, z: the energy of the
    per-unit mean over samples after the activation, when each unit's pre-activation has a part
    shared by all samples (variance `common`) and a per-sample part (variance `spread`).

    The inner mean is a trapezoid in z: f's kink (ReLU's at 0) sits at a different z for each u,
    where Gauss-Hermite converges slowly (0.4 % off for E[relu(z)] at 96 nodes); the outer one is
    Gauss-Hermite in u, since the inner mean is smooth in u (within 3e-5 of quadrature, tested)."""
    if act is None or isinstance(act, nn.Identity):
        return common
    u, w_u = _gauss_hermite()
    z, w_z = _standard_normal_trapezoid(8.0, 1601)
    grid = math.sqrt(max(common, 0.0)) * u[:, None] + math.sqrt(max(spread, 0.0)) * z[None, :]
    with torch.no_grad():
        inner = (act(grid) * w_z[None, :]).sum(1)
    return float((inner**2 * w_u).sum())


def predict(net: nn.Module, x: torch.Tensor, variances: list[tuple[float, float, str]]) -> dict[str, list[float]]:
    """Predicted forward and backward variance per Linear for input batch `x` (see the module
    docstring), averaged over the batch's samples.

    The forward value is the expected *population* variance over samples and units, the number
    measured: E[y²] minus the expected square of the grand mean, E[ȳ²] = c/fan_out, where c is the
    variance of a unit's mean over samples (σ_w²·‖x̄‖² + σ_b², x̄ = the inputs' mean over the
    batch; propagated with `mean_energy`). It matters only for narrow layers (the 10 logits)."""
    acts = activations_after(net)
    layers = list(linear_layers(net).values())
    flat = x.detach().reshape(len(x), -1).double().cpu()
    q = flat.pow(2).mean(1)  # per-sample second moment of the input
    mean_sq = float(flat.mean(0).pow(2).mean())  # energy of the input's mean over the batch
    forward, totals, slopes = [], [], []
    for layer, act, (w_var, b_var, _) in zip(layers, acts, variances, strict=True):
        v = layer.in_features * w_var * q + b_var
        common = layer.in_features * w_var * mean_sq + b_var
        totals.append(v)
        forward.append(float(v.mean()) - common / layer.out_features)
        mean_sq = mean_energy(act, common, float(v.mean()) - common)
        q, slope = gaussian_gains(act, v)
        slopes.append(slope)
    g = softmax_gradient_second_moment(totals[-1], layers[-1].out_features)
    backward = [g]
    for i in range(len(layers) - 2, -1, -1):
        g = slopes[i] * layers[i + 1].out_features * variances[i + 1][0] * g
        backward.insert(0, g)
    return {"forward": forward, "backward": [float(g.mean()) for g in backward]}


# ---------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------


def measure(net: nn.Module, x: torch.Tensor, y: torch.Tensor, rounding: bool = False) -> dict[str, list[float]]:
    """One forward + backward on (x, y): per Linear the variance of its output (forward), of the
    gradient of the summed per-sample losses w.r.t. that output (backward) and of the weight
    gradient of the mean loss (weight_gradient, the tutorial's number); with `rounding`, also the
    most float32 rounding alone can put in the backward variance (rounding_bound, see
    `_rounding_bounds`). One host transfer."""
    layers = linear_layers(net)
    with torch.inference_mode(False), torch.enable_grad():
        with LinearOutputs(net, detach=False) as outs:
            logits = net(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        outputs = [outs.values[n] for n in layers]
        grads = torch.autograd.grad(loss, outputs + [m.weight for m in layers.values()])
        # from this forward and backward: a second pass over the batch only repeated them
        bounds = _rounding_bounds(net, outputs, grads[: len(layers)]) if rounding else []
    n = len(x)
    rows = []
    # Reduce in float64 (as tensor_stats does): a float32 output of ~1e22 is finite, its square is not.
    for i, (out, d_out, d_w) in enumerate(zip(outputs, grads[: len(layers)], grads[len(layers):], strict=True)):
        row = [out.detach().double().var(correction=0), d_out.double().var(correction=0),
               (d_w.double() / n).var(correction=0)]
        rows.append(torch.stack(row + bounds[i:i + 1]))  # the bound, if any, rides in the same transfer
    table = torch.stack(rows).cpu().tolist()
    result = {"forward": [r[0] for r in table], "backward": [r[1] for r in table],
              "weight_gradient": [r[2] for r in table]}
    if rounding:
        result["rounding_bound"] = [r[3] for r in table]
    return result


def redraw(net: nn.Module, init_scheme, seed: int) -> nn.Module:
    """A copy of `net` with freshly drawn weights: torch's default init, then `init_scheme`, from
    `seed`, without touching the caller's random streams."""
    fresh = copy.deepcopy(net)
    device = next(net.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for layer in linear_layers(fresh).values():
            layer.reset_parameters()
        if init_scheme is not None:
            init_scheme(fresh)
    return fresh


def probe_variances(net: nn.Module, init_scheme, batches: list[tuple[torch.Tensor, torch.Tensor]],
                    draws: int = 10, seed: int = 0, tolerance: float = 0.1) -> dict:
    """Measure `draws` init draws (draw 0 = `net` as it is, draw k = seed + k) on every batch and
    predict each. Returns the per-layer report (see `summarize`) plus the raw arrays."""
    if draws < 1 or not batches:
        raise ValueError(f"draws={draws} must be >= 1 and at least one batch is needed")
    names = list(linear_layers(net))
    raw = {q: np.zeros((draws, len(batches), len(names))) for q in ("forward", "backward", "weight_gradient")}
    pred = {q: np.zeros((draws, len(batches), len(names))) for q in QUANTITIES}
    # float32 rounding bound of draw 0's backward variances: the other draws of an init are alike in scale
    bound = np.zeros((len(batches), len(names)))
    for k in range(draws):
        net_k = net if k == 0 else redraw(net, init_scheme, seed + k)
        variances = init_variances(init_scheme, net_k)  # per draw: "measured" ones differ between draws
        for b, (x, y) in enumerate(batches):
            m = measure(net_k, x, y, rounding=k == 0)
            for q in raw:
                raw[q][k, b] = m[q]
            if k == 0:
                bound[b] = m["rounding_bound"]
            p = predict(net_k, x, variances)
            for q in QUANTITIES:
                pred[q][k, b] = p[q]
    layers = linear_layers(net)
    # Here, not in each caller: probe.py and the training callback then flag, read trends and draw
    # alike (the callback flagged the constant init's 1e-19 noise as "an assumption fails").
    report = summarize(names, raw, pred, tolerance, rounding_bound=bound)
    for name, (w_var, b_var, source), layer in zip(names, init_variances(init_scheme, net), layers.values(), strict=True):
        report["layers"][name].update(fan_in=layer.in_features, fan_out=layer.out_features,
                                      weight_var=w_var, bias_var=b_var, variance_source=source)
    report.update(draws=draws, batches=len(batches), batch_size=int(len(batches[0][0])), tolerance=tolerance,
                  seeds=[None] + [seed + k for k in range(1, draws)])
    # the noise layers on the diagnostic batch (draw 0, batch 0: the tutorial's table)
    report["rounding_noise_draw_0"] = rounding_noise(names, list(raw["backward"][0, 0]), list(bound[0]))
    return report


def summarize(names: list[str], raw: dict[str, np.ndarray], pred: dict[str, np.ndarray],
              tolerance: float = 0.1, rounding_bound: np.ndarray | None = None) -> dict:
    """Per layer and quantity: predicted (mean over draws and batches), measured mean, 95 % band
    of the mean over draws (t interval on the per-draw means, cut at 0), per-draw means, flag.

    Flag: the prediction lies outside the band *and* more than `tolerance` (relative) away from
    the measured mean. The band alone would flag, at 10 draws, ~1 layer in 20 by chance and any
    of the O(1/width) effects the mean-field theory leaves out (a few %, docs/diagnostics.md).
    Flag None: not compared, the measured or the predicted mean is not finite.

    With `rounding_bound` (draw 0's per batch and layer, `measure(rounding=True)`), each backward
    row also has its mean over the batches, `rounding_bound` (None for the logits), and
    `numerically_zero`: the measured mean is rounding noise (`rounding_noise`). A prediction no
    larger than that noise (the constant init's 0: Σ_c ∂loss/∂logit_c = 0 for every sample, so
    equal weights pass on exactly 0) agrees with it: no flag, and no ratio of noise to a
    prediction. A prediction above it is flagged as anywhere else: the gradient does not arrive."""
    from scipy import stats

    draws = raw["forward"].shape[0]
    # The noise first: it runs down from the layer above, so it is known before any flag is set.
    noise, mean_bound = [], None
    if rounding_bound is not None:
        mean_bound = np.asarray(rounding_bound).mean(axis=0)
        backward = [float(raw["backward"][:, :, i].mean(axis=1).mean()) for i in range(len(names))]
        noise = rounding_noise(names, backward, list(mean_bound))
    layers = {}
    for i, name in enumerate(names):
        row = {}
        for q in QUANTITIES:
            per_draw = raw[q][:, :, i].mean(axis=1)
            predicted = float(pred[q][:, :, i].mean())
            mean = float(per_draw.mean())
            if draws > 1 and np.all(np.isfinite(per_draw)):
                half = float(stats.t.ppf(0.975, draws - 1) * per_draw.std(ddof=1) / math.sqrt(draws))
            else:
                half = float("nan")
            # A variance is >= 0: the t band's lower end is cut at 0 (a few draws of a spread-out
            # layer would print a negative variance). A prediction is >= 0 too, so no flag changes.
            lo, hi = max(mean - half, 0.0), mean + half
            outside = half == half and not lo <= predicted <= hi
            comparable = math.isfinite(mean) and math.isfinite(predicted)
            noisy = q == "backward" and name in noise
            # no larger than the noise level (the bound, or what was measured where the noise came
            # in from above), a prediction agrees with the noise
            agrees_with_noise = (noisy and _finite(predicted)
                                 and predicted <= max(mean_bound[i], mean, hi if _finite(hi) else 0.0))
            if agrees_with_noise:
                flag = False
            elif comparable:
                flag = bool(outside and abs(mean - predicted) > tolerance * abs(predicted))
            else:
                flag = None
            row[q] = {"predicted": predicted, "mean": mean, "lo": lo, "hi": hi, "flag": flag,
                      "ratio": mean / predicted if predicted > 0 and not noisy else None,
                      "draws": [float(v) for v in per_draw]}
            if q == "backward" and mean_bound is not None:
                row[q].update(rounding_bound=None if math.isnan(mean_bound[i]) else float(mean_bound[i]),
                              numerically_zero=noisy)
        row["weight_gradient"] = {"mean": float(raw["weight_gradient"][:, :, i].mean())}
        layers[name] = row
    return {"layers": layers,
            "flags": {q: [n for n in names if layers[n][q]["flag"]] for q in QUANTITIES}}


def flag_lines(report: dict) -> list[str]:
    """One line per flagged layer: measured mean [band] vs predicted."""
    lines = []
    for q in QUANTITIES:
        for name in report["flags"][q]:
            r = report["layers"][name][q]
            lines.append(f"probe: {q} variance of {name} measured {r['mean']:.3g} "
                         f"[95% band {r['lo']:.3g}, {r['hi']:.3g}] but predicted {r['predicted']:.3g}: "
                         "an assumption of the theory fails here (docs/diagnostics.md)")
    return lines


# ---------------------------------------------------------------------------------------------
# Numerically zero: a measured backward variance that is float32 rounding noise
# ---------------------------------------------------------------------------------------------


def _rounding_eps(t: torch.Tensor) -> float:
    """The relative rounding of the matmuls that made `t`: float32's ε, or TF32's / bfloat16's
    where CUDA matmuls are allowed to use them (torch.set_float32_matmul_precision)."""
    if t.is_cuda and t.dtype == torch.float32:
        return {"high": 2.0 ** -10, "medium": 2.0 ** -7}.get(torch.get_float32_matmul_precision(),
                                                            torch.finfo(t.dtype).eps)
    return torch.finfo(t.dtype).eps


def _rounding_bounds(net: nn.Module, outputs: list[torch.Tensor], deltas: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per Linear, from its output and δ = ∂loss/∂output (measure's), the most that float32
    rounding alone can put in δ's variance: float64 scalars, NaN for the logits (nothing sums
    into them). Needs grad mode (f' is a vector-Jacobian product).

    δ_l = f'(y_l) ⊙ (δ_{l+1} @ W_{l+1}) sums n = fan_out(l+1) terms per entry; a float sum of n
    terms is off by at most n·ε·Σ|term| (the standard bound, γ_n ≈ n·u with u = ε/2: the factor 2
    leaves room for the rounding of δ_{l+1} itself, such as a softmax that sums to 1 ± ε). So a
    δ_l whose true value is constant (its variance 0) measures at most
    (n·ε)²·mean((f'(y_l)·(|δ_{l+1}| @ |W_{l+1}|))²): the bound. A genuine variance is about
    1/n of that sum's square (terms of random sign), far above (n·ε)² of it."""
    layers, acts = list(linear_layers(net).values()), activations_after(net)
    bounds = []
    for i in range(len(layers) - 1):
        weight = layers[i + 1].weight.detach()
        terms = deltas[i + 1].abs() @ weight.abs()  # Σ_j |δ_j|·|W_ji|: the sum without cancellation
        if acts[i] is not None:  # times f'(y): an elementwise activation's vector-Jacobian product
            y_i = outputs[i].detach().requires_grad_()
            terms = torch.autograd.grad(acts[i](y_i), y_i, grad_outputs=terms)[0]
        bounds.append((weight.shape[0] * _rounding_eps(deltas[i])) ** 2 * terms.double().pow(2).mean())
    return bounds + [torch.full((), math.nan, dtype=torch.float64, device=deltas[-1].device)]


def rounding_noise(names: list[str], measured, bound) -> list[str]:
    """The layers whose measured backward variance is float32 rounding noise: at most its bound,
    or below a layer whose δ is noise (δ_l is linear in δ_{l+1}: noise in, noise out, whatever
    its size). Top-down, as the gradient flows."""
    noise: list[str] = []
    for i in range(len(names) - 2, -1, -1):
        above = names[i + 1] in noise
        if above or (math.isfinite(measured[i]) and math.isfinite(bound[i]) and measured[i] <= bound[i]):
            noise.append(names[i])
    return [n for n in names if n in noise]


def figure_report(report: dict) -> dict:
    """The report as probe.png draws it: a measured variance that is rounding noise set to 0 (off
    the log axis), so no point, band or line is drawn from the noise."""
    shown = copy.deepcopy(report)
    for row in shown["layers"].values():
        for q in QUANTITIES:
            if row[q].get("numerically_zero"):
                row[q].update(mean=0.0, lo=0.0, hi=0.0, draws=[0.0] * len(row[q]["draws"]))
    return shown


# ---------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _ends(values: list[float]) -> tuple[int, int] | None:
    """Positions of the first and last known values (not None, not NaN, not inf), when both are > 0."""
    known = [i for i, v in enumerate(values) if _finite(v)]  # an inf end would make the factor ×inf or ÷0
    if len(known) < 2 or values[known[0]] <= 0 or values[known[-1]] <= 0:
        return None
    return known[0], known[-1]


def trend_sentence(values: list[float], names: list[str], what: str, direction: str = "with depth") -> str:
    """`Forward variance shrinks ×9.2 per layer with depth (×3e+03 from layers.0 to layers.6): vanishing.`

    The per-layer factor is the geometric mean between the first and the last known value, per
    position (a layer without a value between them still counts). Vanishing/exploding: more than
    ×2 per layer; stable: all values within ×2; in between, a mild decay or growth (the per-layer
    factor is within ×2 but adds up), or, when the last value is within ×2 of the first but the
    middle is not, uneven (a bump is no trend)."""
    ends = _ends(values)
    finite = [v for v in values if _finite(v) and v > 0]
    if ends is None:
        return f"{what}: no positive values to compare."
    first, last = ends
    ratio = values[last] / values[first]
    factor = ratio ** (1 / (last - first))
    spread = max(finite) / min(finite)
    span = f"{names[first]} to {names[last]}"
    if spread < 2:  # then the ends are within ×2 too, so the per-layer factor is as well
        return f"{what} stays within ×{spread:.3g} from {span}: stable."
    if max(ratio, 1 / ratio) < 2:
        return (f"{what} varies ×{spread:.3g} from {span} but ends within ×{max(ratio, 1 / ratio):.3g} of where "
                f"it started: uneven, no trend {direction}.")
    verb, per_layer = ("shrinks", 1 / factor) if factor < 1 else ("grows", factor)
    verdict = ("vanishing" if factor < 1 else "exploding") if not 0.5 <= factor <= 2 else \
        ("mild decay" if factor < 1 else "mild growth")
    return f"{what} {verb} ×{per_layer:.3g} per layer {direction} (×{spread:.3g} from {span}): {verdict}."


def _reading_order(report: dict, q: str) -> list[str]:
    """Forward over the hidden layers (the logits have no activation to keep in range), backward
    from the last hidden layer to the input (the logits' gradient starts it)."""
    names = list(report["layers"])
    hidden = names[:-1] if len(names) > 2 else names
    return hidden if q == "forward" else list(reversed(hidden))


def _trend_parts(report: dict, q: str) -> tuple[str | None, list[str]]:
    """(the trend over the layers whose variance is a measurement, the layers whose variance is
    rounding noise), in `_reading_order`. The noise is left out of the factor and the spread (it
    read the constant init's 1e-19 noise as "varies ×2.68 ... uneven"); the trend is None when
    fewer than two values are left beside it."""
    order = _reading_order(report, q)
    what, direction = ("Forward variance", "with depth") if q == "forward" else ("Backward variance", "towards the input")
    zeros = [n for n in order if report["layers"][n][q].get("numerically_zero")]
    values = [None if n in zeros else report["layers"][n][q]["mean"] for n in order]
    if zeros and sum(_finite(v) and v > 0 for v in values) < 2:
        return None, zeros
    return trend_sentence(values, order, what, direction), zeros


def trends(report: dict) -> dict[str, str]:
    """The verdict per direction (`_trend_parts`), with the layers whose measured variance is
    numerically zero named as ≈ 0."""
    sentences = {}
    for q in QUANTITIES:
        rest, zeros = _trend_parts(report, q)
        parts = [rest] if rest else []
        if zeros:
            parts.append(f"{q.capitalize()} variance ≈ 0 at {', '.join(zeros)}: float32 rounding noise, no trend to read.")
        sentences[q] = " ".join(parts)
    return sentences


def _span(zeros: list[str], order: list[str]) -> str:
    """`from layers.6 to layers.0` for three or more neighbours (noise runs down from where it
    starts), else the names: one line of a terminal holds it at any depth."""
    at = [order.index(n) for n in zeros]
    if len(zeros) > 2 and at == list(range(at[0], at[0] + len(zeros))):
        return f"from {zeros[0]} to {zeros[-1]}"
    return f"at {', '.join(zeros)}"


def verdict_lines(report: dict) -> dict[str, list[str]]:
    """trends() for a panel title or the terminal, one part a line: the trend without its
    bracketed span and final stop ("Forward variance grows ×3.17 per layer with depth:
    exploding"), and where rounding noise was left out, "Backward variance ≈ 0 from layers.6 to
    layers.0: float32 rounding noise"."""
    lines = {}
    for q in QUANTITIES:
        rest, zeros = _trend_parts(report, q)
        lines[q] = [re.sub(r" \(×[^)]*\)", "", rest).rstrip(".")] if rest else []
        if zeros:
            lines[q].append(f"{q.capitalize()} variance ≈ 0 {_span(zeros, _reading_order(report, q))}: "
                            "float32 rounding noise")
    return lines


def variance_figure(report: dict, title: str):
    """Variance vs depth, log y: forward (top) and backward (bottom) panels, each with the measured
    band (95 % of the mean over draws), the single draws, the measured mean and the prediction."""
    from matplotlib.figure import Figure

    names = list(report["layers"])
    xs = np.arange(len(names))
    fig = Figure(figsize=(6.4, 8.2))
    lines = title.count("\n") + 1
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.1, top=1 - (0.085 + 0.026 * lines), hspace=0.62)
    # the answer on the figure, not only in the terminal: "shrinks ×9.2 per layer ...: vanishing."
    # (without the span in brackets, which the terminal keeps: the line has to fit the panel)
    verdicts = {q: [f"{line.split(' variance ', 1)[-1]}{', not drawn' if '≈ 0' in line else ''}."
                    for line in lines] for q, lines in verdict_lines(report).items()}
    report = figure_report(report)  # rounding noise drawn as 0: no points, band or line from it
    axes = fig.subplots(2, 1)
    labels = [f"{n}\n{report['layers'][n]['fan_in']}→{report['layers'][n]['fan_out']}" for n in names]
    heading = {"forward": "forward: variance of each Linear's output",
               "backward": "backward: variance of ∂loss/∂(Linear output), per sample"}
    for ax, q in zip(axes, QUANTITIES, strict=True):
        rows = [report["layers"][n][q] for n in names]
        mean = np.array([r["mean"] for r in rows])
        lo = np.array([r["lo"] for r in rows])
        hi = np.array([r["hi"] for r in rows])
        pred = np.array([r["predicted"] for r in rows])
        positive = np.where(mean > 0, mean, np.nan)
        floor = np.nanmin(positive) / 10 if np.any(np.isfinite(positive)) else 1e-12
        ax.fill_between(xs, np.clip(lo, floor, None), np.clip(hi, floor, None), color="C0", alpha=0.25,
                        linewidth=0, label="measured: 95 % band of the mean")
        for i, r in enumerate(rows):
            d = np.array(r["draws"])
            ax.plot(np.full(len(d), xs[i]), np.where(d > 0, d, np.nan), "o", color="0.55", markersize=2.5,
                    label="measured: single draws" if i == 0 else None)
        ax.plot(xs, positive, "-o", color="C0", markersize=4, linewidth=1.5, label="measured: mean")
        ax.plot(xs, np.where(pred > 0, pred, np.nan), "--x", color="C3", markersize=6, linewidth=1.5,
                label="predicted (mean field)")
        flagged = [i for i, r in enumerate(rows) if r["flag"]]
        if flagged:
            ax.plot(xs[flagged], positive[flagged], "o", markersize=11, markerfacecolor="none",
                    markeredgecolor="C3", markeredgewidth=1.5, label="flag: outside the band")
        zero = [names[i] for i in range(len(names)) if not pred[i] > 0 and mean[i] > 0]
        if zero:  # a prediction of 0 has no place on a log axis: say so under the panel's title
            where = zero[0] if len(zero) == 1 else f"{len(zero)} layers"
            ax.text(0.5, 1.0, f"predicted 0 at {where}: no weight variance, the theory does not apply",
                    transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="C3")
            ax.set_title("\n".join([heading[q], *verdicts[q], ""]), fontsize=9.5)
        ax.set_yscale("log")
        _at_least_a_decade(ax)  # so a flat profile looks flat, not like noise blown up
        ax.set_xticks(xs, labels, fontsize=8.5)
        if not zero:
            ax.set_title("\n".join([heading[q], *verdicts[q]]), fontsize=9.5)
        if q == "backward":  # read right to left: the gradient starts at the loss
            ax.set_xlabel("← the gradient flows from the loss (right) towards the input (left)", fontsize=8.5)
        ax.set_ylabel("variance", fontsize=9.5)
        ax.tick_params(axis="y", labelsize=8.5)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7.5, loc="best", frameon=True, framealpha=0.8)
    fig.suptitle(title, fontsize=10.5)
    return fig


def _at_least_a_decade(ax) -> None:
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 10:
        centre = math.sqrt(lo * hi)
        ax.set_ylim(centre / math.sqrt(10), centre * math.sqrt(10))


def save_probe_figure(figure, path: Path | None, writer, step: int = 0) -> None:
    """Render once; write `path` (atomically) and TensorBoard's `probe/variance_vs_depth`."""
    from callbacks.plotting import png_bytes, render
    from src.utils import atomic_write_bytes

    image = render(figure)
    if path is not None:
        atomic_write_bytes(path, png_bytes(image))
    if writer is not None:
        writer.add_image("probe/variance_vs_depth", image, global_step=step, dataformats="HWC")


def probe_title(label: str, report: dict) -> str:
    batches = f"{report['batches']} batch{'es' if report['batches'] != 1 else ''}"
    return f"Variance by depth at init: {label}\n{report['draws']} draws × {batches} of {report['batch_size']} images"


# ---------------------------------------------------------------------------------------------
# Inside training: the probe at step 0
# ---------------------------------------------------------------------------------------------


class VarianceProbe(DrawsInBackground):
    """At the start of a fresh run (step 0): the probe of the model as initialised (draw 0) plus
    `draws − 1` more init draws (the run's init config; seeds seed+1, seed+2, … with `seed` the
    run's seed, as probe.py; the training's random streams untouched), on `batches` batches of
    `batch_size` first training images. Writes `probe/variance_vs_depth` (Images tab),
    `<run dir>/probe.png` and `<run dir>/probe.json`; flagged layers go to `warnings`.
    Skipped on resume. Cost: ~(draws × batches) forward+backward passes of `batch_size`, once."""

    def __init__(self, draws: int = 10, batches: int = 1, batch_size: int = 1024, tolerance: float = 0.1,
                 save_png: bool = True):
        if draws < 1 or batches < 1 or batch_size < 1:
            raise ValueError(f"draws={draws}, batches={batches}, batch_size={batch_size}: each must be >= 1")
        if not tolerance >= 0:
            raise ValueError(f"tolerance={tolerance} must be >= 0 (relative, e.g. 0.1)")
        self.draws, self.batches, self.batch_size = int(draws), int(batches), int(batch_size)
        self.tolerance = float(tolerance)
        self.save_png = bool(save_png)
        self.seconds = 0.0
        self.warnings: list[str] = []
        self.report: dict | None = None

    def on_train_start(self, trainer, pl_module):
        if trainer.global_step != 0 or not trainer.is_global_zero:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        with self.timed():
            batch = diagnostic_batch(trainer, self.batches * self.batch_size)
            if batch is None:  # a datamodule without diagnostic_batch(n)
                return
            x, y = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
            batches = [(x[i:i + self.batch_size], y[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
            init_scheme = _init_scheme_of(pl_module)
            self.report = probe_variances(_net(pl_module), init_scheme, batches,
                                          draws=self.draws if init_scheme is not None else 1,
                                          seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), tolerance=self.tolerance)
            out = Path(trainer.default_root_dir)
            atomic_write_json(out / "probe.json", {"variance": self.report})
            # The figure is drawn while the training goes on (callbacks/diagnostics.py).
            title = probe_title(run_label(pl_module), self.report)
            draw_in_background(functools.partial(_draw_probe, self.report, title,
                                                 out / "probe.png" if self.save_png else None, writer))
        # The answer a student came for, before the first epoch: does the signal keep its size?
        said = verdict_lines(self.report)
        where = " (probe.png)" if self.save_png else ""
        # One verdict a line: together they overran an 80-column terminal mid-word.
        lines = [f"  {line.lower()}" for q in QUANTITIES for line in said[q]]
        print("\n".join([f"at init{where}:", *lines]), file=sys.stdout, flush=True)
        for line in flag_lines(self.report):
            self.warnings.append(line)
            rank_zero_warn(line)


def _draw_probe(report: dict, title: str, path: Path | None, writer) -> None:
    save_probe_figure(variance_figure(report, title), path, writer)


def _init_scheme_of(pl_module: pl.LightningModule):
    """The run's init scheme, rebuilt from the module's `init_cfg` record (`_target_` and the
    scheme's settings, src/module.py `describe`); None without one."""
    cfg = (getattr(pl_module, "hparams", None) or {}).get("init_cfg")
    if not cfg or "_target_" not in cfg:
        return None
    import hydra

    settings = {k: v for k, v in cfg.items() if not k.startswith("_")}  # no cached state (_gain)
    return hydra.utils.instantiate({"_target_": cfg["_target_"], **settings})
