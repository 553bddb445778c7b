"""eval.py tests with the precision the run tested with: a bf16 run's checkpoint scored in float32
gave another accuracy than its results.json's test_acc (76.61 % against 76.68 %). `precision=`
given to eval.py still wins."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from src.data import load_split_tensors
from src.evaluation import evaluate, precision_of, run_config
from src.model import BaseNetwork
from src.module import ClassifierModule
from tests.conftest import FAST, compose


def _eval(tmp_path, ckpt, *overrides, out="eval"):
    # quoted: a checkpoint's name has `=` in it (best-epoch=01-val_acc=0.7751.ckpt)
    cfg = compose(["accelerator=cpu", f"ckpt_path='{ckpt}'", *overrides], tmp_path / out, config_name="eval")
    acc = evaluate(cfg)
    return acc, json.loads((tmp_path / out / "eval.json").read_text())


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed", "32-true"])
def test_eval_gives_the_runs_test_acc_in_its_precision(tmp_path, data_dir, precision):
    from src.training import train

    run = tmp_path / "run"
    train(compose([*FAST, "trainer.limit_test_batches=null", f"trainer.precision={precision}"], run))
    results = json.loads((run / "results.json").read_text())
    acc, in_its_precision = _eval(tmp_path, run)
    assert acc == results["test_acc"] and in_its_precision["precision"] == precision
    # The checkpoint file itself, and a killed run (no results.json): the checkpoint's stamp says it.
    assert _eval(tmp_path, results["best_checkpoint"])[0] == results["test_acc"]
    (run / "results.json").unlink()
    assert _eval(tmp_path, run)[0] == results["test_acc"]
    # Given on the command line, it wins; float32 scores a bf16 run's test images otherwise. The
    # test loss says so: the accuracy, a count of right answers, can come out the same (10 steps
    # of bf16-mixed training gave 7587 of 10000 either way, losses printed 0.7028 and 0.7027).
    _, in_float32 = _eval(tmp_path, run, "precision=32-true")
    assert in_float32["precision"] == "32-true"
    assert (in_float32["loss"] == in_its_precision["loss"]) == (precision == "32-true"), in_float32["loss"]


def test_results_json_before_the_stamp_before_the_default(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    stamped = {"run": {"config": {"trainer": {"precision": "bf16-mixed"}}}}
    assert precision_of(run_config(str(run), ckpt, {})) == "32-true"  # says nothing: Lightning's default
    assert precision_of(run_config(str(run), ckpt, stamped)) == "bf16-mixed"
    # A run resumed with another precision tested with the last one: results.json's.
    (run / "results.json").write_text(json.dumps({"config": {"trainer": {"precision": "bf16-true"}}}))
    assert precision_of(run_config(str(run), ckpt, stamped)) == "bf16-true"
    assert precision_of(run_config(str(ckpt), ckpt, stamped)) == "bf16-true"  # the file of that run dir
    elsewhere = tmp_path / "copied.ckpt"  # a file outside any run dir: its own stamp only
    assert precision_of(run_config(str(elsewhere), elsewhere, stamped)) == "bf16-mixed"
    assert precision_of(run_config(str(elsewhere), elsewhere, {"run": ["not", "a", "stamp"]})) == "32-true"


def test_a_float64_checkpoint_is_not_rounded_to_float32(tmp_path, data_dir):
    torch.manual_seed(5)
    net = BaseNetwork(hidden_sizes=[32]).double()
    with torch.no_grad():  # float64 values (a float32 init, doubled, would round to itself)
        for param in net.parameters():
            param.copy_(0.1 * torch.randn_like(param))
    state = {"hyper_parameters": {"model": net.config}, "state_dict": ClassifierModule(net).state_dict(),
             "run": {"config": {"trainer": {"precision": "64-true"}}}}
    torch.save(state, tmp_path / "net.ckpt")
    _, record = _eval(tmp_path, tmp_path / "net.ckpt", "data.eval_batch_size=10000")
    x, y = load_split_tensors(data_dir, train=False)
    with torch.no_grad():
        expected = F.cross_entropy(net(x.double()), y).item()
    assert record["precision"] == "64-true"
    assert record["loss"] == pytest.approx(expected, rel=1e-12)  # rounded through float32: off by ~1e-9


def test_eval_of_the_val_split_uses_the_runs_split_unless_given(tmp_path, data_dir, monkeypatch):
    """A run with data.split_seed=7 validated on other images than the default split's 10,000:
    split=val must score the run's own (its best_val_acc, exactly), and data.split_seed given to
    eval.py still wins (then the images partly overlap what the run trained on)."""
    from src.training import train

    run = tmp_path / "run"
    train(compose([*FAST, "data.split_seed=7", "trainer.limit_val_batches=null", "data.eval_batch_size=500"], run))
    results = json.loads((run / "results.json").read_text())
    acc, record = _eval(tmp_path, run, "split=val")
    assert acc == results["best_val_acc"] and record["split_seed"] == 7
    monkeypatch.setattr("src.evaluation.job_overrides", lambda: ["data.split_seed=42"])
    acc42, record = _eval(tmp_path, run, "split=val", "data.split_seed=42", out="eval42")
    assert record["split_seed"] == 42 and acc42 != results["best_val_acc"]
