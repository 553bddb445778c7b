"""Loading FashionMNIST into the tensor pipeline's tensors, three ways, each in a fresh process.

  split-first  what src/data.py does: split the uint8 images, convert only those rows, in place
  decode-all   what it did before: convert all 60,000 images to float, normalise, then split
  cache        a ready-to-load .pt of the normalised tensors (made once here), opened with
               torch.load(mmap=True) and split
Each variant runs `--reps` times in a fresh python (a fresh process pays the page faults of its
first allocation, as a training run does), in a rotated order. The child times only the load
(after its imports) and reports its peak RSS; the median of each is printed with the ratio to
split-first. All three give bit-identical tensors (checked).

    .venv/bin/python benchmarks/data_load.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, resource, sys, time, hashlib
sys.path.insert(0, sys.argv[1])
import torch
from src import data
variant, cache = sys.argv[2], sys.argv[3]
train_idx, val_idx = data.split_indices()
t0 = time.perf_counter()
if variant == "split-first":
    images, labels = data.load_raw(sys.argv[1] + "/data", train=True)
    tx, vx = data.normalize(images[train_idx]), data.normalize(images[val_idx])
    test = data.normalize(data.load_raw(sys.argv[1] + "/data", train=False)[0])
elif variant == "decode-all":
    x, y = data.load_split_tensors(sys.argv[1] + "/data", train=True)
    tx, vx = x[train_idx], x[val_idx]
    del x
    test = data.load_split_tensors(sys.argv[1] + "/data", train=False)[0]
else:
    c = torch.load(cache, mmap=True, weights_only=True)
    tx, vx, test = c["train"][train_idx], c["train"][val_idx], c["test"].clone()
    del c
seconds = time.perf_counter() - t0
digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in (tx[:2000], vx[:2000], test[:2000]))).hexdigest()
print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "digest": digest}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from src import data

    variants = ["split-first", "decode-all", "cache"]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="data_load_") as tmp:
        cache = Path(tmp) / "normalised.pt"
        torch.save({"train": data.load_split_tensors(ROOT / "data", True)[0],
                    "test": data.load_split_tensors(ROOT / "data", False)[0]}, cache)
        print(f"data_load: {args.reps} reps per variant, threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.2f}; cache file {cache.stat().st_size / 2**20:.0f} MB", flush=True)
        for rep in range(args.reps):
            for v in variants[rep % 3:] + variants[:rep % 3]:
                out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), v, str(cache)], capture_output=True,
                                     text=True, check=True)
                results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    digests = {r["digest"] for rs in results.values() for r in rs}
    base = statistics.median(r["seconds"] for r in results["split-first"])
    print(f"\n{'variant':<13}{'load s':>8}{'vs split-first':>16}{'peak RSS':>10}")
    for v, rs in results.items():
        sec = statistics.median(r["seconds"] for r in rs)
        print(f"{v:<13}{sec:>8.3f}{sec / base:>15.2f}x{statistics.median(r['maxrss_mb'] for r in rs):>7.0f} MB")
    print("tensors bit-identical across variants:", len(digests) == 1)


if __name__ == "__main__":
    main()
