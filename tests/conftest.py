"""Shared test helpers: the repo root, the prepared data, composing configs, running scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
PYTHON = sys.executable

os.environ.setdefault("PROJECT_ROOT", str(ROOT))

_approx = pytest.approx


def _smallest_nonzero(expected) -> float | None:
    import numpy as np

    values = list(expected.values()) if isinstance(expected, dict) else expected
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    arr = np.abs(arr[np.isfinite(arr) & (arr != 0)])
    return float(arr.min()) if arr.size else None


def approx_that_compares(expected, rel=None, abs=None, nan_ok=False):
    """pytest.approx, refusing a comparison that cannot fail: its default abs=1e-12 passes any
    value near an expected one below 1e-9 (a rounding bound of 1e-14 matched a mutant's 2e-14).
    Such a test says its abs= (0 to compare by rel alone)."""
    smallest = _smallest_nonzero(expected) if abs is None else None
    if smallest is not None and smallest < 1e-9:
        raise AssertionError(f"pytest.approx of a value as small as {smallest:.3g} needs abs= "
                             "(the default 1e-12 would pass anything near it)")
    return _approx(expected, rel=rel, abs=abs, nan_ok=nan_ok)


pytest.approx = approx_that_compares

# Small, fast settings for a real train(cfg) run.
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.accelerator=cpu",
    "callbacks=none",
    "print_config=false",
]


def compose(overrides: list[str], output_dir: Path, config_name: str = "train"):
    """Compose a config as `python train.py <overrides>` would, with its run dir at output_dir."""
    from src.config import compose_config

    return compose_config(overrides, output_dir, config_name)


# Every diagnostic on (the default callbacks), logging every 5 steps, 2 short epochs.
DIAGNOSTICS_SHORT = ["trainer.max_epochs=2", "trainer.accelerator=cpu", "data.train_subset=2560",
                     "diagnostics.every_n_steps=5", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


def what_runs_write(tmp_path: Path, variants: dict[str, list[str]], keys: tuple[str, ...]) -> dict[str, dict]:
    """{name: what_a_run_writes(DIAGNOSTICS_SHORT + overrides)} for each variant, its results.json
    cut to `keys` (`diagnostics_seconds` kept in `seconds`). Runs that must not differ compare equal."""
    written = {}
    for name, overrides in variants.items():
        run = what_a_run_writes([*DIAGNOSTICS_SHORT, *overrides], tmp_path / name)
        run["seconds"] = run["results"]["diagnostics_seconds"]
        run["results"] = {k: run["results"][k] for k in keys}
        written[name] = run
    return written


def what_a_run_writes(overrides: list[str], out: Path) -> dict:
    """train() with `overrides` in `out`, then what it wrote: results.json, every TensorBoard scalar
    but the timings as (step, value), every histogram as (step, sum), every image's steps, and
    the figure files' names."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.training import train

    train(compose(overrides, out))
    events = EventAccumulator(str(out / "tensorboard"),
                              size_guidance={"scalars": 0, "histograms": 0, "images": 0}).Reload()
    tags = events.Tags()
    return {"results": json.loads((out / "results.json").read_text()),
            "scalars": {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags["scalars"]
                        if "seconds" not in t and "time" not in t},
            "histograms": {t: [(e.step, e.histogram_value.sum) for e in events.Histograms(t)] for t in tags["histograms"]},
            "images": {t: [e.step for e in events.Images(t)] for t in tags["images"]},
            "figures": sorted(p.name for p in (out / "figures").iterdir())}


def run_script(script: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PROJECT_ROOT": str(ROOT), **(env or {})}
    return subprocess.run([PYTHON, str(ROOT / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server or a process group)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def at_once(*calls, workers: int = 2):
    """Each call (a function of no arguments, such as one running a script) in a thread, `workers`
    at a time, their results in order: independent subprocesses overlap on 2 cores."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


class RecordingWriter:
    """A SummaryWriter that keeps what it is given: {(tag, step): value} and {(tag, step): the
    add_histogram_raw arguments}."""

    def __init__(self):
        self.scalars, self.histograms = {}, {}

    def add_scalar(self, tag, value, step):
        self.scalars[(tag, step)] = value

    def add_histogram_raw(self, tag, **kwargs):
        self.histograms[(tag, kwargs["global_step"])] = kwargs

    def add_custom_scalars(self, layout):
        pass

    def tags(self, kind: str) -> set[str]:
        return {tag for tag, _ in getattr(self, kind)}


@pytest.fixture(autouse=True)
def ctrl_c_as_in_a_terminal():
    """A shell without job control starts background jobs with Ctrl-C ignored, and the run keeps
    it ignored (src/cli.py, callbacks/interrupt.py): tests that send SIGINT see it as in a
    terminal, wherever the suite was started."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The prepared FashionMNIST (make test prepares it; prepare here if a test runs alone)."""
    from src.data import prepare_fashion_mnist

    prepare_fashion_mnist(DATA_DIR)
    return DATA_DIR


def warnings_of(results: dict) -> list[str]:
    """results.json's warnings, less the two that tests at FAST's limit_test_batches and
    limit_val_batches get: test_acc and val_scores of a part of their split
    (tests/test_truth_training.py tests those)."""
    return [w for w in results["warnings"] if not w.startswith(("test_acc is over ", "val_scores are over "))]
