"""The landscape grid three ways, on the same weights, directions and images, in one process.

  (a) src.landscape.evaluate_family: the first layer's output is affine in the grid coefficients
      (3 matmuls for the whole grid), the later layers one batched matmul per chunk of points
  (b) torch.func: vmap(functional_call) over stacked parameter sets, chunks of 32 points
  (c) a plain loop: one functional_call forward per grid point

Prints wall and CPU seconds for the default 31x31 grid on 2,048 training images, ms per point,
the ratios (b)/(a) and (c)/(a), and the largest relative difference between (a) and (c). The
grid goes in slices, each through (a), (b), (c) in turn, so a machine's changing load hits the
three alike; CPU seconds below wall seconds mean the process shared its cores.
With `--run DIR` it also times a whole `landscape.py run=DIR directions=random` process.

    .venv/bin/python benchmarks/landscape_grid.py                  # CPU, 31x31, 2048 images
    .venv/bin/python benchmarks/landscape_grid.py --loop-points 100    # (b), (c) on 100 points only
    .venv/bin/python benchmarks/landscape_grid.py --device cuda --resolution 101 --subset full
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from src.landscape import Layout, evaluate_family, evaluate_loop, grid_axis, random_directions  # noqa: E402
from src.model import BaseNetwork  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images(subset: int | None, device: torch.device):
    """The first `subset` training images (the real ones when data/ is prepared, else noise)."""
    try:
        from src.data import load_split_tensors, split_indices

        x, y = load_split_tensors(ROOT / "data", train=True)
        idx = split_indices()[0]
        idx = idx if subset is None else idx[:subset]
        x, y = x[idx].reshape(len(idx), -1), y[idx]
    except OSError:
        n = subset or 50_000
        x, y = torch.randn(n, 784), torch.randint(0, 10, (n,))
    return x.to(device), y.to(device)


@torch.no_grad()
def vmap_grid(net, layout, w, d1, d2, coefs, x, y, chunk: int = 32) -> np.ndarray:
    from torch.func import functional_call, vmap

    forward = vmap(lambda params, xb: functional_call(net, params, (xb,)), in_dims=(0, None))
    out = []
    for p0 in range(0, len(coefs), chunk):
        c = coefs[p0:p0 + chunk].to(x.device)
        stacked = w + c[:, :1] * d1 + c[:, 1:] * d2  # [C, P]
        params = dict(zip(layout.names, layout.split(stacked), strict=True))
        logits = forward(params, x)  # [C, N, 10]
        n = len(c)
        out.append(F.cross_entropy(logits.reshape(-1, 10), y.repeat(n), reduction="none").view(n, -1)
                   .double().mean(1).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=31)
    ap.add_argument("--subset", default="2048", help="training images, or `full`")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--loop-points", type=int, default=None,
                    help="grid points for (b) and (c) (default: all); fewer = their time per point "
                         "is measured on those and the grid's total is extrapolated (said so)")
    ap.add_argument("--reps", type=int, default=4, help="slices of the grid, each through (a), (b), (c) in turn")
    ap.add_argument("--run", default=None, help="also time a whole landscape.py process on this run dir")
    args = ap.parse_args()
    device = torch.device(args.device)
    subset = None if args.subset == "full" else int(args.subset)

    torch.manual_seed(0)
    net = BaseNetwork().to(device).eval().requires_grad_(False)
    layout = Layout.of(net)
    w = layout.flatten(dict(net.named_parameters()))
    d1, d2 = random_directions(layout, w, seed=0)
    x, y = images(subset, device)
    axis = grid_axis(-1, 1, args.resolution)
    a, b = np.meshgrid(axis, axis)
    coefs = torch.tensor(np.stack([a.ravel(), b.ravel()], 1), dtype=torch.float32)
    n_points = len(coefs)
    k = min(args.loop_points or n_points, n_points)
    print(f"grid {args.resolution}x{args.resolution} = {n_points} points, {len(x)} images, device {device}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")

    evaluate_family(net, layout, w, [d1, d2], coefs[:4], x[:256], y[:256])  # warm-up
    wd, d1d, d2d = w.to(device), d1.to(device), d2.to(device)

    def run_a(c):
        return evaluate_family(net, layout, w, [d1, d2], c, x, y, batch_points=32 if device.type == "cpu" else 1024)[0]

    def run_b(c):
        return vmap_grid(net, layout, wd, d1d, d2d, c, x, y)

    def run_c(c):
        points = wd + c[:, :1].to(device) * d1d + c[:, 1:].to(device) * d2d
        return evaluate_loop(net, layout, points, x, y)[0]

    # The grid in `reps` slices; each slice through (a), (b), (c) in turn, so a change in the
    # machine's load hits all three alike. Wall and CPU seconds are summed per variant.
    wall, cpu, losses = {k: 0.0 for k in "abc"}, {k: 0.0 for k in "abc"}, {k: [] for k in "abc"}
    slices = np.array_split(np.arange(n_points), args.reps)
    for part in slices:
        sub = part[: max(1, round(len(part) * k / n_points))]
        for name, fn, rows in (("a", run_a, part), ("b", run_b, sub), ("c", run_c, sub)):
            sync(device)
            t, c0 = time.perf_counter(), time.process_time()
            losses[name].append(fn(coefs[torch.as_tensor(rows)]))
            sync(device)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c0
    measured = sum(max(1, round(len(p) * k / n_points)) for p in slices)
    scale = {"a": 1.0, "b": n_points / measured, "c": n_points / measured}
    lc = np.concatenate(losses["c"])
    lb = np.concatenate(losses["b"])
    la_sub = np.concatenate([la_part[: len(lc_part)] for la_part, lc_part in zip(losses["a"], losses["c"], strict=True)])
    note = "" if measured == n_points else f"  (measured on {measured} of {n_points} points, extrapolated)"
    names = {"a": "(a) evaluate_family  ", "b": "(b) vmap + functional", "c": "(c) plain loop       "}
    for key in "abc":
        w_s, c_s = wall[key] * scale[key], cpu[key] * scale[key]
        print(f"{names[key]} {w_s:8.2f} s wall {c_s:8.2f} s CPU  {1000 * w_s / n_points:7.2f} ms/point"
              + (note if key != "a" else ""))
    print(f"ratios (wall): (b)/(a) = {wall['b'] * scale['b'] / wall['a']:.2f}, "
          f"(c)/(a) = {wall['c'] * scale['c'] / wall['a']:.2f};  (CPU): (b)/(a) = "
          f"{cpu['b'] * scale['b'] / cpu['a']:.2f}, (c)/(a) = {cpu['c'] * scale['c'] / cpu['a']:.2f}")
    print(f"max relative difference of the losses: (a) vs (c) {np.max(np.abs(la_sub - lc) / np.abs(lc)):.1e}, "
          f"(b) vs (c) {np.max(np.abs(lb - lc) / np.abs(lc)):.1e}")
    print(f"load average now {os.getloadavg()[0]:.1f} (CPU s < wall s: the process shared its cores)")

    if args.run:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, str(ROOT / "landscape.py"), f"run={args.run}", "directions=random",
                   f"landscape.resolution={args.resolution}", f"landscape.subset={args.subset}",
                   f"landscape.device={args.device}", f"hydra.run.dir={out}"]
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            whole = time.perf_counter() - t
            if res.returncode != 0:
                print(res.stderr[-2000:])
            grid = re.search(r"grid \d+x\d+ in [\d.]+ s", res.stdout + res.stderr)
            print(f"whole landscape.py process: {whole:.1f} s wall (start-up, grid, interpolation, figures, "
                  f"TensorBoard); its {grid.group(0) if grid else 'grid: see above'}")


if __name__ == "__main__":
    main()
