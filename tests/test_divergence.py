"""A NaN/inf loss or weight stops the run within one step: status "diverged", the step, one line,
exit status 0 (the run did what it was asked; the result is the finding). A sweep goes on."""

from __future__ import annotations

import json
import math

from src.training import train
from tests.conftest import compose, run_script

SHORT = ["trainer.max_epochs=2", "data.train_subset=2560", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "callbacks=none", "print_config=false"]


def test_lr_too_high_diverges_with_one_line(tmp_path, data_dir):
    out = tmp_path / "run"
    res = run_script("train.py", *SHORT, "optim=sgd", "optim.lr=50", f"hydra.run.dir={out}", timeout=300)
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
    assert math.isnan(train(cfg))  # Optuna marks a NaN trial failed and goes on
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "diverged" and r["diverged_step"] >= 1
    # the first loss was already ~1e11: the message blames the init first
    assert "the init (normal, init.std=10) is probably too wide" in r["error"]


def test_sweep_goes_on_after_a_diverging_job(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    res = run_script("train.py", "-m", *SHORT, "trainer.max_epochs=1", "optim=sgd", "optim.lr=50,0.05",
                     f"hydra.sweep.dir={sweep}", timeout=400)
    assert "Traceback" not in res.stderr + res.stdout
    statuses = {}
    for results in sweep.glob("*/results.json"):
        r = json.loads(results.read_text())
        statuses[r["config"]["optim"]["lr"]] = r["status"]
    assert statuses == {50: "diverged", 0.05: "ok"}, (statuses, res.stderr[-2000:])
    summary = sweep / "summary.csv"
    if summary.exists():  # the sweep report (src/report.py) shows the row as diverged
        assert "diverged" in summary.read_text()
