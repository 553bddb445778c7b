"""Same config and seed, same results.json metrics on CPU (trainer.deterministic=true)."""

from __future__ import annotations

import json

import torch

from src.training import train
from tests.conftest import compose

SHORT = ["trainer.max_epochs=2", "data.train_subset=1280", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "callbacks=none", "print_config=false",
         "optim=sgd_mom", "init=xavier"]


def test_two_runs_give_identical_metrics(tmp_path, data_dir):
    runs = []
    for name in ("a", "b"):
        train(compose(SHORT, tmp_path / name))
        r = json.loads((tmp_path / name / "results.json").read_text())
        w = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        runs.append((r, w))
    (ra, wa), (rb, wb) = runs
    assert ra["status"] == rb["status"] == "ok"
    for key in ("val_scores", "train_scores", "train_losses", "test_acc", "best_val_acc"):
        assert ra[key] == rb[key], key
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ra["config"]["trainer"]["deterministic"] is True
