"""How long the sweep report takes for a 100-job sweep dir (goal: <= 5 s).

Builds synthetic sweep dirs (results.json + .hydra/overrides.yaml, 40 epochs of val scores
each, no training) of two shapes:
  grid  init (5) x optim (4) x 5 seeds = 100 jobs: groups, 70 verdicts, a heatmap
  lr    optim (3) x lr_decade (7) x 5 seeds = 105 jobs: groups, 21 verdicts, a curve
and times
  (a) write_report(dir) in a process that has already imported everything (as in the Hydra
      callback at the end of a multirun), median of --reps;
  (b) `python -m src.report <dir>`: a whole process, imports included, once;
  (c) of that, `python -c "import src.utils"` alone: src.utils imports torch and Lightning for
      its checkpoint writer, which the report does not need (see the note it prints).

    .venv/bin/python benchmarks/report_speed.py [--reps 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.report import write_report  # noqa: E402

EPOCHS = 40
PROVENANCE = {"python": "3.11.7", "torch": "2.14.1", "lightning": "2.6.6", "hydra": "1.3.8",
              "device_type": "cpu", "device": "AMD EPYC", "cpu_count": 2, "load_avg_1min": 1.0,
              "git_commit": "0" * 40, "git_dirty": False}


def write_job(sweep: Path, number: int, overrides: dict, results: dict) -> None:
    job = sweep / (f"{number}_" + ",".join(f"{k}={v}" for k, v in overrides.items()))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {k}={v}\n" for k, v in overrides.items()))
    (job / "results.json").write_text(json.dumps(results))


def run(final: float, seed: int, number: int, config: dict, rng: random.Random) -> dict:
    """A 40-epoch run whose val accuracy rises towards `final` (chance level if final <= 0.1)."""
    final = final + rng.gauss(0, 0.003)
    vals = [max(0.1, final - 0.12 * math.exp(-e / 6) + rng.gauss(0, 0.002)) for e in range(EPOCHS)]
    best = max(range(EPOCHS), key=lambda e: vals[e])
    return {"status": "ok", "test_acc": final - 0.006 + rng.gauss(0, 0.002), "best_val_acc": vals[best],
            "best_val_epoch": best, "epochs": EPOCHS, "val_scores": vals,
            "train_losses": [0.5] * EPOCHS, "seconds": 100 + rng.gauss(0, 5),
            "config": {"seed": seed, **config},
            "provenance": {**PROVENANCE, "config_hash": str(hash(json.dumps(config, sort_keys=True))),
                           "finished_at": f"2026-01-01T{number // 30:02d}:{2 * (number % 30):02d}:00.000+00:00"}}


def grid_sweep(sweep: Path) -> None:
    rng, n = random.Random(0), 0
    inits = {"const": 0.1, "normal": 0.83, "xavier": 0.875, "kaiming": 0.88, "equal_var": 0.86}
    optims = {"sgd": 0.0, "sgd_mom": -0.003, "adam": 0.004, "torch_adam": 0.004}
    for init, base in inits.items():
        for optim, delta in optims.items():
            for seed in range(42, 47):
                final = base if base <= 0.1 else base + delta
                write_job(sweep, n, {"init": init, "optim": optim, "seed": seed},
                          run(final, seed, n, {"init_name": init, "optim_name": optim}, rng))
                n += 1


def lr_sweep(sweep: Path) -> None:
    rng, n = random.Random(1), 0
    tutorial_lr = {"sgd": 0.1, "sgd_mom": 0.1, "adam": 1e-3}
    peak = {"sgd": (0.3, 0.88, 0.9), "sgd_mom": (0.5, 0.88, 1.1), "adam": (0.0, 0.89, 1.4)}  # decade, acc, sharpness
    for optim, lr in tutorial_lr.items():
        for decade in (-1.5, -1, -0.5, 0, 0.5, 1, 1.5):
            for seed in range(42, 47):
                at, best, sharp = peak[optim]
                config = {"optim_name": optim, "lr_decade": decade, "curve_x": {"lr_decade": "optim.lr"},
                          "optim": {"lr": float(f"{lr * 10 ** decade:.4g}")}}
                result = run(best - 0.02 * (sharp * (decade - at)) ** 2, seed, n, config, rng)
                if optim == "sgd" and decade == 1.5 or optim == "sgd_mom" and decade >= 1 and seed % 2:
                    result.update(status="diverged", test_acc=None, error="loss became nan",
                                  val_scores=result["val_scores"][:3], train_losses=[0.5, None])
                write_job(sweep, n, {"optim": optim, "lr_decade": decade, "seed": seed}, result)
                n += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the sweep dirs here and keep them")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="report_speed_"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    print(f"{'sweep':<6} {'jobs':>4}  {'(a) in-process':>15}  {'(b) python -m src.report':>25}  (b)/(a)")
    for name, build in (("grid", grid_sweep), ("lr", lr_sweep)):
        sweep = base / name
        if not sweep.exists():
            build(sweep)
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            jobs = write_report(sweep)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "src.report", str(sweep)], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        whole = time.perf_counter() - start
        inner = statistics.median(times)
        print(f"{name:<6} {len(jobs):>4}  {inner:>13.2f} s  {whole:>23.2f} s  {whole / inner:6.1f}x")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import src.utils"], cwd=ROOT, env=env, check=True)
    utils_import = time.perf_counter() - start
    print(f"(c) python -c 'import src.utils' alone: {utils_import:.2f} s "
          "")
    print(f"sweep dirs: {base}")


if __name__ == "__main__":
    main()
