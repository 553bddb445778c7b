"""The floor for benchmarks/end_to_end.py: the tutorial's training as a plain PyTorch script.

What a person would write without Lightning or Hydra: FashionMNIST decoded from the raw IDX
files into in-memory tensors (the tutorial's normalisation and 50,000/10,000 split), the MLP
784-512-256-256-128-10 with Kaiming init, torch.optim.Adam(foreach=True) at lr 1e-3, batch 256
shuffled with drop_last, validation accuracy after each epoch, the test accuracy at the end, no
logging, no checkpoints, no figures. Imports torch and numpy only.

    .venv/bin/python benchmarks/plain_script.py [--epochs 7] [--device cpu|cuda] [--train-subset N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RAW = Path(__file__).resolve().parents[1] / "data" / "FashionMNIST" / "raw"
MEAN, STD = 0.2861, 0.3530


def read_idx(path: Path) -> torch.Tensor:
    # The same decoding as src/data.py's, written out: the floor must not import the app.
    data = np.fromfile(path, dtype=np.uint8)
    ndim = int(data[3])
    dims = np.frombuffer(data[4:4 + 4 * ndim].tobytes(), dtype=">i4")
    return torch.from_numpy(data[4 + 4 * ndim:].reshape(*dims).copy())


def normalise(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(1).float().div_(255).sub_(MEAN).div_(STD)


def mlp() -> nn.Module:
    sizes = [784, 512, 256, 256, 128]
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(sizes[-1], 10))
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for i, m in enumerate(linears):  # the tutorial's kaiming_init: the first layer's input has no ReLU
        nn.init.normal_(m.weight, std=(1 if i == 0 else 2) ** 0.5 / m.in_features ** 0.5)
        nn.init.zeros_(m.bias)
    return net


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    correct = sum(int((net(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-subset", type=int, default=None, help="first N training images only")
    args = parser.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(42)
    images, labels = read_idx(RAW / "train-images-idx3-ubyte"), read_idx(RAW / "train-labels-idx1-ubyte").long()
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(42))
    train_idx, val_idx = perm[:50000][: args.train_subset], perm[50000:]
    dev = torch.device(args.device)
    x, y = normalise(images[train_idx]).to(dev), labels[train_idx].to(dev)
    vx, vy = normalise(images[val_idx]).to(dev), labels[val_idx].to(dev)
    tx = normalise(read_idx(RAW / "t10k-images-idx3-ubyte")).to(dev)
    ty = read_idx(RAW / "t10k-labels-idx1-ubyte").long().to(dev)
    net = mlp().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(42 + epoch)).to(dev)
        net.train()
        for i in range(len(x) // 256):
            idx = order[i * 256:(i + 1) * 256]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        print(f"epoch {epoch + 1}/{args.epochs}  val_acc={accuracy(net, vx, vy):.4f}", flush=True)
    print(f"test_acc={accuracy(net, tx, ty):.4f}  {time.perf_counter() - t0:.1f}s after imports", file=sys.stderr)


if __name__ == "__main__":
    main()
