"""Divergence by a non-finite *parameter* while every loss so far was finite.

A loss is computed before the optimizer step, so an update that writes NaN into the weights is
seen by the loss check only one step later. The detector checks the parameters themselves
before validation (else a NaN model is validated and saved as "best") and before a checkpoint
is written (else last.ckpt holds NaN weights). Here an optimizer writes NaN into one weight in
its k-th step, with a finite loss for that step, and each of those two checks must stop the run
at step k.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.optim import SGD
from src.training import train
from tests.conftest import compose

STEPS_PER_EPOCH = 10
BASE = ["trainer.max_epochs=2", f"trainer.limit_train_batches={STEPS_PER_EPOCH}", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "data.train_subset=2560", "trainer.accelerator=cpu", "callbacks=none",
        "print_config=false", "optim=sgd", "optim.lr=0.05"]


class NaNAfterStep(SGD):
    """SGD whose `nan_at_step`-th step (1-based) leaves one weight NaN; the loss of that step,
    computed before the update, is finite."""

    def __init__(self, params, nan_at_step: int, **kwargs):
        super().__init__(params, **kwargs)
        self.nan_at_step, self.steps = nan_at_step, 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        self.steps += 1
        if self.steps == self.nan_at_step:
            self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return loss


def run_with_nan_at(tmp_path, step: int, extra: list[str]):
    cfg = compose([*BASE, *extra], tmp_path)
    with open_dict(cfg):
        cfg.optim = OmegaConf.create({"_target_": f"{__name__}.NaNAfterStep", "_partial_": True,
                                      "nan_at_step": step, "lr": 0.05})
    returned = train(cfg)
    return returned, json.loads((tmp_path / "results.json").read_text())


def saved_weights_are_finite(out) -> bool:
    for path in (out / "checkpoints").glob("*.ckpt") if (out / "checkpoints").exists() else []:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()):
            return False
    return True


def assert_stopped_by_the_parameter_check(returned, r, out, step: int, stderr: str):
    assert returned is None
    # one line on stderr says so, the same words as results.json
    assert [line for line in stderr.splitlines() if line.startswith("diverged: ")] == [f"diverged: {r['error']}"]
    assert r["status"] == "diverged", r.get("status")
    assert r["diverged_step"] == step and r["global_step"] == step
    assert r["diverged_epoch"] == (step - 1) // STEPS_PER_EPOCH
    assert r["error"].startswith(f"the parameters became NaN/inf at step {step} (epoch {(step - 1) // STEPS_PER_EPOCH})")
    # every loss was finite (null in JSON would mean NaN): it was the weights, not the loss
    assert len(r["train_losses"]) == step and all(x is not None for x in r["train_losses"])
    assert r["test_acc"] is None
    assert saved_weights_are_finite(out)


def test_nan_weights_after_the_last_step_of_an_epoch_stop_before_validation(tmp_path, data_dir, capsys):
    returned, r = run_with_nan_at(tmp_path, STEPS_PER_EPOCH, [])
    assert_stopped_by_the_parameter_check(returned, r, tmp_path, STEPS_PER_EPOCH, capsys.readouterr().err)
    assert r["val_scores"] == [] and r["epochs"] == 0  # the NaN model was never validated
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_nan_weights_on_a_checkpoint_step_stop_before_the_checkpoint(tmp_path, data_dir, capsys):
    # every 4 steps: steps 4 and 8 write last.ckpt (finite), step 8's update is the NaN one
    returned, r = run_with_nan_at(tmp_path, 8, ["checkpoint.every_n_train_steps=4"])
    assert_stopped_by_the_parameter_check(returned, r, tmp_path, 8, capsys.readouterr().err)
    # no epoch finished: nothing to call best
    assert (r["val_scores"], r["epochs"], r["best_val_epoch"], r["best_val_acc"]) == ([], 0, -1, None)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # the step-4 checkpoint stands; no step-8 one with NaN


CHANCE_10 = math.log(10)  # 2.302...: the loss of a uniform guess over 10 classes


@pytest.mark.parametrize("optim_cfg, init_cfg, first_loss, expected", [
    ({"lr": 0.1}, {"_target_": "src.init.Normal", "std": 10.0}, 1e3,
     "the init (normal, init.std=10) is probably too wide (the first loss was 1e+03, chance is 2.3), "
     "or optim.lr=0.1 too high"),
    ({"lr": 50.0}, {"_target_": "src.init.Kaiming"}, 2.0,
     "optim.lr=50 is probably too high, or the init (kaiming) too wide"),
    ({"lr": 2}, {"_target_": "src.init.Normal", "std": 3}, 2.0,  # integers, as a config may give them
     "optim.lr=2 is probably too high, or the init (normal, init.std=3) too wide"),
    ({"lr": 1e-05}, {"_target_": "src.init.Const", "fill": 0.5}, float("nan"),
     "the init (const, init.fill=0.5) is probably too wide (the first loss was already nan), "
     "or optim.lr=1e-05 too high"),
    ({}, {"_target_": "my.Init", "std": 2.0, "fill": 0.25, "gain": 3.0}, None,
     "the init (init, init.std=2, init.fill=0.25, init.gain=3) is probably too wide (the first loss was "
     "already None), or the learning rate too high"),
    # the threshold: more than 10 x chance blames the init first; 10 x chance itself does not
    ({"lr": 0.1}, {}, 10 * CHANCE_10, "optim.lr=0.1 is probably too high, or the init (the init) too wide"),
    ({"lr": 0.1}, {}, 24.0,
     "the init (the init) is probably too wide (the first loss was 24, chance is 2.3), or optim.lr=0.1 too high"),
])
def test_probable_cause_wording(optim_cfg, init_cfg, first_loss, expected):
    from callbacks.divergence import probable_cause

    assert probable_cause(optim_cfg, init_cfg, first_loss) == expected


FP16_EPS = ("optim.eps=1e-08 is 0 in float16, the weights' and optimizer state's type under trainer.precision=16-true, "
            "so the step of a zero gradient is 0 / 0; try trainer.precision=16-mixed (float32 weights), or optim.eps=1e-4")
LR = "optim.lr=0.001 is probably too high, or the init (kaiming) too wide"


@pytest.mark.parametrize("eps, dtype, expected", [
    (1e-8, torch.float16, FP16_EPS),
    (2e-8, torch.float16, FP16_EPS.replace("1e-08", "2e-08")),  # below half of float16's smallest step
    (1e-4, torch.float16, LR),  # representable: the usual guess
    (1e-8, torch.bfloat16, LR),  # bfloat16 has float32's range: 1e-8 is not 0 there
    (1e-8, torch.float32, LR), (0.0, torch.float16, LR), (None, torch.float16, LR)])
def test_float16_weights_blame_an_eps_that_is_zero_there(eps, dtype, expected):
    from callbacks.divergence import probable_cause

    optim_cfg = {"lr": 1e-3, **({} if eps is None else {"eps": eps})}
    assert probable_cause(optim_cfg, {"_target_": "src.init.Kaiming"}, 2.3, weights_dtype=dtype) == expected


# --- the detector's message and checks, called as Lightning calls them (no training) ---------

def _module(history_losses: list[float], pending: list[float], num_classes: int = 10):
    from src.init import Normal
    from src.model import BaseNetwork
    from src.module import ClassifierModule

    network = BaseNetwork(act_fn="relu", input_size=4, num_classes=num_classes, hidden_sizes=[3])
    module = ClassifierModule(network, optimizer=SGD(network.parameters(), lr=0.1), init_scheme=Normal(std=10))
    module.history["train_losses"] = list(history_losses)
    module._step_losses = [torch.tensor(v) for v in pending]
    return module


def _trainer():
    from types import SimpleNamespace

    return SimpleNamespace(global_step=7, current_epoch=1, should_stop=False, training=True,
                           sanity_checking=False, state=SimpleNamespace(fn="fit"))


WIDE = "the init (normal, init.std=10) is probably too wide"


@pytest.mark.parametrize("history_losses, pending, classes, cause", [
    ([500.0, 2.0], [1.0], 10, f"{WIDE} (the first loss was 500, chance is 2.3), or optim.lr=0.1 too high"),
    ([2.0, 500.0], [900.0], 10, "optim.lr=0.1 is probably too high, or the init (normal, init.std=10) too wide"),
    ([], [400.0, 1.0], 10, f"{WIDE} (the first loss was 400, chance is 2.3), or optim.lr=0.1 too high"),
    ([], [], 10, f"{WIDE} (the first loss was already None), or optim.lr=0.1 too high"),
    # chance is ln(classes): 15 is far above it for 3 classes (1.1), not for 10 (2.3)
    ([15.0], [], 3, f"{WIDE} (the first loss was 15, chance is 1.1), or optim.lr=0.1 too high"),
    ([15.0], [], 10, "optim.lr=0.1 is probably too high, or the init (normal, init.std=10) too wide"),
])
def test_the_message_judges_by_the_runs_first_loss(history_losses, pending, classes, cause):
    """The first loss of the run: the first finished epoch's, else the current epoch's first step."""
    from callbacks.divergence import Diverged, DivergenceDetector

    detector, trainer = DivergenceDetector(), _trainer()
    assert detector.diverged is None
    with pytest.raises(Diverged) as e:
        detector.on_train_batch_end(trainer, _module(history_losses, pending, classes), torch.tensor(float("nan")),
                                    None, 0)
    assert str(e.value) == f"loss became nan at step 7 (epoch 1): {cause}"
    assert (e.value.step, e.value.epoch, e.value.what) == (7, 1, "loss became nan")
    assert detector.diverged is e.value and trainer.should_stop


def test_a_module_without_loss_history_still_gets_a_message():
    from callbacks.divergence import Diverged, DivergenceDetector

    class Bare(torch.nn.Module):  # any LightningModule: no history, no pending losses, no hparams
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

    with pytest.raises(Diverged, match=r"^loss became inf at step 7 \(epoch 1\): the init \(the init\) is "
                                       r"probably too wide \(the first loss was already None\), or the "
                                       r"learning rate too high$"):
        DivergenceDetector().on_train_batch_end(_trainer(), Bare(), {"loss": torch.tensor(float("inf"))}, None, 0)


def test_nan_weights_are_checked_on_checkpoint_steps_only():
    """Between step-checkpoint steps a NaN weight is left to the next step's loss check (checking
    every step costs ~5 % of an epoch); without step checkpoints, no step is a checkpoint step."""
    from callbacks.divergence import Diverged, DivergenceDetector

    module = _module([2.0], [])
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] = float("nan")
    finite_loss = torch.tensor(1.5)
    DivergenceDetector().on_train_batch_end(_trainer(), module, finite_loss, None, 0)  # default: no step check
    for every in (0, 5, None):  # step 7: not a multiple of 5
        DivergenceDetector(check_params_every_n_steps=every).on_train_batch_end(_trainer(), module, finite_loss,
                                                                               None, 0)
    with pytest.raises(Diverged, match=r"^the parameters became NaN/inf at step 7 \(epoch 1\)"):
        DivergenceDetector(check_params_every_n_steps=7).on_train_batch_end(_trainer(), module, finite_loss, None, 0)


def test_loss_checks_every_n_steps_name_the_first_bad_step():
    """check_every_n_steps=3: a NaN loss at step 7 is read at step 9 and named as step 7; 1 is
    accepted, 0 is one clear error."""
    from callbacks.divergence import Diverged, DivergenceDetector

    DivergenceDetector(check_every_n_steps=1)
    with pytest.raises(ValueError, match=r"^check_every_n_steps=0 must be an integer >= 1, or null "
                                         r"\(1 on a CPU, 50 on a GPU\)$"):
        DivergenceDetector(check_every_n_steps=0)
    detector, module, trainer = DivergenceDetector(check_every_n_steps=3), _module([2.0], []), _trainer()
    for step, loss in ((7, float("nan")), (8, 1.0)):
        trainer.global_step = step
        detector.on_train_batch_end(trainer, module, torch.tensor(loss), None, 0)  # not read yet
    trainer.global_step = 9
    with pytest.raises(Diverged, match=r"^loss became nan at step 7 \(epoch 1\)"):
        detector.on_train_batch_end(trainer, module, torch.tensor(1.0), None, 0)


def test_anomaly_detection_ends_the_run_as_the_divergence_it_found(tmp_path):
    """`trainer.detect_anomaly=true` raises a RuntimeError in the backward of the first NaN loss,
    before the detector reads it: the run must still end `diverged` at that step, with the
    epochs before it, not `failed` with its history lost. One step fewer was taken."""
    plain = run_with_nan_at(tmp_path / "plain", 13, [])
    anomaly = run_with_nan_at(tmp_path / "anomaly", 13, ["+trainer.detect_anomaly=true"])
    for returned, r in (plain, anomaly):
        assert returned is None and r["status"] == "diverged"
        assert (r["diverged_step"], r["diverged_epoch"], r["epochs"]) == (14, 1, 1)
        assert len(r["train_losses"]) == 14 and r["train_losses"][-1] is None  # NaN, written as null
    assert anomaly[1]["val_scores"] == plain[1]["val_scores"]
    assert (plain[1]["global_step"], anomaly[1]["global_step"]) == (14, 13)
    assert plain[1]["error"].startswith("loss became nan at step 14 (epoch 1): optim.lr=0.05 is probably too high")
    assert anomaly[1]["error"].startswith("a gradient became nan (LogSoftmaxBackward0, anomaly detection) at "
                                          "step 14 (epoch 1): optim.lr=0.05 is probably too high")


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory"), ValueError("Function 'X' returned nan values "
                                                                                   "in its 0th output.")])
def test_other_errors_are_not_divergences(error):
    from callbacks.divergence import anomaly_divergence

    assert anomaly_divergence(error, None, None) is None


def test_a_divergence_names_eps_when_the_modules_weights_are_float16():
    """What the detector says is judged by the module's own weights: float16 (16-true) with
    eps=1e-8 blames eps, the same module in float32 the learning rate."""
    from types import SimpleNamespace

    from callbacks.divergence import divergence

    def module(dtype):
        return SimpleNamespace(hparams={"optim_cfg": {"lr": 1e-3, "eps": 1e-8}, "init_cfg": {"_target_": "src.init.Kaiming"}},
                               net=SimpleNamespace(config={"num_classes": 10}), first_loss=lambda: 2.3,
                               parameters=lambda: iter([torch.zeros(2, dtype=dtype)]))

    trainer = SimpleNamespace(global_step=5, current_epoch=0)
    d = divergence(trainer, module(torch.float16), "loss became nan")
    assert (str(d), d.step, d.epoch) == (f"loss became nan at step 5 (epoch 0): {FP16_EPS}", 5, 0)
    assert str(divergence(trainer, module(torch.float32), "loss became nan", step=3)) == \
        f"loss became nan at step 3 (epoch 0): {LR}"
