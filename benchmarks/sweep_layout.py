"""A sweep's wall time, peak memory and results under different job x thread layouts.

Runs `train.py -m experiment=compare_optimizers` (3 jobs: sgd, sgd_mom, adam) as whole
processes, one per layout, in a rotated order per repetition:
  seq-1x<C>   hydra/launcher=basic, one job at a time with every core's thread (C = cores)
  seq-1x1     hydra/launcher=basic, one thread (what the preset's layout computes)
  par-<J>x1   hydra/launcher=parallel, J jobs at once, one thread each (the preset: J = cores)
and prints the median wall time (process start to exit), the peak memory of the whole process
tree (parent and workers together, sampled every 100 ms: the sum of PSS, which counts the
libraries the processes share once, and the sum of RSS, which counts them per process), and
whether each
layout's per-job results (val_scores, train_losses, test_acc) are bit-identical to seq-1x1's.

    .venv/bin/python benchmarks/sweep_layout.py [--epochs 40] [--reps 1] [--jobs 2,3]
        [--train-subset N] [--json PATH]

With --epochs 40 this is the issue's `experiment=compare_optimizers` figure (goal <= 300 s on
2 cores); a smaller --epochs keeps the comparison of layouts and the bit-identity check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import PY, ROOT, run_process  # noqa: E402

KEYS = ("val_scores", "train_losses", "test_acc")


def layouts(jobs: list[int]) -> dict[str, list[str]]:
    cores = os.cpu_count() or 1
    out = {f"seq-1x{cores}": ["hydra/launcher=basic", f"hydra.job.env_set.OMP_NUM_THREADS='{cores}'",
                              f"hydra.job.env_set.MKL_NUM_THREADS='{cores}'"],
           "seq-1x1": ["hydra/launcher=basic"]}
    for j in jobs:
        out[f"par-{j}x1"] = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={j}"]
    return out


def job_results(sweep: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(sweep.glob("*/results.json")):
        r = json.loads(path.read_text())
        found[r["config"]["optim_name"] or path.parent.name] = {k: r.get(k) for k in (*KEYS, "status")}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--jobs", default="2,3", help="parallel layouts to try (jobs at once)")
    parser.add_argument("--train-subset", type=int, default=None, help="smoke tests only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    lay = layouts([int(j) for j in args.jobs.split(",") if j])
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PROJECT_ROOT"] = str(ROOT)
    print(f"sweep_layout: experiment=compare_optimizers (3 jobs) x {args.epochs} epochs, {os.cpu_count()} cores, "
          f"{args.reps} reps, load average at start {os.getloadavg()[0]:.2f}"
          + (f", train subset {args.train_subset} (smoke)" if args.train_subset else ""), flush=True)
    names = list(lay)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sweep_layout_") as tmp:
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                sweep = Path(tmp) / f"{name}_{rep}"
                cmd = [PY, str(ROOT / "train.py"), "-m", "experiment=compare_optimizers", "print_config=false",
                       f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}",
                       *(["data.train_subset=" + str(args.train_subset)] if args.train_subset else []), *lay[name]]
                r = run_process(cmd, env, Path(tmp) / f"{name}_{rep}.log")
                if r["rc"] != 0:
                    sys.exit(f"error: {name} exited {r['rc']}:\n" + (Path(tmp) / f"{name}_{rep}.log").read_text()[-3000:])
                runs[name].append(r)
                results[name] = job_results(sweep)
                print(f"rep {rep + 1}  {name:<9} {r['seconds']:8.1f} s  peak memory (all processes): "
                      f"PSS {r['tree_pss_peak_mb']:6.0f} MB, RSS {r['tree_rss_peak_mb']:6.0f} MB", flush=True)

    ref = results["seq-1x1"]
    print(f"\nmedian wall seconds, process start to exit (load average now {os.getloadavg()[0]:.2f})")
    print(f"{'layout':<11}{'seconds':>9}{'vs seq-1x1':>12}{'peak PSS':>11}  results vs seq-1x1")
    summary = {}
    base = statistics.median(r["seconds"] for r in runs["seq-1x1"])
    for name in names:
        sec = statistics.median(r["seconds"] for r in runs[name])
        same = results[name] == ref
        diff = "bit-identical" if same else "differ: " + ", ".join(
            f"{job} {k}" for job in ref for k in KEYS if results[name].get(job, {}).get(k) != ref[job][k])[:80]
        peak = max(r["tree_pss_peak_mb"] for r in runs[name])
        summary[name] = {"seconds": sec, "peak_pss_mb": peak, "identical_to_seq_1x1": same,
                         "peak_rss_sum_mb": max(r["tree_rss_peak_mb"] for r in runs[name])}
        print(f"{name:<11}{sec:>9.1f}{base / sec:>11.2f}x{peak:>8.0f} MB  {diff}")
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "sweep_layout", "epochs": args.epochs, "reps": args.reps,
                                         "cores": os.cpu_count(), "train_subset": args.train_subset,
                                         "summary": summary, "runs": runs, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
