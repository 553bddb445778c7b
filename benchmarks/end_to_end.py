"""Whole processes, as a user waits for them: train.py against a plain PyTorch script.

Runs, each as its own process (start to exit), N epochs and 1 epoch:
  app        `train.py trainer.max_epochs=E`: the default config, Adam, diagnostics on
  app_nodiag the same with `callbacks=none`
  app_inline the default config with the figures drawn on the training thread
             (`callbacks.distribution_figures.background=false`; not in the default set)
  plain      benchmarks/plain_script.py: in-memory tensors, torch Adam(foreach), validation each
             epoch, the test accuracy at the end, no logging
The runs of one repetition go in a rotated order (each variant first in turn), so background
load hits them alike. From the medians:
  per extra epoch = (time(N epochs) - time(1 epoch)) / (N - 1)
  fixed cost      = time(1 epoch) - per extra epoch      (imports, data, figures, test pass, exit)
and the ratios app/plain, app_nodiag/plain; plus the peak memory of each: the kernel's peak
RSS of the process (ru_maxrss) and the process tree's PSS, sampled every 100 ms.

Each repetition also times two processes that only import and exit, the floor under each fixed
cost: `import torch` (the plain script's imports) and `import torch, pytorch_lightning, hydra`
(what any Lightning + Hydra app imports before it can read its config). The fixed cost above
its floor is what each program does itself (data, set-up, diagnostics, test pass, exit).

    .venv/bin/python benchmarks/end_to_end.py [--epochs 7] [--reps 3] [--threads T]
        [--variants app,app_nodiag,plain] [--train-subset N] [--json PATH] [--app-args ...]

`--threads T` sets OMP_NUM_THREADS/MKL_NUM_THREADS for every child (default: inherited).
`--train-subset` shrinks the data for a smoke test; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def tree_memory_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of `pid` and all its descendants, from /proc (Linux), in bytes. RSS counts a
    shared page (torch's libraries) once per process; PSS splits it among them, so PSS is what
    the processes hold together."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:  # gone, or a kernel without smaps_rollup
            continue
    return rss, pss


def run_process(cmd: list[str], env: dict, log: Path) -> dict:
    """Run `cmd` to its end; wall seconds, exit status, peak memory of its process tree (RSS and
    PSS sums, sampled every 100 ms) and the kernel's peak RSS of the main process."""
    peak = [0, 0]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample():
            while not done.is_set():
                rss, pss = tree_memory_bytes(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": wall, "rc": proc.returncode, "tree_rss_peak_mb": peak[0] / 2**20,
            "tree_pss_peak_mb": peak[1] / 2**20, "maxrss_mb": usage.ru_maxrss / 1024}


FLOORS = {"import torch": "import torch, numpy",
          "import torch+lightning+hydra": "import torch, numpy, pytorch_lightning, hydra"}


def command(variant: str, epochs: int, out: Path, subset: int | None, app_args: list[str]) -> list[str]:
    if variant == "plain":
        return [PY, str(ROOT / "benchmarks" / "plain_script.py"), "--epochs", str(epochs),
                *(["--train-subset", str(subset)] if subset else [])]
    cmd = [PY, str(ROOT / "train.py"), f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu",
           f"hydra.run.dir={out}", *app_args]
    if variant == "app_nodiag":
        cmd.append("callbacks=none")
    if variant == "app_inline":
        cmd.append("callbacks.distribution_figures.background=false")
    if subset:
        cmd.append(f"data.train_subset={subset}")
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=7, help="the long run's epochs (the short one has 1)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of every child")
    parser.add_argument("--variants", default="app,app_nodiag,plain")
    parser.add_argument("--train-subset", type=int, default=None, help="smoke tests only")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--app-args", nargs=argparse.REMAINDER, default=[],
                        help="extra train.py overrides, e.g. --app-args data.eval_batch_size=2048")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - {"app", "app_nodiag", "app_inline", "plain"}
    if unknown or args.epochs < 2:
        sys.exit(f"error: --variants takes app, app_nodiag, app_inline, plain (got {sorted(unknown)}); "
                 "--epochs must be >= 2")
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    threads = env.get("OMP_NUM_THREADS", f"torch default ({os.cpu_count()} cores)")
    load = os.getloadavg()[0]
    print(f"end_to_end: {len(variants)} variants x (1, {args.epochs}) epochs x {args.reps} reps, "
          f"threads {threads}, load average at start {load:.2f}"
          + (f", train subset {args.train_subset} (smoke: figures mean nothing)" if args.train_subset else ""),
          flush=True)
    jobs = [(v, e) for v in variants for e in (1, args.epochs)]
    results: dict[tuple[str, int], list[dict]] = {j: [] for j in jobs}
    floors: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="end_to_end_") as tmp:
        for rep in range(args.reps):
            order = jobs[rep % len(jobs):] + jobs[:rep % len(jobs)]
            for variant, epochs in order:
                out = Path(tmp) / f"{variant}_{epochs}_{rep}"
                r = run_process(command(variant, epochs, out, args.train_subset, args.app_args), env,
                                Path(tmp) / f"{variant}_{epochs}_{rep}.log")
                if r["rc"] != 0:
                    log = (Path(tmp) / f"{variant}_{epochs}_{rep}.log").read_text()[-2000:]
                    sys.exit(f"error: {variant} ({epochs} epochs) exited {r['rc']}:\n{log}")
                results[(variant, epochs)].append(r)
                print(f"rep {rep + 1}  {variant:<10} {epochs:>2} epochs  {r['seconds']:7.2f} s  "
                      f"peak RSS {r['maxrss_mb']:6.0f} MB", flush=True)
            for name, code in FLOORS.items():
                r = run_process([PY, "-c", code], env, Path(tmp) / "floor.log")
                floors.setdefault(name, []).append(r["seconds"])

    med = {j: statistics.median(r["seconds"] for r in rs) for j, rs in results.items()}
    summary = {}
    for v in variants:
        one, many = med[(v, 1)], med[(v, args.epochs)]
        per_epoch = (many - one) / (args.epochs - 1)
        summary[v] = {"one_epoch_s": one, f"{args.epochs}_epochs_s": many, "per_extra_epoch_s": per_epoch,
                      "fixed_s": one - per_epoch,
                      "peak_rss_mb": max(r["maxrss_mb"] for j in ((v, 1), (v, args.epochs)) for r in results[j]),
                      "peak_tree_pss_mb": max(r["tree_pss_peak_mb"] for j in ((v, 1), (v, args.epochs))
                                              for r in results[j])}
    print(f"\nmedian seconds, process start to exit ({args.reps} reps; load average now {os.getloadavg()[0]:.2f})")
    print(f"{'':<12}{'1 epoch':>9}{f'{args.epochs} epochs':>11}{'per extra epoch':>17}{'fixed cost':>12}{'peak RSS':>11}")
    for v, s in summary.items():
        print(f"{v:<12}{s['one_epoch_s']:>9.2f}{s[f'{args.epochs}_epochs_s']:>11.2f}{s['per_extra_epoch_s']:>17.2f}"
              f"{s['fixed_s']:>12.2f}{s['peak_rss_mb']:>8.0f} MB")
    ratios = {}
    if "plain" in summary:
        print("ratios to the plain script")
        goals = {"app": (1.10, 1.5), "app_nodiag": (1.05, 1.5), "app_inline": (1.10, 1.5)}
        for v in ("app", "app_nodiag", "app_inline"):
            if v in summary:
                pe = summary[v]["per_extra_epoch_s"] / summary["plain"]["per_extra_epoch_s"]
                fx = summary[v]["fixed_s"] / summary["plain"]["fixed_s"]
                ratios[v] = {"per_extra_epoch": pe, "fixed": fx}
                print(f"  {v:<11} per extra epoch {pe:5.2f}x (goal <= {goals[v][0]})   "
                      f"fixed cost {fx:5.2f}x (goal <= {goals[v][1]})")
    floor = {name: statistics.median(t) for name, t in floors.items()}
    print("floors: processes that only import, median seconds")
    for name, t in floor.items():
        print(f"  {name:<30} {t:6.2f}")
    own = {v: s["fixed_s"] - floor["import torch" if v == "plain" else "import torch+lightning+hydra"]
           for v, s in summary.items()}
    print("fixed cost above the floor (what the program does itself)")
    for v, t in own.items():
        ratio = f"   {t / own['plain']:5.2f}x plain's" if v != "plain" and own.get("plain", 0) > 0 else ""
        print(f"  {v:<11} {t:6.2f} s{ratio}")
    if args.json:
        args.json.write_text(json.dumps({
            "floors_s": floor, "fixed_above_floor_s": own,
            "benchmark": "end_to_end", "epochs": args.epochs, "reps": args.reps, "threads": threads,
            "train_subset": args.train_subset, "load_average_start": load, "summary": summary, "ratios": ratios,
            "runs": {f"{v}/{e}": rs for (v, e), rs in results.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
