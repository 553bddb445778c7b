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


def run_script(script: str, *args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PROJECT_ROOT": str(ROOT), **(env or {})}
    return subprocess.run([PYTHON, str(ROOT / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


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
