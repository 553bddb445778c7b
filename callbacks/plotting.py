"""Diagnostics figures (matplotlib, no pyplot state): the tutorial's `plot_dists` without seaborn
(one panel per layer, histogram + density line) and depth profiles (value vs layer index)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure


def smoothed_density(values: np.ndarray, bins: int = 512, grid: int = 256) -> tuple[np.ndarray, np.ndarray] | None:
    """A Gaussian KDE evaluated on a grid, computed the cheap way: bin the values finely, then
    convolve the counts with a Gaussian of Scott's bandwidth. O(n + bins²) instead of O(n·grid),
    so a 400k-value weight matrix takes milliseconds. Returns (x, density) or None when the
    values have no spread (the tutorial also skips the KDE then)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    lo, hi = (float(values.min()), float(values.max())) if n else (0.0, 0.0)
    if n < 2 or hi - lo <= 1e-8:
        return None
    std = float(values.std())
    bandwidth = 1.06 * std * n ** (-1 / 5) if std > 0 else (hi - lo) / 50
    pad = 3 * bandwidth
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    half = max(1, math.ceil(4 * bandwidth / width))
    offsets = np.arange(-half, half + 1) * width
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    density = np.convolve(counts, kernel / kernel.sum(), mode="same") / (n * width)
    x = np.linspace(centers[0], centers[-1], grid)
    return x, np.interp(x, centers, density)


def plot_dists(values: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]] | None = None,
               xlabel: str | None = None, stat: str = "count", title: str | None = None,
               color: str = "C0", bins: int = 50, columns: int = 2) -> Figure:
    """One panel per key (sorted, as in the tutorial): histogram (`stat` = count or density) and a
    smoothed density scaled to match. `shapes[key]` = (out, in) puts "(in → out)" in the title.

    Panels sit in a grid `columns` wide (the tutorial's single row of five shrinks to unreadable
    text in a TensorBoard card; two columns keep ~9 pt text at card size)."""
    keys = sorted(values, key=_layer_order)
    columns = max(1, min(columns, len(keys)))
    rows = max(1, math.ceil(len(keys) / columns))
    title_lines = title.count("\n") + 1 if title else 0
    head = 0.35 + 0.22 * title_lines  # inches for the suptitle
    fig = Figure(figsize=(3.4 * columns, 2.3 * rows + head))
    # Fixed margins instead of constrained layout: it would cost a second full draw.
    height = 2.3 * rows + head
    fig.subplots_adjust(left=0.14 / columns * 2, right=0.97, bottom=0.45 / height,
                        top=1 - head / height, wspace=0.35, hspace=0.75)
    axes = fig.subplots(rows, columns, squeeze=False).reshape(-1)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys, strict=False):
        v = np.asarray(values[key], dtype=np.float64).reshape(-1)
        if v.size == 0:
            ax.set_title(f"{key} (no finite values)", fontsize=10)
            continue
        counts, edges, _ = ax.hist(v, bins=bins, density=stat == "density", color=color, alpha=0.6,
                                  histtype="stepfilled")  # one patch, not one per bar: 5x faster
        curve = smoothed_density(v)
        if curve is not None:
            x, dens = curve
            scale = 1.0 if stat == "density" else v.size * (edges[1] - edges[0])
            ax.plot(x, dens * scale, color=color, linewidth=1.5)
        shape = (shapes or {}).get(key)
        dims = f" ({shape[1]} → {shape[0]})" if shape is not None and len(shape) > 1 else ""
        # the spread in numbers: each panel has its own x range, so widths alone do not compare
        ax.set_title(f"{key}{dims} · var {float(v.var()):.2g}", fontsize=10)
        ax.set_ylabel("Density" if stat == "density" else "Count", fontsize=9)
        if xlabel:
            ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.xaxis.get_offset_text().set_fontsize(8)
    if title:
        fig.suptitle(title, fontsize=10.5)
    return fig


def plot_depth_profile(history: dict[int, dict[str, float]], ylabel: str, title: str | None = None,
                       max_lines: int = 12, guide: tuple[float, str] | None = None) -> Figure:
    """Value vs layer index, one line per logged step (dark = early, light = late), log y.

    More than `max_lines` steps are thinned to evenly spaced ones (first and last kept)."""
    from matplotlib import colormaps

    steps = sorted(history)
    if len(steps) > max_lines:
        picks = np.unique(np.linspace(0, len(steps) - 1, max_lines).round().astype(int))
        steps = [steps[i] for i in picks]
    layers = sorted({name for s in steps for name in history[s]}, key=_layer_order)
    fig = Figure(figsize=(6.4, 4.4))
    title_lines = title.count("\n") + 1 if title else 0
    fig.subplots_adjust(left=0.15, right=0.78, bottom=0.13, top=1 - (0.07 + 0.055 * title_lines))
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    latest = 0.75  # viridis' last quarter (yellow) is too faint on white for a line
    for i, step in enumerate(steps):
        ys = [history[step].get(name, np.nan) for name in layers]
        ys = [y if y is not None and y > 0 and np.isfinite(y) else np.nan for y in ys]
        ax.plot(range(len(layers)), ys, marker="o", markersize=3.5, linewidth=1.4,
                color=cmap(latest * i / max(1, len(steps) - 1)), label=f"step {step}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, fontsize=9)
    if guide is not None:  # a reference value to read the lines against (e.g. the usual update ratio)
        ax.axhline(guide[0], color="0.35", linestyle="--", linewidth=1, zorder=0)
        ax.annotate(guide[1], (0, guide[0]), xycoords=("axes fraction", "data"), xytext=(3, 3),
                    textcoords="offset points", fontsize=8, color="0.3")
    ax.set_xlabel("layer (input → output)", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.tick_params(axis="y", labelsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="logged at",
              title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10.5)
    return fig


def _layer_order(name: str):
    # layers.10 after layers.8: compare the numeric parts as numbers.
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def render(fig: Figure, dpi: int = 90) -> np.ndarray:
    """Draw `fig` once into an RGB uint8 array (H, W, 3): both the PNG and TensorBoard use it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
