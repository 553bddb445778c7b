"""Loss-surface playground: the second half of the UvA-DL tutorial "Initialization and
Optimization" (pathological curvature, steep optima) as a Hydra app.

Two weights (w1, w2) start at ``surface.init`` and are optimized for ``surface.steps``
updates on a hand-made 2-D loss with the *same* optimizer classes the training app uses
(``src.optim``); the paths are saved, plotted and logged to TensorBoard.

    run(cfg, out_dir)                  # what `python surfaces.py` calls
      -> validate_surface(cfg.surface)     one-line ValueErrors for bad settings
      -> optimizer_configs(cfg)            the surface's three, or the one chosen by `optim=`
      -> train_curve(...)                  the tutorial's loop, one run per optimizer
      -> trajectories.json, surface_2d.png, surface_3d.png, tensorboard/

Plots use matplotlib's object-oriented API on an explicit Agg canvas: no pyplot global
state, so nothing ever opens a window and a sweep can't leak figures.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_method, instantiate
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from src.errors import ConfigError
from src.utils import atomic_write_json

# -----------------------------------------------------------------------------
# surfaces: plain functions of two tensors (scalars during optimization, grids when
# plotting), written exactly as in the tutorial so gradients match it bit for bit.


def pathological(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The tutorial's ``pathological_curve_loss``: a steep ravine along w1 (tanh²) with a
    slow slope along w2 (sigmoid). Plain SGD bounces between the ravine walls."""
    x1_loss = torch.tanh(w1) ** 2 + 0.01 * torch.abs(w1)
    x2_loss = torch.sigmoid(w2)
    return x1_loss + x2_loss


def bivar_gaussian(w1, w2, x_mean=0.0, y_mean=0.0, x_sig=1.0, y_sig=1.0):
    """Axis-aligned bivariate normal density (the tutorial's ``bivar_gaussian``)."""
    norm = 1 / (2 * np.pi * x_sig * y_sig)
    x_exp = (-1 * (w1 - x_mean) ** 2) / (2 * x_sig**2)
    y_exp = (-1 * (w2 - y_mean) ** 2) / (2 * y_sig**2)
    return norm * torch.exp(x_exp + y_exp)


def steep(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The tutorial's ``comb_func``: three narrow Gaussian wells in an almost flat plain.
    Far from a well the gradient is ~0, next to one it is huge: adaptive lr matters."""
    z = -bivar_gaussian(w1, w2, x_mean=1.0, y_mean=-0.5, x_sig=0.2, y_sig=0.2)
    z -= bivar_gaussian(w1, w2, x_mean=-1.0, y_mean=0.5, x_sig=0.2, y_sig=0.2)
    z -= bivar_gaussian(w1, w2, x_mean=-0.5, y_mean=-0.8, x_sig=0.2, y_sig=0.2)
    return z


def rosenbrock(
    w1: torch.Tensor, w2: torch.Tensor, a: float = 1.0, b: float = 100.0
) -> torch.Tensor:
    """Rosenbrock's banana valley (not in the tutorial): a curved, flat-bottomed ravine with
    its minimum 0 at (a, a²). The example for adding a surface with parameters."""
    return (a - w1) ** 2 + b * (w2 - w1**2) ** 2


# -----------------------------------------------------------------------------
# config validation: Hydra already rejects unknown groups/options; these are the
# value checks it can't do. Every problem is a ConfigError (a ValueError) with a one-line
# message, which surfaces.py (src/cli.py) turns into `error: ...` and exit code 2.

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class SurfaceSpec:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    target: str
    init: tuple[float, float]
    steps: int
    dtype: torch.dtype
    x_range: tuple[float, float] | None
    y_range: tuple[float, float] | None


def _is_number(x) -> bool:
    # bool is an int subclass, but `init: [true, 1]` is surely a typo
    return isinstance(x, int | float) and not isinstance(x, bool)


def _pair(value, what: str) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple | ListConfig)
        or len(value) != 2
        or not all(map(_is_number, value))
    ):
        raise ConfigError(f"{what} must be 2 numbers like [5, 5], got {_show(value)}")
    a, b = (float(v) for v in value)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ConfigError(f"{what} must be finite, got {_show(value)}")
    return a, b


def _range(value, what: str) -> tuple[float, float] | None:
    if value is None:
        return None  # auto: fit the trajectories
    lo, hi = _pair(value, what)
    if not lo < hi:
        raise ConfigError(f"{what} must be [low, high] with low < high, got {_show(value)}")
    return lo, hi


def _show(value) -> str:
    return repr(
        OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
    )


def validate_surface(surface: DictConfig) -> SurfaceSpec:
    """Check a `surface` config node and turn it into plain Python values."""
    target = surface.get("_target_")
    if not isinstance(target, str) or not target:
        raise ConfigError(
            "surface._target_ must name a function of (w1, w2), e.g. src.surfaces.pathological"
        )
    try:
        fn = get_method(target)
    except Exception as e:  # Hydra's message is multi-line; keep ours to one line
        raise ConfigError(
            f"surface._target_={target!r} is not an importable function ({type(e).__name__})"
        ) from None
    params = surface.get("params") or {}
    if params:  # optional keyword arguments for the surface function
        fn = functools.partial(fn, **OmegaConf.to_container(params, resolve=True))

    steps = surface.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise ConfigError(f"surface.steps must be a positive integer, got {_show(steps)}")
    dtype = surface.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ConfigError(f"surface.dtype must be one of {sorted(_DTYPES)}, got {_show(dtype)}")
    init = _pair(surface.get("init"), "surface.init")
    check_surface_function(fn, target, init, _DTYPES[dtype])
    return SurfaceSpec(
        name=str(surface.get("name", target.rsplit(".", 1)[-1])),
        fn=fn,
        target=target,
        init=init,
        steps=steps,
        dtype=_DTYPES[dtype],
        x_range=_range(surface.get("x_range"), "surface.x_range"),
        y_range=_range(surface.get("y_range"), "surface.y_range"),
    )


def check_surface_function(fn: Callable, target: str, init, dtype: torch.dtype) -> None:
    """Call the surface once at the start, as train_curve will: a loss it can differentiate.

    A function of the wrong shape (math.hypot returns a float, math.sqrt takes one argument)
    would otherwise fail deep in the optimizer loop with a traceback.
    """
    w = torch.tensor(init, dtype=dtype, requires_grad=True)
    try:
        with warnings.catch_warnings():  # math.* on a tensor warns before returning a float
            warnings.simplefilter("ignore")
            loss = fn(w[0], w[1])
    except Exception as e:
        msg = " ".join(str(e).split())
        raise ConfigError(
            f"surface._target_={target!r} must be a function of (w1, w2) on tensors; calling it "
            f"at surface.init failed: {type(e).__name__}: {msg}"
        ) from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
        got = (f"a tensor of shape {list(loss.shape)}" + ("" if loss.requires_grad else
               " with no gradient") if isinstance(loss, torch.Tensor) else type(loss).__name__)
        raise ConfigError(
            f"surface._target_={target!r} must return a 1-element loss tensor that depends on "
            f"(w1, w2) (torch ops, not math), got {got}"
        )
    if not torch.isfinite(loss.detach()).all():
        raise ConfigError(
            f"surface._target_={target!r} is {loss.item()} at surface.init={list(init)}: "
            "start where the loss is finite"
        )


def optimizer_configs(cfg: DictConfig, optim_label: str | None = None) -> dict[str, DictConfig]:
    """label -> partial optimizer config.

    Default (`optim` unset): the surface's own settings for the tutorial's three optimizers.
    With `optim=<name>` on the command line: just that one, with conf/optim/<name>.yaml's
    settings (plus any `optim.lr=...` overrides).
    """
    if cfg.get("optim") is not None:
        label = optim_label or str(cfg.optim.get("_target_", "optim")).rsplit(".", 1)[-1]
        return {label: cfg.optim}
    optimizers = cfg.surface.get("optimizers")
    if not optimizers:
        raise ConfigError(
            "no optimizer: the surface config has no `optimizers:` and no optim=... was given"
        )
    return dict(optimizers.items())


def make_optimizer_factory(label: str, optim_cfg: DictConfig) -> Callable:
    """Partial constructor params -> optimizer; bad settings become one-line ValueErrors."""
    if not isinstance(optim_cfg, DictConfig) or "_target_" not in optim_cfg:
        raise ConfigError(f"optimizer {label!r} needs a _target_ (e.g. src.optim.Adam)")
    kwargs = {}
    if str(optim_cfg["_target_"]).startswith("src.optim.") and "foreach" not in optim_cfg:
        # Our optimizers' per-parameter path (foreach=False) is the tutorial's update_param
        # op for op, so the paths are bit-identical to the tutorial's. With 2 weights in 1
        # tensor the fused foreach kernels buy nothing, and their different rounding matters
        # here: SGD at lr 10 on `pathological` is chaotic and turns last-bit differences
        # into a different trajectory. Still the same classes as training.
        kwargs["foreach"] = False
    try:
        factory = instantiate(optim_cfg, _partial_=True, **kwargs)
        factory([nn.Parameter(torch.zeros(2))])  # build once so bad kwargs (lr<=0, typos) fail here
    except Exception as e:
        cause = e.__cause__ or e  # Hydra wraps the real error in an InstantiationException
        msg = " ".join(str(cause).split())  # one line
        raise ConfigError(f"cannot build optimizer {label!r}: {msg}") from None
    return factory


# -----------------------------------------------------------------------------
# the tutorial's train_curve


def train_curve(
    optimizer_func: Callable,
    curve_func: Callable,
    num_updates: int = 100,
    init: tuple[float, float] = (5.0, 5.0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Optimize (w1, w2) on `curve_func`; returns [num_updates, 3] rows (w1, w2, loss).

    As in the tutorial, each row is recorded *before* an update: row t holds the weights
    after t updates and the loss *at* them. Row 0 is the start; the last update's result
    is not recorded.
    """
    weights = nn.Parameter(torch.tensor(init, dtype=dtype), requires_grad=True)
    optim = optimizer_func([weights])

    list_points = []
    for _ in range(num_updates):
        loss = curve_func(weights[0], weights[1])
        # torch.cat copies, so the in-place update below can't change the recorded row;
        # .to(dtype) only matters for a user surface that returns another dtype
        loss_row = loss.detach().to(dtype).reshape(1)
        list_points.append(torch.cat([weights.data.detach(), loss_row], dim=0))
        optim.zero_grad()
        loss.backward()
        optim.step()
    return torch.stack(list_points, dim=0)


def run_trajectories(cfg: DictConfig, optim_label: str | None = None) -> tuple[SurfaceSpec, dict]:
    """Validate `cfg` and run every selected optimizer: (spec, {label: (settings, points)})."""
    spec = validate_surface(cfg.surface)
    configs = optimizer_configs(cfg, optim_label)
    # build every optimizer first, so a bad setting fails before anything runs
    factories = {label: make_optimizer_factory(label, c) for label, c in configs.items()}
    results = {}
    for label, factory in factories.items():
        points = train_curve(factory, spec.fn, spec.steps, spec.init, spec.dtype)
        settings = OmegaConf.to_container(configs[label], resolve=True)
        settings.pop("_partial_", None)
        # the hyperparameters the optimizer ran with, defaults included (Adam's betas, eps)
        defaults = factory([nn.Parameter(torch.zeros(2))]).defaults
        for key in _SHOWN:
            if key in defaults and key not in settings:
                value = defaults[key]
                settings[key] = list(value) if isinstance(value, tuple) else value
        results[label] = (settings, points)
    return spec, results


# -----------------------------------------------------------------------------
# plotting

# the tutorial's colours for its three optimizers; anything else cycles through tab10
_COLORS = {"SGD": "red", "SGDMom": "blue", "Adam": "grey"}
_CYCLE = ["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def _color(label: str, i: int) -> str:
    return _COLORS.get(label, _CYCLE[i % len(_CYCLE)])


def auto_ranges(spec: SurfaceSpec, trajectories: dict[str, np.ndarray]):
    """Plot window: configured ranges, else the tutorial's rule (w1 symmetric around 0 out
    to max |w1|, w2 from min to max) over all points (row 0 is the start), plus a 5% margin."""
    pts = np.concatenate([p[:, :2] for p in trajectories.values()])
    pts = pts[np.isfinite(pts).all(axis=1)]  # a diverged run must not blow up the window

    def pad(lo, hi):
        if hi - lo < 1e-6:  # e.g. a single optimizer that never moved w2
            lo, hi = lo - 1.0, hi + 1.0
        m = 0.05 * (hi - lo)
        return lo - m, hi + m

    x_max = float(np.abs(pts[:, 0]).max())
    x_range = spec.x_range or pad(-x_max, x_max)
    y_range = spec.y_range or pad(float(pts[:, 1].min()), float(pts[:, 1].max()))
    return x_range, y_range


def surface_grid(spec: SurfaceSpec, x_range, y_range, n: int = 150):
    """Loss on an n x n grid; z[i, j] = f(x[i], y[j]) ("ij" indexing, as the tutorial)."""
    x = torch.linspace(x_range[0], x_range[1], n, dtype=spec.dtype)
    y = torch.linspace(y_range[0], y_range[1], n, dtype=spec.dtype)
    xx, yy = torch.meshgrid(x, y, indexing="ij")
    with torch.no_grad():
        zz = spec.fn(xx, yy)
    return xx.numpy(), yy.numpy(), zz.numpy()


def _inside(pts: np.ndarray, x_range, y_range) -> np.ndarray:
    """Copy of pts with points outside the window set to NaN (matplotlib skips NaNs)."""
    pts = pts.astype(np.float64, copy=True)
    out = (
        (pts[:, 0] < x_range[0])
        | (pts[:, 0] > x_range[1])
        | (pts[:, 1] < y_range[0])
        | (pts[:, 1] > y_range[1])
    )
    pts[out] = np.nan
    return pts


def fmt_number(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits, never "-0" (a loss of -1e-300 rounds to "0")."""
    text = f"{value:.{digits}g}"
    return "0" if float(text) == 0 else text


# what a legend shows of an optimizer's settings, and the defaults it leaves out
_SHOWN = {"lr": None, "momentum": None, "betas": None, "eps": 1e-8, "weight_decay": 0.0}


def settings_text(settings: dict | None) -> str:
    """`lr 10, momentum 0.9`: the hyperparameters a reader needs (defaults eps/weight_decay left out)."""
    parts = []
    for key, default in _SHOWN.items():
        value = (settings or {}).get(key)
        if value is None or value == default:
            continue
        if isinstance(value, list | tuple):
            parts.append(f"{key} ({', '.join(fmt_number(v) for v in value)})")
        else:
            parts.append(f"{key} {fmt_number(value)}")
    return ", ".join(parts)


def legend_label(label: str, settings: dict | None, final_loss: float | None = None) -> str:
    """`SGDMom (lr 10, momentum 0.9) → loss 0.00205`: the optimizer, its hyperparameters, its end."""
    hp = settings_text(settings)
    text = f"{label} ({hp})" if hp else label
    return text if final_loss is None else f"{text} → loss {fmt_number(final_loss)}"


def _border_point(inside: np.ndarray, outside: np.ndarray, x_range, y_range) -> np.ndarray:
    """Where the segment from a point inside the window to one outside crosses its border."""
    lo = np.array([x_range[0], y_range[0]])
    hi = np.array([x_range[1], y_range[1]])
    d = outside - inside
    t = 1.0
    for k in range(2):  # the first border the segment reaches
        if d[k] > 0:
            t = min(t, (hi[k] - inside[k]) / d[k])
        elif d[k] < 0:
            t = min(t, (lo[k] - inside[k]) / d[k])
    return inside + max(t, 0.0) * d


def _is_inside(point: np.ndarray, x_range, y_range) -> bool:
    return bool(x_range[0] <= point[0] <= x_range[1] and y_range[0] <= point[1] <= y_range[1])


def end_arrow(path: np.ndarray, x_range, y_range):
    """For a path that ends outside the window: the arrow's head (on the border, where the path
    last leaves the window, or on the way from the window's centre if it never was inside), its
    tail (inside), and where and how its label sits: (head, tail, label_xy, ha, va)."""
    end = path[-1, :2]
    flags = [_is_inside(p, x_range, y_range) for p in path[:, :2]]
    last_in = max((i for i, f in enumerate(flags) if f), default=None)
    centre = np.array([np.mean(x_range), np.mean(y_range)])
    anchor = path[last_in, :2] if last_in is not None else centre
    target = path[last_in + 1, :2] if last_in is not None else end
    border = _border_point(anchor, target, x_range, y_range)
    span = np.array([x_range[1] - x_range[0], y_range[1] - y_range[0]])
    direction = (end - border) / span
    direction /= max(np.linalg.norm(direction), 1e-12)
    tail = border - 0.09 * direction * span  # arrow inside the window, its head on the border
    offset = tail - 0.06 * direction * span  # the label beyond the tail, away from the border
    ha = "left" if direction[0] < -0.3 else "right" if direction[0] > 0.3 else "center"
    va = "bottom" if direction[1] < -0.3 else "top" if direction[1] > 0.3 else "center"
    return border, tail, offset, ha, va


def mark_end(ax, path: np.ndarray, color: str, label: str, x_range, y_range) -> str:
    """Mark where a path ends: a cross on the end point, or, when it ends outside the window, an
    arrow on the border pointing at it, labelled with its coordinates. Returns "inside"/"outside"."""
    end = path[-1, :2]
    if not np.isfinite(end).all():
        return "outside"
    if _is_inside(end, x_range, y_range):
        ax.plot(*end, marker="X", color=color, markeredgecolor="black", markersize=11, linestyle="none",
                zorder=11)
        return "inside"
    border, tail, offset, ha, va = end_arrow(path, x_range, y_range)
    ax.annotate("", xy=border, xytext=tail, zorder=12,
                arrowprops=dict(arrowstyle="-|>,head_width=0.5,head_length=0.9", color=color, lw=2.5,
                                shrinkA=0, shrinkB=0))
    text = f"{label} ends outside\nat ({fmt_number(end[0])}, {fmt_number(end[1])})"
    ax.text(*offset, text, color="black", fontsize=8, ha=ha, va=va, zorder=12,
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, alpha=0.85))
    return "outside"


def plot_2d(spec: SurfaceSpec, trajectories: dict[str, np.ndarray], x_range, y_range,
            settings: dict[str, dict] | None = None) -> Figure:
    """Heatmap + contours of the loss with each optimizer's path (the tutorial's 2-D view); the
    legend names each optimizer with its hyperparameters and final loss; each end is marked."""
    from matplotlib import patheffects
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    xx, yy, zz = surface_grid(spec, x_range, y_range)
    fig = Figure(figsize=(8, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # z is indexed [x, y]; imshow wants rows = y, hence the transpose with origin="lower"
    im = ax.imshow(zz.T, origin="lower", extent=(*x_range, *y_range), cmap="viridis", aspect="auto")
    ax.contour(xx, yy, zz, levels=15, colors="white", linewidths=0.5, alpha=0.4)
    fig.colorbar(im, ax=ax, label="loss", format=FuncFormatter(lambda v, _: fmt_number(v).replace("-", "\u2212")))
    ends = []
    for i, (label, pts) in enumerate(trajectories.items()):
        path = pts[:, :2]  # row 0 is the start, so each path visibly leaves from `init`
        color = _color(label, i)
        # earlier labels on top (as the tutorial's steep-optima plot): plain SGD's short path
        # would otherwise vanish under the others; alpha keeps the ones below visible
        # a thin white edge: the tutorial's grey (Adam) and blue vanished on the dark valley floor
        ax.plot(path[:, 0], path[:, 1], color=color, marker="o", markersize=3, linewidth=1, alpha=0.85,
                zorder=9 - i, label=legend_label(label, (settings or {}).get(label), float(pts[-1, 2])),
                path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white", alpha=0.6)])
        ends.append(mark_end(ax, pts, color, label, x_range, y_range))
    ax.plot(*spec.init, marker="*", color="white", markeredgecolor="black", markersize=14,
            linestyle="none", zorder=10, label="start")  # fmt: skip
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="X", color="white", markeredgecolor="black", markersize=9,
                          linestyle="none",
                          label="end (arrow on the border: ends outside)" if "outside" in ends else "end"))
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    dtype = str(spec.dtype).removeprefix("torch.")  # named only when it is not the tutorial's float32
    ax.set_title(f"{spec.name}: {spec.steps} steps from {spec.init}" + (f" ({dtype})" if dtype != "float32" else ""))
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    return fig


def plot_3d(spec: SurfaceSpec, trajectories: dict[str, np.ndarray], x_range, y_range,
            settings: dict[str, dict] | None = None) -> Figure:
    """The loss as a 3-D surface with the paths drawn on it (z = loss at each position); each
    path's end inside the window is marked, one outside is said in the legend."""
    from matplotlib.ticker import FuncFormatter

    xx, yy, zz = surface_grid(spec, x_range, y_range, n=100)
    fig = Figure(figsize=(8, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(xx, yy, zz, cmap="viridis", linewidth=0, antialiased=False, alpha=0.6)
    for i, (label, pts) in enumerate(trajectories.items()):
        path = _inside(pts, x_range, y_range)  # (w1, w2, loss): loss recorded at (w1, w2)
        color = _color(label, i)
        text = legend_label(label, (settings or {}).get(label), float(pts[-1, 2]))
        end = pts[-1]
        if np.isfinite(end).all() and _is_inside(end[:2], x_range, y_range):
            ax.plot([end[0]], [end[1]], [end[2]], marker="X", color=color, markeredgecolor="black",
                    markersize=10, linestyle="none", zorder=11)
        else:
            text += f", ends outside at ({fmt_number(end[0])}, {fmt_number(end[1])})"
        ax.plot(path[:, 0], path[:, 1], path[:, 2], color=color, marker="o", markersize=2.5,
                linewidth=1.2, zorder=10, label=text)  # fmt: skip
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.set_zlabel("loss")
    ax.zaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_number(v)))
    ax.set_title(f"{spec.name} (3-D), X = end of a path")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# outputs


def final_values(points: torch.Tensor) -> dict[str, float]:
    """The last recorded row (the tutorial's end point): weights and the loss at them."""
    w1, w2, loss = points[-1].tolist()
    return {"w1": w1, "w2": w2, "loss": loss}


def run(cfg: DictConfig, out_dir: str | os.PathLike, optim_label: str | None = None) -> dict:
    """The whole experiment; writes into `out_dir` and returns the trajectories.json dict.

    Raises ValueError (one-line message) for invalid settings, before anything is written.
    """
    spec, results = run_trajectories(cfg, optim_label)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    trajectories = {label: points.double().numpy() for label, (_, points) in results.items()}
    x_range, y_range = auto_ranges(spec, trajectories)
    finals = {label: final_values(points) for label, (_, points) in results.items()}

    record = {
        "surface": {
            "name": spec.name,
            "target": spec.target,
            "init": list(spec.init),
            "steps": spec.steps,
            "dtype": str(spec.dtype).removeprefix("torch."),
            "x_range": list(x_range),
            "y_range": list(y_range),
        },
        "columns": ["w1", "w2", "loss"],
        "note": "row t: weights after t updates and the loss at them (recorded before each "
        "update, as the tutorial's train_curve; row 0 is the start); 'final' is the last row",
        "trajectories": {
            label: {"optimizer": settings, "points": points.tolist(), "final": finals[label]}
            for label, (settings, points) in results.items()
        },
    }
    atomic_write_json(out_dir / "trajectories.json", record, indent=None)  # compact: 100s of rows

    settings = {label: opt for label, (opt, _) in results.items()}
    fig2d = plot_2d(spec, trajectories, x_range, y_range, settings)
    fig3d = plot_3d(spec, trajectories, x_range, y_range, settings)
    fig2d.savefig(out_dir / "surface_2d.png")
    fig3d.savefig(out_dir / "surface_3d.png")

    # imported late: tensorboard is slow to import and not needed to validate a config
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir / "tensorboard")) as tb:
        for label, (_, points) in results.items():
            for step, (w1, w2, loss) in enumerate(points.tolist()):  # step = updates so far
                tb.add_scalar(f"surface/{label}/loss", loss, step)
                tb.add_scalar(f"surface/{label}/w1", w1, step)
                tb.add_scalar(f"surface/{label}/w2", w2, step)
        # the PNGs just written, not add_figure: that would render each figure a second time
        for tag, png in (("surface/2d", "surface_2d.png"), ("surface/3d", "surface_3d.png")):
            tb.add_image(tag, mpimg.imread(out_dir / png)[..., :3], dataformats="HWC")
        tb.add_text("surface/config", f"```\n{json.dumps(record['surface'], indent=1)}\n```")
    return record


def summary_table(record: dict) -> str:
    s = record["surface"]
    lines = [
        f"surface {s['name']} ({s['dtype']}), {s['steps']} steps from {tuple(s['init'])}",
        f"{'optimizer':<12} {'w1':>14} {'w2':>14} {'loss':>14}   settings",
    ]
    for label, t in record["trajectories"].items():
        f = t["final"]
        w1, w2, loss = (fmt_number(f[k], 6) for k in ("w1", "w2", "loss"))
        lines.append(f"{label:<12} {w1:>14} {w2:>14} {loss:>14}   {settings_text(t['optimizer'])}")
    for label, t in record["trajectories"].items():
        # a path that left the floats says so: a row of nan alone read like a result
        step = next((i for i, row in enumerate(t.get("points") or []) if not all(math.isfinite(v) for v in row)), None)
        if step is not None:
            lines.append(f"warning: {label} diverged: its weights or loss are not finite from step {step} on "
                         f"(of {s['steps']}); try a smaller optim.lr")
    return "\n".join(lines)
