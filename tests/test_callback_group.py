"""callbacks/group.py: our callbacks handed to Lightning as one, with the same effect."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from callbacks.checkpoint import StepCheckpoint
from callbacks.group import HOOKS, CallbackGroup, each_callback, group_callbacks
from src.training import build_callbacks
from tests.conftest import compose


class Records(pl.Callback):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.log.append((self.name, "on_train_batch_end", batch_idx))

    def setup(self, trainer, pl_module, stage):
        self.log.append((self.name, "setup", stage))


class OnlyFitStart(pl.Callback):
    def __init__(self, log):
        self.log = log

    def on_fit_start(self, trainer, pl_module):
        self.log.append(("fit_start", "on_fit_start", None))


class Stateful(pl.Callback):
    def state_dict(self):
        return {"x": 1}


def test_a_group_forwards_each_hook_to_the_members_that_define_it_in_order():
    log = []
    a, b, c = Records("a", log), OnlyFitStart(log), Records("c", log)
    group = CallbackGroup([a, b, c])
    assert group._by_hook["on_train_batch_end"] == [a, c] and group._by_hook["on_fit_start"] == [b]
    assert group._by_hook["on_validation_start"] == []
    group.setup("trainer", "module", stage="fit")
    group.on_train_batch_end("trainer", "module", None, None, 7)
    group.on_fit_start("trainer", "module")
    group.on_validation_start("trainer", "module")  # nobody defines it: nothing happens
    assert log == [("a", "setup", "fit"), ("c", "setup", "fit"), ("a", "on_train_batch_end", 7),
                   ("c", "on_train_batch_end", 7), ("fit_start", "on_fit_start", None)]
    assert {"on_train_batch_end", "on_exception", "setup", "teardown", "on_save_checkpoint"} <= set(HOOKS)


def test_group_callbacks_leaves_what_lightning_finds_by_type_or_state_alone():
    log = []
    best, bar, stateful = ModelCheckpoint(), TQDMProgressBar(), Stateful()
    a, b = Records("a", log), Records("b", log)
    grouped = group_callbacks([best, a, bar, b, stateful])
    assert grouped[0] is best and grouped[2] is bar and grouped[3] is stateful
    assert isinstance(grouped[1], CallbackGroup) and grouped[1].members == [a, b]
    assert list(each_callback(grouped)) == [best, a, b, bar, stateful]
    assert group_callbacks([best, a]) == [best, a]  # one groupable: nothing to gain
    assert grouped[1].state_key == "CallbackGroup[Records,Records]"


def test_a_run_with_its_callbacks_grouped_writes_what_it_writes_without(tmp_path, data_dir):
    """Every diagnostic on, logging every 5 steps: the same numbers, the same TensorBoard points
    (every tag, step and value) and the same figures either way."""
    from tests.conftest import what_runs_write

    keys = ("status", "val_scores", "train_losses", "train_scores", "test_acc", "warnings")
    grouped, each = what_runs_write(tmp_path, {"grouped": ["group_callbacks=true"],
                                               "each": ["group_callbacks=false"]}, keys).values()
    assert grouped.pop("seconds") > 0 and each.pop("seconds") > 0  # the grouped diagnostics are counted too
    assert grouped == each
    assert len(grouped["scalars"]) + len(grouped["histograms"]) + len(grouped["images"]) > 50
    assert grouped["figures"]


def test_an_inert_step_checkpoint_is_left_out_and_an_active_one_kept(tmp_path):
    # At every_n_train_steps=0 it saves nothing, yet Lightning would call its hooks every step.
    off = build_callbacks(compose([], tmp_path))
    assert not any(isinstance(cb, StepCheckpoint) for cb in off)
    assert [cb.monitor for cb in off if isinstance(cb, ModelCheckpoint)] == ["val/acc"]  # the best one stays
    on = build_callbacks(compose(["checkpoint.every_n_train_steps=3"], tmp_path))
    assert [cb._every_n_train_steps for cb in on if isinstance(cb, StepCheckpoint)] == [3]
