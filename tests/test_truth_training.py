"""results.json against numbers computed here, with plain torch, on independently decoded data.

The run: 3 short epochs where a test-only callback zeroes the output layer just before the
validation of epochs 0 and 2 (the weights stay zeroed; training goes on from them). So the val
accuracy is ~chance in epochs 0 and 2 and real in epoch 1: the best-val epoch is neither the
first nor the last, and the last weights are a bad model. `test_acc` must then be the accuracy
of epoch 1's checkpoint on the test split, not the last weights', and not a val accuracy.
"""

from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from callbacks.diagnostics import Timed
from src.data import MEAN, STD
from src.training import train
from tests.conftest import FAST, compose, warnings_of

EPOCHS = 3
ZEROED_EPOCHS = (0, 2)
EVAL_BATCH, EVAL_BATCHES = 512, 2  # val and test on the first 1024 images of their split
SIZES = [784, 512, 256, 256, 128, 10]
WEIGHTS_AT_VALIDATION: list[dict] = []  # filled by ZeroHeadBeforeValidation, one per epoch


class KnownDiagnosticsCost(Timed):
    """A diagnostics callback whose own time is known: 0.25 s, booked at the end of training."""

    def on_train_end(self, trainer, pl_module):
        self.seconds = 0.25


class SlowToPickle:
    """Pickles as an empty OrderedDict (a weights-only load reads it), after a known wait: a
    checkpoint holding one takes at least WRITE_WAIT seconds to write."""

    def __reduce__(self):
        time.sleep(WRITE_WAIT)
        return (collections.OrderedDict, ())


FIT_START_WAIT, EPOCH_WAIT, TEST_WAIT, WRITE_WAIT = 0.3, 0.1, 0.2, 0.05


class KnownPhaseCosts(pl.Callback):
    """Known waits in each part of results.json's `timing`: at fit start (in `fit`, not in an
    epoch), at each epoch's first batch, at the test's start, and in each checkpoint write;
    counts the checkpoints Lightning writes."""

    def __init__(self):
        self.saves = 0

    def on_fit_start(self, trainer, pl_module):
        time.sleep(FIT_START_WAIT)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            time.sleep(EPOCH_WAIT)

    def on_test_start(self, trainer, pl_module):
        time.sleep(TEST_WAIT)

    def state_dict(self):
        return {"slow": SlowToPickle()}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.saves += 1


PHASES = None  # the run's KnownPhaseCosts


def _phase_costs():
    return PHASES


class ZeroHeadBeforeValidation(pl.Callback):
    """Zero the output layer before validating the given epochs; record the weights validated."""

    def __init__(self, epochs):
        self.epochs = set(epochs)

    @torch.no_grad()
    def on_validation_start(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        if trainer.current_epoch in self.epochs:
            last = pl_module.net.layers[-1]
            last.weight.zero_()
            last.bias.zero_()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            WEIGHTS_AT_VALIDATION.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})


def plain_mlp(state_dict: dict) -> nn.Sequential:
    """The tutorial's MLP as a plain nn.Sequential, loaded from a state dict of `net`."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    seq = nn.Sequential(*layers)
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    for j, lin in enumerate(linears):  # net.layers.{0,2,4,6,8} -> the j-th Linear
        lin.weight.data.copy_(state_dict[f"layers.{2 * j}.weight"])
        lin.bias.data.copy_(state_dict[f"layers.{2 * j}.bias"])
    return seq.eval()


@torch.no_grad()
def accuracy(state_dict: dict, images: torch.Tensor, labels: torch.Tensor) -> float:
    preds = plain_mlp(state_dict)(images).argmax(dim=1)
    return (preds == labels).double().mean().item()


def torchvision_split(data_dir, train: bool, n: int, split_seed: int = 42):
    """The first n images of the val split (train=True) or of the test set, decoded by
    torchvision and split by torch's random_split, normalised as in the tutorial."""
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(data_dir), train=train, download=False)
    x = ((ds.data.float() / 255 - MEAN) / STD).unsqueeze(1)
    if train:
        state = torch.get_rng_state()
        torch.manual_seed(split_seed)
        _, val = torch.utils.data.random_split(range(60000), [50000, 10000])
        torch.set_rng_state(state)
        idx = list(val.indices)[:n]
        return x[idx], ds.targets[idx]
    return x[:n], ds.targets[:n]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("truth")
    # optimized_metric=null: train() returns test_acc, its fallback
    cfg = compose([*FAST, f"trainer.max_epochs={EPOCHS}", f"trainer.limit_val_batches={EVAL_BATCHES}",
                   f"trainer.limit_test_batches={EVAL_BATCHES}", f"data.eval_batch_size={EVAL_BATCH}",
                   "data.train_subset=2560", "optimized_metric=null"], out)
    with open_dict(cfg):  # added to the run's own callbacks (checkpointing, divergence, ...)
        cfg.callbacks.zero_head = OmegaConf.create({
            "_target_": f"{__name__}.ZeroHeadBeforeValidation", "epochs": list(ZEROED_EPOCHS)})
        cfg.callbacks.known_cost = OmegaConf.create({"_target_": f"{__name__}.KnownDiagnosticsCost"})
        cfg.callbacks.phase_costs = OmegaConf.create({"_target_": f"{__name__}._phase_costs"})
    global PHASES
    PHASES = KnownPhaseCosts()
    WEIGHTS_AT_VALIDATION.clear()
    started = time.time()
    returned = train(cfg)
    wall = time.time() - started
    results = json.loads((out / "results.json").read_text())
    n = EVAL_BATCH * EVAL_BATCHES
    return {"out": out, "returned": returned, "results": results, "weights": list(WEIGHTS_AT_VALIDATION),
            "wall": wall, "saves": PHASES.saves, "cfg": OmegaConf.to_container(cfg, resolve=True),
            "val": torchvision_split(data_dir, True, n), "test": torchvision_split(data_dir, False, n)}


def test_val_scores_are_the_accuracy_of_the_validated_weights(run):
    r, weights = run["results"], run["weights"]
    assert r["status"] == "ok" and r["epochs"] == EPOCHS and len(weights) == EPOCHS
    independent = [accuracy(w, *run["val"]) for w in weights]
    assert r["val_scores"] == pytest.approx(independent, abs=1e-6)
    # the set-up did what it says: chance where the head was zeroed, a real model in epoch 1
    assert independent[1] > 0.5 and max(independent[0], independent[2]) < 0.2


def test_best_val_epoch_is_the_argmax_of_the_independent_accuracies(run):
    r = run["results"]
    independent = [accuracy(w, *run["val"]) for w in run["weights"]]
    assert r["best_val_epoch"] == 1 == independent.index(max(independent))
    assert r["best_val_acc"] == pytest.approx(independent[1], abs=1e-6)


def test_best_checkpoint_holds_the_best_epochs_weights(run):
    r = run["results"]
    ckpt = torch.load(r["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == r["best_val_epoch"]
    net = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    for k, v in run["weights"][1].items():
        assert torch.equal(net[k], v), k


def test_last_checkpoint_holds_the_last_epochs_weights_not_the_best(run):
    """The last epoch (2) is not the best (1). Lightning 2.6 writes last.ckpt only beside a new
    best one, so it held epoch 1 and a kill resumed an epoch back; EpochCheckpoint writes it
    after every epoch, with the best score it has kept."""
    r = run["results"]
    ckpt = torch.load(run["out"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert r["best_val_epoch"] == 1
    assert (ckpt["epoch"], ckpt["global_step"]) == (EPOCHS - 1, r["global_step"])
    net = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    for k, v in run["weights"][-1].items():
        assert torch.equal(net[k], v), k
    # under ModelCheckpoint's own state key, with the best epoch's score and path
    (key, state), = [(k, v) for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint{")]
    assert float(state["best_model_score"]) == pytest.approx(r["best_val_acc"], abs=1e-6)
    assert state["best_model_path"] == r["best_checkpoint"]


def test_test_acc_is_the_best_checkpoints_accuracy_on_the_test_split(run):
    r = run["results"]
    best = accuracy(run["weights"][r["best_val_epoch"]], *run["test"])
    last = accuracy(run["weights"][-1], *run["test"])
    assert r["test_acc"] == pytest.approx(best, abs=1e-6)
    assert run["returned"] == r["test_acc"]  # optimized_metric=null: the test accuracy
    # the three wrong answers are far from it: the last weights, and the val accuracy
    assert abs(last - best) > 0.3
    assert abs(r["test_acc"] - r["best_val_acc"]) > 1e-4


def test_tensorboard_hparams_metrics_are_the_results(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run["out"] / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    r = run["results"]
    assert ea.Scalars("hp/test_acc")[-1].value == pytest.approx(r["test_acc"], abs=1e-6)
    assert ea.Scalars("hp/best_val_acc")[-1].value == pytest.approx(r["best_val_acc"], abs=1e-6)
    assert [e.value for e in ea.Scalars("val/acc")] == pytest.approx(r["val_scores"], abs=1e-6)
    from tensorboard.plugins.hparams import metadata

    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    # a single run's trial: what its command line set (each key once, its last value), then its dir
    assert start.group_name.endswith(f" · {run['out'].name}")
    assert start.group_name.startswith("max_epochs=3 · limit_train_batches=10 · limit_val_batches=2 · ")
    assert start.group_name.count("max_epochs=") == 1


def test_the_other_results_fields_describe_this_run(run):
    r, out = run["results"], run["out"]
    steps = 2560 // 256  # data.train_subset / batch size: every batch of the subset, each epoch
    assert r["global_step"] == EPOCHS * steps
    assert r["train_scores"] and r["train_losses"]  # (their full length: the test below)
    assert r["provenance"]["torch"] == torch.__version__
    assert r["resumed_from"] is None and r["data_source"] == "prepared"
    assert r["output_dir"] == str(out) and r["config"] == json.loads(json.dumps(run["cfg"]))
    assert 0 < r["seconds"] <= run["wall"] + 0.01
    assert r["seconds"] == round(r["seconds"], 3)
    # the diagnostics' own time (the callbacks' sum) and its share of this run's wall time
    assert r["diagnostics_seconds"] == 0.25
    assert r["diagnostics_share"] == round(r["diagnostics_share"], 4)
    # 0.25 s over the unrounded seconds (+-0.0005 s: d(share) = 0.25 ds / s^2), rounded to 4 places
    assert r["diagnostics_share"] == pytest.approx(0.25 / r["seconds"], abs=0.25 * 5e-4 / r["seconds"] ** 2 + 5e-5 + 1e-9)
    assert Path(r["best_checkpoint"]).name.startswith(f"best-epoch={r['best_val_epoch']:02d}-")
    # the last epoch's val accuracy is the zeroed head's: at chance, and the run says so
    independent = [accuracy(w, *run["val"]) for w in run["weights"]]
    at_chance = independent[-1] <= 0.1 + 0.02
    expected = f"did not learn: final val acc {100 * independent[-1]:.1f} % is at chance level (10 %)"
    assert (expected in r["warnings"]) == at_chance, (independent, r["warnings"])


def test_timing_says_where_the_seconds_went(run):
    r, t = run["results"], run["results"]["timing"]
    assert set(t) == {"setup", "fit", "epoch_seconds", "checkpoint_writes", "checkpoint_seconds", "test"}
    # one per epoch, each holding its first batch's known wait
    assert len(t["epoch_seconds"]) == EPOCHS
    assert all(e >= EPOCH_WAIT for e in t["epoch_seconds"])
    assert t["test"] >= TEST_WAIT
    # every checkpoint Lightning wrote, each with its known wait
    assert t["checkpoint_writes"] == run["saves"] >= EPOCHS
    assert t["checkpoint_seconds"] >= WRITE_WAIT * run["saves"]
    # inside fit: the epochs, then (Lightning's ModelCheckpoint saves at the train epoch's end,
    # after the epoch's time is taken) the writes, and fit start's wait outside both
    assert t["fit"] >= sum(t["epoch_seconds"]) + t["checkpoint_seconds"] + FIT_START_WAIT - 0.003
    # the parts are this run's, in order, and add up to no more than its seconds
    assert 0 < t["setup"] and t["setup"] + t["fit"] + t["test"] <= r["seconds"] + 0.002
    assert t["setup"] + t["fit"] + t["test"] >= r["seconds"] - 1.0


def test_train_curves_are_the_whole_runs(run):
    """Testing the best (earlier) checkpoint must not cut the run's curves back to its epoch."""
    r = run["results"]
    steps = 2560 // 256
    assert len(r["train_losses"]) == EPOCHS * steps and all(math.isfinite(x) for x in r["train_losses"])
    assert len(r["train_scores"]) == EPOCHS and all(0 <= x <= 1 for x in r["train_scores"])


def test_ties_go_to_the_first_epoch_and_skip_test_skips_it(tmp_path, data_dir):
    """Every epoch validated with a zeroed head: all val accuracies equal. The best epoch is the
    first of the tie, as for the checkpoint callback (it keeps the first of equals); with
    skip_test=true no test runs and train() returns the best val accuracy."""
    cfg = compose([*FAST, "trainer.max_epochs=2", "data.train_subset=1280", "skip_test=true",
                   f"data.eval_batch_size={EVAL_BATCH}"], tmp_path)
    with open_dict(cfg):
        cfg.callbacks.zero_head = OmegaConf.create({
            "_target_": f"{__name__}.ZeroHeadBeforeValidation", "epochs": [0, 1]})
    returned = train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["val_scores"][0] == r["val_scores"][1]
    assert r["best_val_epoch"] == 0 and Path(r["best_checkpoint"]).name.startswith("best-epoch=00-")
    assert r["status"] == "ok" and r["test_acc"] is None and returned == r["best_val_acc"]


class CtrlCAtStep(pl.Callback):
    """Sends this process a SIGINT (Ctrl-C) at the end of optimizer step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_writes_an_interrupted_results_json(tmp_path, data_dir):
    """Ctrl-C: the run stops at the next batch boundary, saves last.ckpt there, and results.json
    says interrupted, by which signal, and the command that resumes it; then train() re-raises."""
    from src.errors import Interrupted

    cfg = compose([*FAST, "data.train_subset=2560"], tmp_path)
    with open_dict(cfg):
        cfg.callbacks.ctrl_c = OmegaConf.create({"_target_": f"{__name__}.CtrlCAtStep", "step": 3})
    with pytest.raises(Interrupted) as stopped:
        train(cfg)
    assert stopped.value.reported is True  # src/cli.py then keeps train()'s results.json, not a bare one
    r = json.loads((tmp_path / "results.json").read_text())
    assert (r["status"], r["signal"], r["error"]) == ("interrupted", "SIGINT", "interrupted by SIGINT")
    assert r["resume"] == f"python train.py ckpt_path={tmp_path}"
    assert r["test_acc"] is None and r["global_step"] == 4 and r["val_scores"] == []
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4

    # Resumed, its `seconds` adds the earlier try's training time (recorded in the checkpoint;
    # set to a known 1000 s here) to this process's own.
    ckpt["seconds_trained"] = 1000.0
    torch.save(ckpt, tmp_path / "checkpoints" / "last.ckpt")
    started = time.time()
    train(compose([*FAST, "data.train_subset=2560", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"],
                  tmp_path))
    wall = time.time() - started
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok" and r["resumed_from"] == str(tmp_path / "checkpoints" / "last.ckpt")
    assert 1000.0 < r["seconds"] <= 1000.0 + wall + 0.01


# --- what results.json says when Lightning's own settings change what a run does -------------

def test_epochs_are_trained_epochs_and_test_acc_says_whose_weights_it_is(tmp_path, data_dir):
    """No validation (limit_val_batches=0): 2 epochs trained, none validated, so no best-val
    checkpoint: `epochs` is 2 (it counted validations: 0), and a warning says test_acc is of the
    final weights."""
    cfg = compose([*FAST, "trainer.max_epochs=2", "data.train_subset=1280", "trainer.limit_val_batches=0"], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert (r["status"], r["epochs"], r["val_scores"], r["best_val_epoch"], r["global_step"]) == ("ok", 2, [], -1, 10)
    assert r["test_acc"] is not None
    assert warnings_of(r) == ["test_acc is of the final weights, not of the best-val checkpoint: "
                             "no validation ran (trainer.limit_val_batches=0)"]


@pytest.mark.parametrize("overrides, which", [
    (["~callbacks.model_checkpoint"], "the last epoch's checkpoint (epoch=1-step=10.ckpt)"),
    (["callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min"],
     "the best checkpoint by val/loss (best-epoch="),
])
def test_a_checkpoint_other_than_best_val_acc_tested_is_named(tmp_path, data_dir, overrides, which):
    cfg = compose([*FAST, "trainer.max_epochs=2", "data.train_subset=1280", *overrides], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok" and r["epochs"] == 2 and len(r["val_scores"]) == 2
    assert len(warnings_of(r)) == 1 and warnings_of(r)[0].startswith(f"test_acc is of {which}")
    assert warnings_of(r)[0].endswith("not of the best-val-acc one")


@pytest.mark.parametrize("overrides", [["checkpoint.every_n_train_steps=2"], ["+trainer.enable_checkpointing=false"]])
def test_without_a_best_val_checkpoint_the_final_weights_are_tested_and_said_so(tmp_path, data_dir, overrides):
    """No best-val checkpoint: only the step checkpoint (a ModelCheckpoint that keeps last.ckpt,
    no best), or no checkpointing at all. test_acc is then the final weights' accuracy."""
    cfg = compose([*FAST, "trainer.max_epochs=2", "data.train_subset=1280", "~callbacks.model_checkpoint",
                   *overrides], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok" and r["best_checkpoint"] == "" and len(r["val_scores"]) == 2
    assert warnings_of(r) == ["test_acc is of the final weights, not of the best-val checkpoint: no best-val "
                             "checkpoint was kept (callbacks.model_checkpoint left out?)"]


def test_max_steps_mid_epoch_counts_one_epoch_and_prints_no_stale_line(tmp_path, data_dir, capsys):
    """max_steps=7 with 5 batches an epoch: epoch 0 whole and validated, epoch 1 stopped after 2
    batches. The epoch line of epoch 1 must not repeat epoch 0's numbers."""
    cfg = compose([*FAST, "trainer.max_epochs=3", "data.train_subset=1280", "+trainer.max_steps=7"], tmp_path)
    train(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert (r["epochs"], len(r["val_scores"]), r["global_step"], len(r["train_losses"])) == (1, 1, 7, 7)
    # the best-val checkpoint (epoch 0) was tested; the run is shorter than its config says
    assert warnings_of(r) == ["stopped early: 1.40 of 3 epochs (7 steps) by trainer.max_steps=7; "
                             "the numbers are of this shorter run"]
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert len(lines) == 2 and "  val loss " in lines[0]
    assert lines[1].startswith("epoch 1/2  stopped after 2 of 5 batches, not validated  ")


def test_fast_dev_run_finishes_and_says_its_numbers_are_no_result(tmp_path, data_dir):
    cfg = compose([*FAST, "callbacks=default", "data.train_subset=1280", "+trainer.fast_dev_run=true"], tmp_path)
    train(cfg)  # it crashed in log_hparams (Lightning's DummyLogger has no file writer)
    r = json.loads((tmp_path / "results.json").read_text())
    assert (r["status"], r["epochs"], r["global_step"]) == ("ok", 1, 1)
    assert r["warnings"][-1].startswith("trainer.fast_dev_run: a smoke test")


@pytest.mark.parametrize("trainer, step, expected", [
    ({"max_epochs": 3}, 15, None),  # all 3 epochs of 5 batches
    ({"max_epochs": 3}, 14, "2.80 of 3 epochs (14 steps) by a callback (early stopping?)"),
    ({"max_epochs": 3, "max_steps": 7}, 7, "1.40 of 3 epochs (7 steps) by trainer.max_steps=7"),
    ({"max_epochs": 3, "max_steps": -1, "max_time": "00:00:01:00"}, 12,
     "2.40 of 3 epochs (12 steps) by trainer.max_time=00:00:01:00"),
    ({"max_epochs": 3, "max_steps": 20, "max_time": {"minutes": 1}}, 10,
     "2.00 of 3 epochs (10 steps) by trainer.max_time={'minutes': 1}"),
    ({"max_epochs": 3, "max_steps": 7}, 6, "1.20 of 3 epochs (6 steps) by a callback (early stopping?)"),
    ({"max_epochs": 3, "max_steps": 15}, 15, None),
    ({"max_epochs": 3, "fast_dev_run": True}, 1, None),  # its own warning says what it is
    ({"max_epochs": 3, "max_steps": 0}, 0, "0.00 of 3 epochs (0 steps) by trainer.max_steps=0"),
])
def test_a_run_that_stopped_before_max_epochs_says_by_what(trainer, step, expected):
    from types import SimpleNamespace

    from src.training import _stopped_early

    cfg = OmegaConf.create({"trainer": trainer})
    said = _stopped_early(cfg, SimpleNamespace(num_training_batches=5, global_step=step, accumulate_grad_batches=1))
    if expected is None:
        assert said is None
    else:
        assert said == f"stopped early: {expected}; the numbers are of this shorter run"
    assert _stopped_early(cfg, SimpleNamespace(num_training_batches=float("inf"), global_step=step, accumulate_grad_batches=1)) is None
    assert _stopped_early(cfg, SimpleNamespace(num_training_batches=0, global_step=step, accumulate_grad_batches=1)) is None


def test_accumulated_batches_are_not_taken_for_an_early_stop():
    """global_step counts optimizer steps: 5 batches an epoch with accumulate_grad_batches=2
    make 3 steps (2 + the remainder), so 6 steps are 2 whole epochs, not 1.2."""
    from types import SimpleNamespace

    from src.training import _stopped_early

    cfg = OmegaConf.create({"trainer": {"max_epochs": 2}})
    assert _stopped_early(cfg, SimpleNamespace(num_training_batches=1, global_step=1, accumulate_grad_batches=1)) == (
        "stopped early: 1.00 of 2 epochs (1 steps) by a callback (early stopping?); the numbers are of this shorter run")
    for accumulate, steps in ((2, 6), (3, 4), (5, 2), (8, 2)):
        trainer = SimpleNamespace(num_training_batches=5, global_step=steps, accumulate_grad_batches=accumulate)
        assert _stopped_early(cfg, trainer) is None, accumulate
        trainer.global_step -= 1
        assert _stopped_early(cfg, trainer).startswith(f"stopped early: {(steps - 1) / (steps / 2):.2f} of 2 epochs")


@pytest.mark.parametrize("trainer, best, val_scores, monitor, expected", [
    ({"fast_dev_run": True}, "", [0.5], "val/acc", "trainer.fast_dev_run: a smoke test of a few batches of "
     "train, val and test, no logger and no best-val checkpoint; its numbers are not a result"),
    ({"limit_val_batches": 0}, "", [], "val/acc", "test_acc is of the final weights, not of the best-val "
     "checkpoint: no validation ran (trainer.limit_val_batches=0)"),
    ({}, "", [0.5], "val/acc", "test_acc is of the final weights, not of the best-val checkpoint: "
     "no best-val checkpoint was kept (callbacks.model_checkpoint left out?)"),
    ({"max_steps": 3}, "", [], "val/acc", "test_acc is of the final weights, not of the best-val checkpoint: "
     "no validation ran (the run stopped before the end of its first epoch)"),
    ({}, "/r/checkpoints/best-epoch=03-val_acc=0.8000.ckpt", [0.5], "val/acc", None),
    ({}, "/r/checkpoints/best-epoch=03-val_acc=0.8000.ckpt", [0.5], "val/loss",
     "test_acc is of the best checkpoint by val/loss (best-epoch=03-val_acc=0.8000.ckpt), not of the best-val-acc one"),
    ({}, "/r/tensorboard/checkpoints/epoch=1-step=10.ckpt", [0.5], None,
     "test_acc is of the last epoch's checkpoint (epoch=1-step=10.ckpt), not of the best-val-acc one"),
])
def test_what_test_acc_is_of_when_not_the_best_val_acc_checkpoint(trainer, best, val_scores, monitor, expected):
    from types import SimpleNamespace

    from src.training import _not_best_val_tested

    cfg = OmegaConf.create({"trainer": {"max_epochs": 3, **trainer}})
    lightning = SimpleNamespace(checkpoint_callback=SimpleNamespace(monitor=monitor))
    assert _not_best_val_tested(cfg, lightning, best, val_scores) == expected


def test_a_test_acc_over_part_of_the_test_split_says_how_much(run):
    """The truth run tests EVAL_BATCHES batches of EVAL_BATCH: its test_acc (checked above against
    an independent accuracy over those images) is over 1024 of the 10,000, and says so."""
    n = EVAL_BATCH * EVAL_BATCHES
    assert f"test_acc is over {n} of the 10000 test images (trainer.limit_test_batches={EVAL_BATCHES}), " \
           "not all of them" in run["results"]["warnings"]
    # and the val scores, and so the best-val checkpoint's choice, over as many val images
    assert f"val_scores are over {n} of the 10000 val images (trainer.limit_val_batches={EVAL_BATCHES}), " \
           "not all of them" in run["results"]["warnings"]


@pytest.mark.parametrize("limit, tested, expected", [
    (0, None, "not tested: trainer.limit_test_batches=0"), (False, None, "not tested: trainer.limit_test_batches=False"),
    (None, 10000, None), (1.0, 10000, None), (0.5, 5000, "test_acc is over 5000 of the 10000 test images "
                                                        "(trainer.limit_test_batches=0.5), not all of them")])
def test_what_a_test_over_part_or_none_of_the_split_says(limit, tested, expected):
    from types import SimpleNamespace

    from src.training import _not_all_tested

    cfg = OmegaConf.create({"trainer": {"limit_test_batches": limit}})
    trainer, data = SimpleNamespace(world_size=1), SimpleNamespace(test_x=torch.zeros(10000, 1))
    module = SimpleNamespace(tested_images=tested or 0)
    assert _not_all_tested(cfg, trainer, module, data, None if tested is None else 0.8, "ok") == expected
    # a run that did not finish, or skipped its test, or a fast_dev_run: said elsewhere
    assert _not_all_tested(cfg, trainer, module, data, None, "interrupted") is None
    skip = OmegaConf.create({"trainer": {"limit_test_batches": limit}, "skip_test": True})
    assert _not_all_tested(skip, trainer, module, data, None, "ok") is None
    smoke = OmegaConf.create({"trainer": {"limit_test_batches": limit, "fast_dev_run": True}})
    assert _not_all_tested(smoke, trainer, module, data, None if tested is None else 0.8, "ok") is None
    # under DDP each rank tests its share of the split: not counted against the whole
    if tested is not None:
        assert _not_all_tested(cfg, SimpleNamespace(world_size=2), module, data, 0.8, "ok") is None
