"""Time one optimizer.step() of the hand-written optimizers against torch.optim.

On the tutorial MLP (784-512-256-256-128-10, ReLU; ~0.57M parameters) with random
gradients set once, each contender gets its own copy of the model. All contenders are
timed in one process, interleaved round-robin (in a shuffled order each round) so that
clock/thermal drift hits all of them alike; medians over the rounds are reported.

    .venv/bin/python benchmarks/optimizer_step.py               # CPU
    .venv/bin/python benchmarks/optimizer_step.py --device cuda --reps 500
"""

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere
from src.optim import SGD, Adam, SGDMomentum  # noqa: E402


def tutorial_mlp() -> nn.Module:
    sizes = [784, 512, 256, 256, 128]
    layers = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 10))


# (family, label, factory). torch's SGD momentum uses dampening=momentum: the same
# arithmetic as ours (its per-step work does not depend on the dampening value).
CONTENDERS = [
    ("sgd", "ours foreach", lambda ps: SGD(ps, lr=0.1, foreach=True)),
    ("sgd", "ours per-param", lambda ps: SGD(ps, lr=0.1, foreach=False)),
    ("sgd", "torch foreach", lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=True)),
    ("sgd_mom", "ours foreach", lambda ps: SGDMomentum(ps, lr=0.1, momentum=0.9, foreach=True)),
    ("sgd_mom", "ours per-param", lambda ps: SGDMomentum(ps, lr=0.1, momentum=0.9, foreach=False)),
    (
        "sgd_mom",
        "torch foreach",
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.9, foreach=True),
    ),
    ("adam", "ours foreach", lambda ps: Adam(ps, lr=1e-3, foreach=True)),
    ("adam", "ours per-param", lambda ps: Adam(ps, lr=1e-3, foreach=False)),
    ("adam", "torch foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--reps", type=int, default=300, help="timed rounds (default 300)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians and ratios here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but CUDA is not available on this machine; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(args.seed)
    base = tutorial_mlp().to(device)
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]  # set once, reused

    runs = []
    for family, label, factory in CONTENDERS:
        model = copy.deepcopy(base)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        runs.append({"family": family, "label": label, "opt": factory(model.parameters()), "t": []})

    rng = random.Random(args.seed)
    order = list(range(len(runs)))
    for rnd in range(args.warmup + args.reps):
        rng.shuffle(order)
        for i in order:
            run = runs[i]
            sync()
            t0 = time.perf_counter()
            run["opt"].step()
            sync()
            if rnd >= args.warmup:
                run["t"].append(time.perf_counter() - t0)

    n_params = sum(p.numel() for p in base.parameters())
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"optimizer.step() on the 784-512-256-256-128-10 MLP ({n_params:,} params), "
        f"device={device} ({device_name}), torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"{args.reps} interleaved rounds, median (IQR)"
    )
    print(
        f"{'optimizer':<9} {'implementation':<15} {'median µs':>10} {'IQR µs':>15} {'vs torch':>9}"
    )
    rows = []
    for family in dict.fromkeys(r["family"] for r in runs):
        group = [r for r in runs if r["family"] == family]
        ref = next(statistics.median(r["t"]) for r in group if r["label"] == "torch foreach")
        for r in group:
            q1, med, q3 = statistics.quantiles(r["t"], n=4)
            print(
                f"{family:<9} {r['label']:<15} {med * 1e6:>10.1f} "
                f"{f'{q1 * 1e6:.1f}-{q3 * 1e6:.1f}':>15} {med / ref:>8.2f}x"
            )
            rows.append({"optimizer": family, "implementation": r["label"], "median_us": med * 1e6,
                         "q1_us": q1 * 1e6, "q3_us": q3 * 1e6, "vs_torch_foreach": med / ref})
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "optimizer_step", "device": str(device), "device_name": device_name,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "reps": args.reps,
            "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
