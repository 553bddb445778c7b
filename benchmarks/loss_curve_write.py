"""The per-step loss curve as the module writes it: one epoch's points in a burst, once an epoch.

`ClassifierModule.drain_losses` calls `logger.log_metrics` once per step of the epoch that just
ended. With SummaryWriter's default queue (10 events) the burst waits on the writer thread for
each event; a queue as deep as the burst takes it at once and the writer thread writes it
behind. Timed in one process, alternating, for each queue depth:
  on the training thread  the burst's wall time (what the training step waits for)
  in all                  the process CPU time until the event file is flushed

    .venv/bin/python benchmarks/loss_curve_write.py [--steps 195] [--reps 7] [--queues 10,1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")

from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402


def burst(logger: TensorBoardLogger, steps: int, start: int) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(steps):
        logger.log_metrics({"train/loss": 1.0 / (start + i + 1)}, step=start + i)
    wall = time.perf_counter() - wall0
    logger.experiment.flush()
    return wall, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=195, help="points a burst (195: an epoch at batch 256)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--queues", default="10,1000", help="SummaryWriter max_queue values to compare")
    args = parser.parse_args()
    queues = [int(q) for q in args.queues.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        loggers = {q: TensorBoardLogger(tmp, name=f"q{q}", version="", max_queue=q) for q in queues}
        for lg in loggers.values():
            burst(lg, args.steps, 0)  # warm-up: the writer threads start, the files open
        times = {q: [] for q in queues}
        for rep in range(args.reps):
            for q in queues:
                time.sleep(0.2)  # the writer thread of the last burst is idle again
                times[q].append(burst(loggers[q], args.steps, (rep + 1) * args.steps))
    print(f"a burst of {args.steps} log_metrics calls (TensorBoardLogger), median of {args.reps}")
    print(f"{'max_queue':>10} {'training thread':>16} {'per point':>10} {'CPU in all':>11} {'per point':>10}")
    med = {}
    for q in queues:
        wall = statistics.median(t[0] for t in times[q])
        cpu = statistics.median(t[1] for t in times[q])
        med[q] = wall
        print(f"{q:>10} {wall * 1e3:>13.1f} ms {wall / args.steps * 1e6:>7.1f} us {cpu * 1e3:>8.1f} ms "
              f"{cpu / args.steps * 1e6:>7.1f} us")
    if len(queues) > 1:
        print(f"training thread, max_queue={queues[0]} / max_queue={queues[-1]}: {med[queues[0]] / med[queues[-1]]:.1f}x")


if __name__ == "__main__":
    main()
