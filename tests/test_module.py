"""src/module.py in-process, on a 4-5-3 MLP and 24 training images: the numbers the module keeps
(per-step losses, the epoch's train and val accuracy, test accuracy) against a plain loop with the
same weights, batches and optimizer; what reaches the loggers at which step; what a checkpoint
carries and when loading one restores it; the config's optimizer settings over a resumed state;
the records of the optimizer and init scheme. test_truth_training.py checks the same numbers
through train() on FashionMNIST (slower)."""

from __future__ import annotations

import copy
import logging
import re
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers.logger import Logger
from torch.utils.data import DataLoader, TensorDataset

from src.init import Normal
from src.model import BaseNetwork
from src.module import ClassifierModule, apply_optim_hparams, describe, target_of
from src.optim import SGD, Adam


class Recorder(Logger):
    """Every metric a logger is given: {name: [(step, value), ...]}."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, list] = {}

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((step, float(v)))


def _net():
    torch.manual_seed(0)
    return BaseNetwork(input_size=4, hidden_sizes=[5], num_classes=3)


def _data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


TRAIN, VAL, TEST = _data(24, 1), _data(12, 2), _data(9, 3)


def loader(data, batch=6):
    return DataLoader(TensorDataset(*data), batch_size=batch)


def plain_loop(epochs=2, lr=0.5):
    """The same training by hand: per-step losses, each epoch's train accuracy (logits before
    each step's update) and val accuracy (after the epoch), then the test accuracy."""
    net = _net()
    opt = SGD(net.parameters(), lr=lr)
    losses, train_acc, val_acc = [], [], []
    for _ in range(epochs):
        correct = 0
        for x, y in loader(TRAIN):
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            losses.append(loss.item())
            correct += (logits.argmax(1) == y).sum().item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_acc.append(correct / 24)
        with torch.no_grad():
            val_acc.append((net(VAL[0]).argmax(1) == VAL[1]).float().mean().item())
    with torch.no_grad():
        test_acc = (net(TEST[0]).argmax(1) == TEST[1]).float().mean().item()
    return losses, train_acc, val_acc, test_acc


def fit(tmp_path, epochs=2, lr=0.5, **kwargs):
    net = _net()
    module = ClassifierModule(net, SGD(net.parameters(), lr=lr), **kwargs)
    recorder = Recorder()
    # log_every_n_steps=1: whatever self.log sends to the loggers arrives at once
    trainer = pl.Trainer(max_epochs=epochs, default_root_dir=tmp_path, logger=recorder, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)
    trainer.fit(module, loader(TRAIN), loader(VAL, 12))
    return module, trainer, recorder


def test_the_numbers_the_module_keeps_equal_a_plain_loop(tmp_path):
    losses, train_acc, val_acc, test_acc = plain_loop()
    module, trainer, recorder = fit(tmp_path)
    assert module.history["train_losses"] == pytest.approx(losses, rel=1e-6, abs=0)
    assert module.history["train_scores"] == pytest.approx(train_acc, abs=1e-7)
    assert module.history["val_scores"] == pytest.approx(val_acc, abs=1e-7)  # no sanity-check entry
    assert module.first_loss() == module.history["train_losses"][0]
    # the loggers: one train/loss point per optimizer step, the epoch's mean loss, the accuracies
    assert recorder.metrics["train/loss"] == [(i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(losses)]
    epoch_loss = [v for _, v in recorder.metrics["train/epoch_loss"]]
    assert epoch_loss == pytest.approx([sum(losses[:4]) / 4, sum(losses[4:]) / 4], rel=1e-6)
    assert [v for _, v in recorder.metrics["train/acc"]] == pytest.approx(train_acc, abs=1e-7)
    assert [v for _, v in recorder.metrics["val/acc"]] == pytest.approx(val_acc, abs=1e-7)
    assert [s for s, _ in recorder.metrics["val/acc"]] == [3, 7]  # after each epoch's last step
    assert "val/loss" in recorder.metrics
    assert sorted(trainer.progress_bar_metrics) == ["train/acc", "train/loss", "val/acc"]
    assert set(module.history) == {"train_losses", "train_scores", "val_scores", "val_losses"}
    assert not module._step_losses and not module._step_outputs  # nothing held after the epoch
    trainer.test(module, loader(TEST, 5), verbose=False)
    assert recorder.metrics["test/acc"][-1][1] == pytest.approx(test_acc, abs=1e-7)
    with torch.no_grad():
        loss = F.cross_entropy(module(TEST[0]), TEST[1]).item()
    assert recorder.metrics["test/loss"][-1][1] == pytest.approx(loss, rel=1e-6)


def test_progress_bar_loss_every_n_steps(tmp_path):
    """The bar's train/loss is set every progress_every_n_steps steps (a self.log call costs ~2 ms)
    and shows that step's loss until the next."""
    shown = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            shown.append(trainer.progress_bar_metrics.get("train/loss"))

    net = _net()
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.5), progress_every_n_steps=3)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, accelerator="cpu", callbacks=[Watch()],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, loader(TRAIN, 3))  # 8 steps: the bar's loss set at steps 0, 3, 6
    losses = module.history["train_losses"]
    assert shown == pytest.approx([losses[0]] * 3 + [losses[3]] * 3 + [losses[6]] * 2, rel=1e-6)
    assert module.progress_every_n_steps == 3 and ClassifierModule(_net()).progress_every_n_steps == 10


def test_losses_without_a_trainer_go_to_history_only():
    module = ClassifierModule(_net(), None, progress_every_n_steps=100)
    assert module.first_loss() is None
    for i in (1, 2):
        module.training_step((TRAIN[0][6 * i:6 * i + 6], TRAIN[1][6 * i:6 * i + 6]), i)  # no progress-bar step
    assert module.first_loss() == pytest.approx(F.cross_entropy(module(TRAIN[0][6:12]), TRAIN[1][6:12]).item())
    module.drain_losses()
    assert len(module.history["train_losses"]) == 2 and not module._step_losses
    module.drain_losses()  # nothing held: nothing added
    assert len(module.history["train_losses"]) == 2


def test_a_mid_epoch_state_dict_holds_the_steps_so_far():
    module = ClassifierModule(_net(), None, progress_every_n_steps=100)
    x, y = TRAIN[0][:12], TRAIN[1][:12]
    module.training_step((x[:6], y[:6]), 1)
    module.training_step((x[6:], y[6:]), 2)
    state = module.state_dict()
    correct = (module(x).argmax(1) == y).sum().item()
    assert state["train_acc.tp"].sum().item() == correct and state["train_acc.fn"].sum().item() == 12 - correct
    assert not module._step_outputs
    module.flush_train_acc()  # nothing held: the counts stay
    assert module.train_acc.tp.sum().item() == correct


def test_no_optimizer_is_an_error_when_training():
    with pytest.raises(RuntimeError, match="^ClassifierModule needs an optimizer to train$"):
        ClassifierModule(_net(), None).configure_optimizers()
    net = _net()
    opt = SGD(net.parameters(), lr=0.1)
    assert ClassifierModule(net, opt).configure_optimizers() is opt


def test_the_init_scheme_runs_and_both_are_recorded():
    net = _net()
    scheme = Normal(std=0.5, generator=torch.Generator().manual_seed(3))
    module = ClassifierModule(net, Adam(net.parameters(), lr=0.01), init_scheme=scheme)
    assert module.net is net and float(net.layers[0].weight.detach().std()) == pytest.approx(0.5, rel=0.5)
    assert module.hparams["model"] == net.config
    assert module.hparams["optim_cfg"] == {"_target_": "src.optim.Adam", "lr": 0.01, "betas": [0.9, 0.999],
                                           "eps": 1e-8, "weight_decay": 0.0, "foreach": None}
    assert module.hparams["init_cfg"] == {"_target_": "src.init.Normal", "std": 0.5}
    assert describe(None) is None and target_of(net) == "src.model.BaseNetwork"
    # three classes; no argument checks on update (each is a host sync on a GPU)
    for metric in (module.train_acc, module.val_acc, module.test_acc):
        assert (metric.num_classes, metric.average, metric.validate_args) == (3, "micro", False)
    bare = ClassifierModule(_net())
    assert bare.hparams["optim_cfg"] is None and bare.hparams["init_cfg"] is None
    assert torch.equal(bare.net.layers[0].weight, _net().layers[0].weight)  # no scheme: untouched


def test_a_checkpoint_carries_history_time_and_rng_and_only_a_fit_restores_them(monkeypatch):
    module = ClassifierModule(_net(), None, progress_every_n_steps=100)
    module.history["val_scores"] = [0.5]
    module.training_step((TRAIN[0][:6], TRAIN[1][:6]), 1)  # held, drained into the checkpoint
    module.seconds_before = 100.0
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["history"]["val_scores"] == [0.5] and len(checkpoint["history"]["train_losses"]) == 1
    assert 100.0 <= checkpoint["seconds_trained"] < 200.0
    assert set(checkpoint["rng_states"]) == {"torch", "cuda", "numpy", "python"}
    checkpoint["history"]["val_scores"].append(0.75)  # a copy, not the module's lists
    assert module.history["val_scores"] == [0.5]

    restored = []
    monkeypatch.setattr("src.module.set_rng_states", restored.append)
    other = ClassifierModule(_net(), None)
    other.on_load_checkpoint(checkpoint)  # no trainer: evaluation only
    other._trainer = SimpleNamespace(state=SimpleNamespace(fn="test"))
    other.on_load_checkpoint(checkpoint)  # trainer.test(ckpt_path=best): neither history nor RNG
    assert other.history["val_scores"] == [] and other.seconds_before == 0.0 and restored == []
    other._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), max_steps=-1)
    other._step_losses.append(torch.tensor(9.0))
    other.on_load_checkpoint(checkpoint)
    assert other.history["val_scores"] == [0.5, 0.75] and other.seconds_before == checkpoint["seconds_trained"]
    assert other._step_losses == [] and other._step_outputs == []
    assert restored == [checkpoint["rng_states"]]
    other.history["val_scores"].append(1.0)
    assert checkpoint["history"]["val_scores"] == [0.5, 0.75]
    restored.clear()
    old = ClassifierModule(_net(), None)  # a checkpoint from before the history was saved
    old._trainer = other._trainer
    old.on_load_checkpoint({"state_dict": {}})
    assert old.history["val_scores"] == [] and restored == []
    old.on_load_checkpoint({"history": {"val_scores": [0.25]}})
    assert old.seconds_before == 0.0 and old.history == {"val_scores": [0.25]}


def test_the_configs_optimizer_settings_win_over_a_resumed_state(caplog):
    net = _net()
    adam = Adam(net.parameters(), lr=0.1)
    sgd = SGD([torch.nn.Parameter(torch.zeros(2))], lr=1)
    sgd.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 3.0})
    changed = apply_optim_hparams([adam, sgd], {"lr": 1, "betas": [0.8, 0.99], "eps": 1e-8, "momentum": 0.9,
                                                "weight_decay": None})
    assert changed == {"lr": (3.0, 1), "betas": ((0.9, 0.999), (0.8, 0.99))}  # the last group that changed
    assert adam.param_groups[0]["lr"] == 1.0 and type(adam.param_groups[0]["lr"]) is float
    assert adam.param_groups[0]["betas"] == (0.8, 0.99) and type(adam.param_groups[0]["betas"]) is tuple
    apply_optim_hparams([adam], {"betas": [1, 0]})
    assert [type(b) for b in adam.param_groups[0]["betas"]] == [float, float]
    assert [g["lr"] for g in sgd.param_groups] == [1, 1.0] and "momentum" not in sgd.param_groups[0]
    assert adam.param_groups[0]["weight_decay"] == 0.0  # None in the config: left as it was
    assert apply_optim_hparams([adam], {"lr": 1.0}) == {}  # nothing to change

    adam = Adam(net.parameters(), lr=0.1)
    module = ClassifierModule(net, adam)
    adam.param_groups[0]["lr"] = 0.5  # as a checkpoint restored it
    module._trainer = SimpleNamespace(optimizers=[adam])
    with caplog.at_level(logging.WARNING, logger="src.module"):
        module.on_train_start()
    assert adam.param_groups[0]["lr"] == 0.1
    assert caplog.messages == ["resume: optim.lr=0.1 applied (the checkpoint had 0.5)"]


def test_the_hook_name_is_set_plainly_and_everything_else_as_a_module():
    module = ClassifierModule(_net(), None)
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step" and "_current_fx_name" in vars(module)
    module.extra = torch.nn.Linear(2, 2)  # still a submodule
    assert "extra" in dict(module.named_children())
    twin = copy.deepcopy(module)
    assert twin._current_fx_name == "training_step"


class StepHooks(pl.Callback):
    """The hooks the diagnostics read around each optimizer step."""

    def __init__(self):
        self.calls = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls.append("before_backward")

    def on_after_backward(self, trainer, pl_module):
        self.calls.append("after_backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls.append("before_optimizer_step")


def _fit_with(tmp_path, manual_step, max_epochs=2, ckpt_path=None, **trainer_kwargs):
    net = _net()
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.5), manual_step=manual_step)
    hooks = StepHooks()
    trainer = pl.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                         callbacks=[hooks], enable_progress_bar=False, enable_model_summary=False,
                         **trainer_kwargs)
    trainer.fit(module, loader(TRAIN), loader(VAL, 12), ckpt_path=ckpt_path)
    return module, trainer, hooks


def test_the_manual_step_gives_lightnings_numbers_hooks_and_step_count(tmp_path):
    """manual_step (the default) makes the step in training_step; Lightning's automatic loop
    (manual_step=false) gives the same losses, accuracies and weights, bit for bit, the same hooks
    in the same order and the same global_step."""
    assert ClassifierModule(_net()).manual_step is True  # the default, as in conf/module/classifier.yaml
    ours, trainer, hooks = _fit_with(tmp_path / "manual", True)
    auto, auto_trainer, auto_hooks = _fit_with(tmp_path / "auto", False)
    assert ours.automatic_optimization is False and auto.automatic_optimization is True
    assert ours.history == auto.history  # exactly, not approximately
    assert all(torch.equal(a, b) for a, b in zip(ours.net.parameters(), auto.net.parameters(), strict=True))
    assert trainer.global_step == auto_trainer.global_step == 8
    assert hooks.calls == auto_hooks.calls == ["before_backward", "after_backward", "before_optimizer_step"] * 8
    losses, *_ = plain_loop()
    assert ours.history["train_losses"] == pytest.approx(losses, rel=1e-6, abs=0)


@pytest.mark.parametrize("setting", [{"gradient_clip_val": 0.01}, {"accumulate_grad_batches": 2}])
def test_clipping_and_accumulation_keep_lightnings_loop(tmp_path, setting):
    """Lightning refuses both under manual optimization; the module then leaves the step to
    Lightning's loop, which does them: clipping changes the weights, accumulation halves the steps."""
    module, trainer, _ = _fit_with(tmp_path / "set", True, **setting)
    plain, _, _ = _fit_with(tmp_path / "plain", True)
    assert module.automatic_optimization is True
    assert trainer.global_step == (4 if "accumulate_grad_batches" in setting else 8)
    assert not torch.equal(next(module.net.parameters()), next(plain.net.parameters()))


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_progress_every_n_steps_must_be_a_whole_number_of_steps(value):
    with pytest.raises(ValueError, match=rf"^Invalid progress_every_n_steps={re.escape(repr(value))}: must be an "
                                         r"integer >= 1$"):  # 0 divided by zero at the first step
        ClassifierModule(_net(), None, progress_every_n_steps=value)


def test_manual_step_must_be_a_bool():
    with pytest.raises(ValueError, match=r"^Invalid manual_step='maybe': must be true or false$"):
        ClassifierModule(_net(), None, manual_step="maybe")


@pytest.mark.parametrize("first, then", [(False, True), (True, False)])
def test_a_run_resumed_in_the_other_mode_continues_its_step_count(tmp_path, first, then):
    """A checkpoint written by Lightning's loop (before manual steps, or with clipping) resumed with
    manual steps, and the other way round: the step count goes on from where it was, so the run
    ends where an uninterrupted one does."""
    _fit_with(tmp_path / "first", first, max_epochs=1)
    last = next((tmp_path / "first").rglob("*.ckpt"))
    resumed, trainer, _ = _fit_with(tmp_path / "resumed", then, max_epochs=2, ckpt_path=str(last))
    whole, whole_trainer, _ = _fit_with(tmp_path / "whole", then, max_epochs=2)
    assert trainer.global_step == whole_trainer.global_step == 8
    assert resumed.history == whole.history
    capped, capped_trainer, _ = _fit_with(tmp_path / "capped", then, max_epochs=3, ckpt_path=str(last), max_steps=6)
    assert capped_trainer.global_step == 6 and len(capped.history["train_losses"]) == 6  # max_steps counts all 6


def test_a_run_with_manual_steps_writes_what_lightnings_loop_writes(tmp_path, data_dir):
    """Through train(), every diagnostic on and logging every 5 steps: module.manual_step=true (the
    default) and false give the same results.json numbers, the same TensorBoard points (every tag,
    step and value) and the same figures."""
    from tests.conftest import what_runs_write

    keys = ("status", "val_scores", "train_losses", "train_scores", "test_acc", "global_step", "warnings")
    ours, lightnings = what_runs_write(tmp_path, {"manual": ["module.manual_step=true"],
                                                  "auto": ["module.manual_step=false"]}, keys).values()
    ours.pop("seconds"), lightnings.pop("seconds")
    assert ours == lightnings
    assert ours["results"]["global_step"] == 20 and len(ours["scalars"]) > 20
    assert ours["histograms"] and ours["images"] and ours["figures"]


def test_the_trainer_gets_a_profiler_that_costs_nothing_unless_one_is_asked_for(tmp_path, data_dir):
    """Lightning enters its profiler's profile(name) around every hook, ~30 a step; the default
    PassThroughProfiler's is a generator context manager. NoProfiler hands out one nullcontext."""
    import contextlib

    from pytorch_lightning.profilers import SimpleProfiler

    from src.training import NoProfiler, train
    from tests.conftest import compose

    assert isinstance(NoProfiler().profile("a"), contextlib.nullcontext)
    assert NoProfiler().profile("a") is NoProfiler().profile("b")
    seen = {}

    class Look(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen[len(seen)] = type(trainer.profiler)

    import tests.test_module as me  # the copy Hydra instantiates the callback from

    me.LOOK = Look()
    for extra in ([], ["trainer.profiler=simple"]):
        train(compose(["trainer.max_epochs=1", "trainer.accelerator=cpu", "data.train_subset=512", "skip_test=true",
                       "trainer.limit_val_batches=1", "+callbacks._look._target_=tests.test_module.look", *extra],
                      tmp_path / str(len(seen))))
    assert seen == {0: NoProfiler, 1: SimpleProfiler}


LOOK = None


def look():
    return LOOK


@pytest.mark.parametrize("max_epochs, max_steps, first_epochs", [(3, 10, 1), (3, 10, 2), (3, 100, 1), (4, 13, 2)])
def test_max_steps_resumed_from_an_epochs_end_trains_on_from_the_next_epoch(tmp_path, max_epochs, max_steps,
                                                                           first_epochs):
    """4 steps an epoch; the first run stops at its max_epochs, its checkpoint written after that
    epoch's validation. Lightning alone (resuming "iteration-based") stopped these at 8, 8, 8 and
    12 steps; the resumed runs must equal the uninterrupted ones, weights included."""
    whole, whole_trainer, _ = _fit_with(tmp_path / "whole", True, max_epochs=max_epochs, max_steps=max_steps)
    _fit_with(tmp_path / "first", True, max_epochs=first_epochs, max_steps=max_steps)
    last = next((tmp_path / "first").rglob("*.ckpt"))
    resumed, trainer, _ = _fit_with(tmp_path / "resumed", True, max_epochs=max_epochs, max_steps=max_steps,
                                    ckpt_path=str(last))
    assert trainer.global_step == whole_trainer.global_step == min(max_steps, 4 * max_epochs)
    assert resumed.history == whole.history
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), whole.parameters(), strict=True))


def test_the_epoch_end_repair_runs_only_under_max_steps():
    """Without max_steps Lightning's own resume starts the next epoch right: it is left alone."""
    from tests.test_checkpointing import loop_records

    for max_steps, changed in ((-1, False), (12, True)):
        module = ClassifierModule(_net(), None)
        module._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), max_steps=max_steps)
        loaded = loop_records(1, 0, True)
        module.on_load_checkpoint(loaded)
        assert (loaded != loop_records(1, 0, True)) is changed


class BatchLosses(pl.Callback):
    """Each batch's loss, as the module holds it (callbacks' batch-end hooks come first)."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(pl_module._step_losses[-1]))


class PointsLogger(pl.loggers.Logger):
    """Every (tag, step, value) a logger is given."""

    name, version = "points", 0

    def __init__(self):
        super().__init__()
        self.points = []

    def log_metrics(self, metrics, step=None):
        self.points += [(k, step, v) for k, v in metrics.items()]

    def log_hyperparams(self, params, *args, **kwargs):
        pass


@pytest.mark.parametrize("k", [3, 2])
def test_accumulated_batches_give_one_loss_per_optimizer_step(tmp_path, k):
    """accumulate_grad_batches=3 over 4 batches an epoch: Lightning steps after batches 3 and 4,
    so each epoch has 2 optimizer steps (k=2: after batches 2 and 4). train_losses, "losses per step", holds their 2 losses (the
    mean of each step's batches), and the train/loss curve puts them at the steps' x, where the
    other scalars are; the epoch loss is the mean of the epoch's steps."""
    from src.module import mean_per_step

    assert mean_per_step([1.0, 2.0, 3.0, 5.0, 7.0], [0, 0, 0, 1, 2]) == [2.0, 5.0, 7.0]
    assert mean_per_step([], []) == []
    net = _net()
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.5))
    batches, points = BatchLosses(), PointsLogger()
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=points, accelerator="cpu",
                         callbacks=[batches], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accumulate_grad_batches=k, log_every_n_steps=1)
    trainer.fit(module, loader(TRAIN), loader(VAL, 12))
    b = batches.losses
    assert len(b) == 8 and trainer.global_step == 4
    steps = [(0, 3), (3, 4), (4, 7), (7, 8)] if k == 3 else [(0, 2), (2, 4), (4, 6), (6, 8)]
    expected = [sum(b[i:j]) / (j - i) for i, j in steps]
    assert module.history["train_losses"] == pytest.approx(expected, rel=1e-12)
    assert [(s, v) for tag, s, v in points.points if tag == "train/loss"] == [
        (i, pytest.approx(v, rel=1e-12)) for i, v in enumerate(expected)]
    epoch_loss = [v for tag, _, v in points.points if tag == "train/epoch_loss"]
    assert epoch_loss == pytest.approx([sum(expected[:2]) / 2, sum(expected[2:]) / 2], rel=1e-6)


def test_each_epochs_seconds_and_the_tested_images_are_counted(tmp_path):
    """results.json's timing.epoch_seconds (one per epoch, each inside the fit's wall time) and
    the number of images test_acc is over (a second test pass counts afresh)."""
    import time

    started = time.perf_counter()
    module, trainer, _ = _fit_with(tmp_path, True)
    wall = time.perf_counter() - started
    assert len(module.epoch_seconds) == 2 and all(0 < s < wall for s in module.epoch_seconds)
    assert sum(module.epoch_seconds) < wall
    for _ in range(2):
        trainer.test(module, loader(TEST, 4), verbose=False)
        assert module.tested_images == len(TEST[0]) == 9


def test_a_progress_bar_loss_every_step_is_allowed():
    assert ClassifierModule(_net(), None, progress_every_n_steps=1).progress_every_n_steps == 1


def test_a_checkpoint_says_how_many_batches_an_epoch_has():
    """landscape.py reads `batches_per_epoch` to place a mid-epoch checkpoint of the first epoch;
    it is written only when the trainer knows a finite, non-zero count."""
    for batches, expected in ((4, 4), (1, 1), (0, None), (float("inf"), None)):
        module = ClassifierModule(_net(), None)
        module._trainer = SimpleNamespace(num_training_batches=batches)
        checkpoint = {}
        module.on_save_checkpoint(checkpoint)
        assert checkpoint.get("batches_per_epoch") == expected and type(checkpoint.get("batches_per_epoch")) is (
            int if expected else type(None))
    checkpoint = {}
    ClassifierModule(_net(), None).on_save_checkpoint(checkpoint)  # no trainer
    assert "batches_per_epoch" not in checkpoint


def test_resuming_a_cut_and_validated_epoch_leaves_a_note_for_results_json():
    """A checkpoint of an epoch cut (max_time) and validated as it stood: the resume says so, once;
    any other checkpoint adds no note."""
    from tests.test_checkpointing import _cut, loop_records

    module = ClassifierModule(_net(), None)
    module._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), max_steps=-1)
    module.on_load_checkpoint(loop_records(1, 0, False))
    module.on_load_checkpoint(_cut(2, 2))  # epoch 1 cut after 2 batches, its val score there
    assert module.resume_notes == [
        "epoch 1 was cut after 2 batches (trainer.max_time, or a callback) and validated as it stood; the resumed "
        "run goes on from the next epoch, and the cut epoch's other batches are not trained"]


def test_a_run_that_never_validated_says_nothing_about_val_images():
    """results.json's "val_scores are over N of the M val images" is for a validation cut short, not
    for a run stopped (or set up) before any validation."""
    from omegaconf import OmegaConf

    from src.training import _not_all_validated

    cfg = OmegaConf.create({"trainer": {"limit_val_batches": 0}})
    datamodule = SimpleNamespace(val_x=torch.zeros(12, 4))
    assert _not_all_validated(cfg, SimpleNamespace(world_size=1), ClassifierModule(_net(), None), datamodule) is None


def test_the_epoch_resumed_mid_way_is_timed(tmp_path):
    """Lightning calls no on_train_epoch_start for the epoch a run resumes in the middle of: that
    epoch's seconds in the resumed process are still one of timing.epoch_seconds."""
    from callbacks.checkpoint import StepCheckpoint

    def run(max_epochs, ckpt_path=None):
        net = _net()
        module = ClassifierModule(net, SGD(net.parameters(), lr=0.5))
        trainer = pl.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                             callbacks=[StepCheckpoint(str(tmp_path / "ckpt"), every_n_train_steps=2)],
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, loader(TRAIN), ckpt_path=ckpt_path)
        return module, trainer

    run(1)  # 4 steps an epoch: last.ckpt at step 2, mid-epoch (not at 4, the epoch's last batch)
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 2
    module, trainer = run(2, str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.global_step == 8 and len(module.epoch_seconds) == 2 and all(s > 0 for s in module.epoch_seconds)


def test_every_epoch_value_is_reduced_across_ranks_under_ddp(tmp_path, monkeypatch):
    """Under DDP the epoch values (train/acc, train/epoch_loss, val/loss, val/acc, test/loss,
    test/acc) are logged with sync_dist, so Lightning reduces them over the ranks (the accuracies,
    synced by torchmetrics already, say so). Lightning warns for each one logged without it; here
    in one process, a real gloo group of one (test_ddp.py runs two, but slowly)."""
    import warnings

    from pytorch_lightning.trainer.connectors.logger_connector import result

    from tests.conftest import free_port

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "1", "RANK": "0",
                       "LOCAL_RANK": "0", "NODE_RANK": "0"}.items():
        monkeypatch.setenv(key, value)  # set back after the test, whatever Lightning sets
    result.warning_cache.clear()  # it warns once per process
    net = _net()
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.5))
    recorder = Recorder()
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=recorder, accelerator="cpu", strategy="ddp",
                         devices=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(module, loader(TRAIN), loader(VAL, 12))
            trainer.test(module, loader(TEST, 5), verbose=False)
        assert torch.distributed.is_initialized() and trainer.world_size == 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert {"train/acc", "train/epoch_loss", "val/loss", "val/acc", "test/loss", "test/acc"} <= set(recorder.metrics)
    assert [str(w.message) for w in caught if "sync_dist=True" in str(w.message)] == []


def test_the_val_images_are_those_of_the_last_validation(tmp_path):
    """validated_images, what val_scores are over: the images of each validation (5 + 5 of the 12
    at limit_val_batches=2), counted afresh each time (the sanity check's and each epoch's), and
    results.json's warning that says so."""
    from omegaconf import OmegaConf

    from src.training import _not_all_validated

    counts = []

    class Count(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            counts.append(pl_module.validated_images)

    net = _net()
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.5))
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, accelerator="cpu", callbacks=[Count()],
                         limit_val_batches=2, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, loader(TRAIN), loader(VAL, 5))
    assert counts == [10, 10, 10]  # the sanity check's 2 batches, then each epoch's
    cfg = OmegaConf.create({"trainer": {"limit_val_batches": 2}})
    assert _not_all_validated(cfg, trainer, module, SimpleNamespace(val_x=VAL[0])) == (
        "val_scores are over 10 of the 12 val images (trainer.limit_val_batches=2), not all of them")
