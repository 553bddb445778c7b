"""A NaN/inf loss or weight stops the run within one step: status "diverged", the step, one line,
exit status 0 (the run did what it was asked; the result is the finding). A sweep goes on."""

from __future__ import annotations

import json

import pytest
import torch

from callbacks.divergence import GPU_CHECK_EVERY, DivergenceDetector
from src.training import train
from tests.conftest import at_once, compose, run_script

SHORT = ["trainer.max_epochs=2", "data.train_subset=2560", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "callbacks=none", "print_config=false"]


@pytest.fixture(scope="module")
def diverging(tmp_path_factory, data_dir):
    """This file's two train.py processes, run at once: a run with optim.lr=50, and a sweep of
    optim.lr=50,0.05. {"run": (its dir, its process), "sweep": (...)}."""
    tmp = tmp_path_factory.mktemp("diverging")
    run, sweep = tmp / "run", tmp / "sweep"
    single, multi = at_once(
        lambda: run_script("train.py", *SHORT, "optim=sgd", "optim.lr=50", f"hydra.run.dir={run}", timeout=300),
        lambda: run_script("train.py", "-m", *SHORT, "trainer.max_epochs=1", "optim=sgd", "optim.lr=50,0.05",
                           f"hydra.sweep.dir={sweep}", timeout=400))
    return {"run": (run, single), "sweep": (sweep, multi)}


def test_lr_too_high_diverges_with_one_line(diverging):
    out, res = diverging["run"]
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.startswith("diverged: ")]
    assert len(lines) == 1, res.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "diverged"
    step = r["diverged_step"]
    assert isinstance(step, int) and 1 <= step <= 10  # in epoch 0 (10 steps)
    assert f"at step {step} (epoch 0)" in lines[0] and "optim.lr=50 is probably too high" in lines[0]
    assert r["error"] in lines[0]
    # stopped at once: one loss per step taken, the last one not finite (null in JSON)
    assert r["global_step"] == step and len(r["train_losses"]) == step
    assert r["train_losses"][-1] is None and all(x is not None for x in r["train_losses"][:-1])
    assert r["test_acc"] is None and r["val_scores"] == []
    assert not (out / "checkpoints" / "last.ckpt").exists()  # no NaN weights to resume from


def test_too_wide_init_diverges(tmp_path, data_dir):
    cfg = compose([*SHORT, "optim=sgd", "init=normal", "init.std=10"], tmp_path)
    assert train(cfg) is None  # no value: Optuna marks the trial failed and goes on
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "diverged" and r["diverged_step"] >= 1
    # the first loss was already ~1e11: the message blames the init first
    assert "the init (normal, init.std=10) is probably too wide" in r["error"]


def test_sweep_goes_on_after_a_diverging_job(diverging):
    sweep, res = diverging["sweep"]
    assert "Traceback" not in res.stderr + res.stdout
    statuses = {}
    for results in sweep.glob("*/results.json"):
        r = json.loads(results.read_text())
        statuses[r["config"]["optim"]["lr"]] = r["status"]
    assert statuses == {50: "diverged", 0.05: "ok"}, (statuses, res.stderr[-2000:])
    assert "diverged" in (sweep / "summary.csv").read_text()  # the report shows the row as diverged


# --- the GPU cadence: the loss is read every N steps, the first bad step is still exact ----------

def test_bad_check_every_n_steps_is_refused():
    import pytest

    from callbacks.divergence import DivergenceDetector

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="check_every_n_steps=.* must be an integer >= 1"):
            DivergenceDetector(check_every_n_steps=bad)
    assert DivergenceDetector()._every(torch.zeros(())) == 1  # CPU default: every step
    assert DivergenceDetector()._every(torch.zeros((), device="meta")) == GPU_CHECK_EVERY


def test_checking_every_3_steps_names_the_first_bad_step(tmp_path, data_dir, monkeypatch):
    """What a GPU run does by default (a read every GPU_CHECK_EVERY steps), here every 3 steps
    on the CPU: the run stops at the next check, diverged_step is the first non-finite loss."""
    monkeypatch.setattr(DivergenceDetector, "_every", lambda self, loss: 3)
    cfg = compose([*SHORT, "optim=sgd", "optim.lr=50"], tmp_path)
    assert train(cfg) is None
    r = json.loads((tmp_path / "results.json").read_text())
    losses = r["train_losses"]
    first_bad = next(i for i, v in enumerate(losses) if v is None) + 1
    assert r["status"] == "diverged" and r["diverged_step"] == first_bad
    assert f"at step {first_bad} (epoch 0)" in r["error"]
    assert first_bad <= r["global_step"] < first_bad + 3 and r["global_step"] % 3 == 0
    assert r["global_step"] > first_bad  # this seed diverges at step 4: read at step 6
    assert len(losses) == r["global_step"]  # every step taken is in the record
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_loss_is_read_once_per_check_not_per_step(tmp_path, data_dir, monkeypatch):
    """The hot path's host reads: with a check every 10 steps, 50 steps make 5 reads of the
    divergence flag (each read of a GPU tensor is a host-device sync)."""
    import traceback

    import pytorch_lightning as pl

    monkeypatch.setattr(DivergenceDetector, "_every", lambda self, loss: 10)
    reads, window = [], []
    real_bool = torch.Tensor.__bool__

    def counting_bool(self):
        if window and traceback.extract_stack(limit=2)[0].filename.endswith("divergence.py"):
            reads.append(1)
        return real_bool(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)

    class Window(pl.Callback):  # steps 21..70 (after warm-up, before the epoch's end)
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 20:
                window.append(1)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 69:
                window.clear()

    import tests.test_divergence as me
    me._WINDOW = Window()
    cfg = compose([*SHORT, "trainer.max_epochs=1", "data.train_subset=20480", "skip_test=true",
                   "+callbacks._window._target_=tests.test_divergence._window"], tmp_path)
    train(cfg)
    assert len(reads) == 5


_WINDOW = None


def _window():
    return _WINDOW
