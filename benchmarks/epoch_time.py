"""One epoch (train + val) of the tutorial's training, four ways, in one process.

  (a) train.py's Trainer, default config, diagnostics callbacks on
  (b) the same with `callbacks=none`
  (c) the floor: a plain PyTorch loop over the same in-memory tensors, torch.optim.Adam(foreach=True)
  (d) the tutorial's loop: per-sample ToTensor/Normalize through a DataLoader and its
      Python-loop Adam with per-parameter dict state
  (e) (a) with Lightning's automatic optimization loop and its PassThroughProfiler put back
      (`module.manual_step=false`, what a run with gradient clipping gets): what the module's
      own step and src/training.py's NoProfiler save
  (f) (a) with `module.cuda_graph=true` (src/step_graph.py): each step's forward, loss and
      backward replayed as one CUDA graph. On a GPU only (`--graph-row` runs it on a CPU too,
      where the app falls back to (a)'s eager step: a rehearsal, not a figure)

The variants alternate within each repetition, so background load hits them alike; each
Trainer/plain run trains `--epochs` epochs and reports the median of all but the first (which
pays for warm-up); the tutorial's loop runs one epoch.
Prints medians and the ratios (a)/(c), (b)/(c), (a)/(b), (d)/(a), (e)/(a), (f)/(c), and what the Trainer adds to
each step in microseconds. On a GPU this MLP's arithmetic takes microseconds a step, so that
overhead decides the ratios; `--batch-size 16 --hidden 8` makes the CPU's arithmetic ~0 too, to
see it here.

    .venv/bin/python benchmarks/epoch_time.py [--reps 3] [--device cpu|cuda] [--skip-tutorial]
        [--train-subset N] [--batch-size N] [--hidden 8] [--graph-row] [--json PATH]

On a GPU (`--device cuda`) all four keep the data on the device except (d), whose per-sample
pipeline is the tutorial's; the Trainer runs with `data.on_device=auto`, i.e. on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from src.data import MEAN, STD, FashionMNISTDataModule, split_indices  # noqa: E402
from src.model import BaseNetwork  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- (a), (b): the app's Trainer --------------------------------------------------------------

def trainer_epoch(callbacks: str, device: str, out_dir: Path, epochs: int, subset: int | None = None,
                  batch_size: int = 256, hidden: list[int] | None = None, extra: tuple[str, ...] = ()) -> float:
    import logging

    import pytorch_lightning as pl

    from src.config import compose_config as compose
    from src.training import train

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    overrides = [f"trainer.max_epochs={epochs}", f"callbacks={callbacks}", "print_config=false", "skip_test=true",
                 "trainer.accelerator=" + ("gpu" if device == "cuda" else "cpu"),
                 "trainer.enable_progress_bar=false", f"data.batch_size={batch_size}"]
    if subset:
        overrides.append(f"data.train_subset={subset}")
    if hidden:
        overrides.append(f"model.hidden_sizes=[{','.join(map(str, hidden))}]")
    overrides += extra
    times: list[float] = []

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):  # after the epoch's validation
            sync(device)
            times.append(time.perf_counter() - self.t0)

    cfg = compose(overrides, out_dir)
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.callbacks["_epoch_timer"] = {"_target_": f"{__name__}._make_timer"}
    global _TIMER
    _TIMER = EpochTimer()
    train(cfg)
    return statistics.median(times[1:])


_TIMER = None


def graph_was_used(run: Path) -> bool:
    """Whether (f)'s run replayed its steps; if not, say why (results.json's warning)."""
    results = json.loads((run / "results.json").read_text())
    if results["timing"].get("graphed_steps"):
        return True
    why = [w for w in results["warnings"] if "cuda_graph" in w]
    print(f"(f) replayed no step: {why[0] if why else 'no reason given'}; its time is the eager step's", flush=True)
    return False


def _make_timer():
    return _TIMER


LIGHTNINGS_LOOP = ("module.manual_step=false", "+trainer.profiler._target_=pytorch_lightning.profilers.PassThroughProfiler")


# --- (c): the floor --------------------------------------------------------------------------

def plain_epoch(dm: FashionMNISTDataModule, device: str, epochs: int, seed: int = 42,
                subset: int | None = None, batch_size: int = 256, hidden: list[int] | None = None) -> float:
    torch.manual_seed(seed)
    net = (BaseNetwork(hidden_sizes=hidden) if hidden else BaseNetwork()).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    x, y = dm.train_x[:subset].to(device), dm.train_y[:subset].to(device)
    vx, vy = dm.val_x.to(device), dm.val_y.to(device)
    n_batches = len(x) // batch_size
    times = []
    for epoch in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch)).to(device)
        for i in range(n_batches):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            correct = sum((net(vx[i:i + 1024]).argmax(-1) == vy[i:i + 1024]).sum() for i in range(0, len(vx), 1024))
        float(correct)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


# --- (d): the tutorial's loop ----------------------------------------------------------------

class TutorialAdam:
    """The tutorial's OptimizerTemplate + Adam: a Python loop with per-parameter dict state."""

    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params = list(params)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.param_step = {p: 0 for p in self.params}
        self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}
        self.param_2nd_momentum = {p: torch.zeros_like(p.data) for p in self.params}

    def zero_grad(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is None:
                continue
            self.param_step[p] += 1
            self.param_momentum[p] = (1 - self.beta1) * p.grad + self.beta1 * self.param_momentum[p]
            self.param_2nd_momentum[p] = (1 - self.beta2) * (p.grad) ** 2 + self.beta2 * self.param_2nd_momentum[p]
            bias_correction_1 = 1 - self.beta1 ** self.param_step[p]
            bias_correction_2 = 1 - self.beta2 ** self.param_step[p]
            p_2nd_mom = self.param_2nd_momentum[p] / bias_correction_2
            p_mom = self.param_momentum[p] / bias_correction_1
            p_lr = self.lr / (torch.sqrt(p_2nd_mom) + self.eps)
            p.add_(-p_lr * p_mom)


def tutorial_epoch(data_dir: str, device: str) -> float:
    from torch.utils import data
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    full = FashionMNIST(root=data_dir, train=True, transform=transform, download=False)
    train_idx, val_idx = split_indices()
    train_set = data.Subset(full, train_idx.tolist())
    val_set = data.Subset(full, val_idx.tolist())
    train_loader = data.DataLoader(train_set, batch_size=256, shuffle=True, drop_last=True)
    val_loader = data.DataLoader(val_set, batch_size=256, shuffle=False, drop_last=False)
    torch.manual_seed(42)
    net = BaseNetwork().to(device)
    opt = TutorialAdam(net.parameters(), lr=1e-3)
    loss_module = torch.nn.CrossEntropyLoss()
    sync(device)
    t0 = time.perf_counter()
    true_preds, count = 0.0, 0
    for imgs, labels in train_loader:
        imgs, labels = imgs.to(device), labels.to(device)
        preds = net(imgs)
        loss = loss_module(preds, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        true_preds += (preds.argmax(dim=-1) == labels).sum().item()
        count += labels.shape[0]
        loss.item()  # the tutorial's tqdm description reads the loss every step
    val_true = 0
    for imgs, labels in val_loader:
        imgs, labels = imgs.to(device), labels.to(device)
        with torch.no_grad():
            val_true += (net(imgs).argmax(dim=-1) == labels).sum().item()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per Trainer/plain run (first is warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-tutorial", action="store_true", help="leave out (d), the slow one")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N images only (smoke tests; not for figures)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="a small batch makes each step's arithmetic negligible, so the ratios show the "
                             "per-step overhead, as on a fast GPU (d is left out: it is the tutorial's 256)")
    parser.add_argument("--hidden", type=lambda v: [int(h) for h in v.split(",")], default=None,
                        help="hidden layer sizes instead of the tutorial's, e.g. 8: with --batch-size 16 the "
                             "arithmetic is ~0 and the times are the per-step overhead alone")
    parser.add_argument("--graph-row", action="store_true",
                        help="run (f), module.cuda_graph=true, on a CPU too (always on a GPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians and ratios here")
    args = parser.parse_args()
    if args.batch_size != 256 or args.hidden:
        args.skip_tutorial = True
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but CUDA is not available on this machine; use --device cpu")

    dm = FashionMNISTDataModule(data_dir=str(ROOT / "data"))
    dm.prepare_data()
    dm.setup()
    if args.epochs < 2:
        sys.exit("error: --epochs must be >= 2 (the first epoch is warm-up)")
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device} ({device_name}), "
          f"reps {args.reps}, epochs {args.epochs}" + (f", train subset {args.train_subset}" if args.train_subset else ""))
    results: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": [], "e": [], "f": []}
    graph_row = args.device == "cuda" or args.graph_row
    graph_used = True
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            sub = args.train_subset
            bs, hid = args.batch_size, args.hidden
            results["a"].append(trainer_epoch("default", args.device, Path(tmp) / f"a{rep}", args.epochs, sub, bs, hid))
            results["b"].append(trainer_epoch("none", args.device, Path(tmp) / f"b{rep}", args.epochs, sub, bs, hid))
            results["c"].append(plain_epoch(dm, args.device, args.epochs, subset=sub, batch_size=bs, hidden=hid))
            if not args.skip_tutorial:
                results["d"].append(tutorial_epoch(str(ROOT / "data"), args.device))
            results["e"].append(trainer_epoch("default", args.device, Path(tmp) / f"e{rep}", args.epochs, sub, bs, hid,
                                              extra=LIGHTNINGS_LOOP))
            if graph_row:
                results["f"].append(trainer_epoch("default", args.device, Path(tmp) / f"f{rep}", args.epochs, sub, bs,
                                                  hid, extra=("module.cuda_graph=true",)))
                graph_used = graph_used and graph_was_used(Path(tmp) / f"f{rep}")
            print(f"rep {rep + 1}: " + "  ".join(f"({k}) {v[-1]:.2f}s" for k, v in results.items() if v), flush=True)

    med = {k: statistics.median(v) for k, v in results.items() if v}
    labels = {"a": "Trainer, diagnostics on", "b": "Trainer, diagnostics off",
              "c": "plain loop, torch Adam foreach", "d": "tutorial's loop", "e": "(a) with Lightning's loop",
              "f": "(a) with module.cuda_graph"}
    print(f"\nmedian seconds per epoch (train {args.train_subset or 50_000:,} + val 10,000, "
          f"batch {args.batch_size}, Adam" + (f", hidden {args.hidden})" if args.hidden else ")"))
    for k, v in med.items():
        print(f"  ({k}) {labels[k]:<32} {v:7.2f} s")
    print("ratios")
    print(f"  (a)/(c) = {med['a'] / med['c']:.3f}   goal <= 1.15")
    print(f"  (b)/(c) = {med['b'] / med['c']:.3f}   goal <= 1.10")
    print(f"  (a)/(b) = {med['a'] / med['b']:.3f}   goal <= 1.03 (diagnostics overhead)")
    if "d" in med:
        print(f"  (d)/(a) = {med['d'] / med['a']:.1f}    goal >= 10")
    print(f"  (e)/(a) = {med['e'] / med['a']:.3f}   (what module.manual_step and NoProfiler save)")
    if "f" in med:
        print(f"  (f)/(c) = {med['f'] / med['c']:.3f}   (a) with its steps replayed as a CUDA graph; "
              f"(f)/(a) = {med['f'] / med['a']:.3f}")
    # What the Trainer adds to each optimizer step, beyond the plain loop's (validation included).
    steps = (args.train_subset or 50_000) // args.batch_size
    overhead_us = {k: (med[k] - med["c"]) / steps * 1e6 for k in ("a", "b", "e", "f") if k in med}
    print(f"per step ({steps} steps of batch {args.batch_size}): plain loop {med['c'] / steps * 1e6:.0f} us; "
          f"the Trainer adds {overhead_us['b']:.0f} us, with diagnostics {overhead_us['a']:.0f} us, "
          f"with Lightning's loop {overhead_us['e']:.0f} us"
          + (f", with its steps as a CUDA graph {overhead_us['f']:.0f} us" if "f" in overhead_us else ""))
    if args.json:
        ratios = {"a/c": med["a"] / med["c"], "b/c": med["b"] / med["c"], "a/b": med["a"] / med["b"],
                  "e/a": med["e"] / med["a"]}
        if "d" in med:
            ratios["d/a"] = med["d"] / med["a"]
        if "f" in med:
            ratios.update({"f/c": med["f"] / med["c"], "f/a": med["f"] / med["a"]})
        args.json.write_text(json.dumps({
            "benchmark": "epoch_time", "device": args.device, "device_name": device_name,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "reps": args.reps,
            "epochs": args.epochs, "train_subset": args.train_subset, "batch_size": args.batch_size,
            "labels": labels, "median_seconds": med, "seconds": results, "ratios": ratios,
            "hidden": args.hidden, "steps_per_epoch": steps, "overhead_us_per_step": overhead_us,
            "graph_used": graph_used if graph_row else None}, indent=2) + "\n")


if __name__ == "__main__":
    main()
