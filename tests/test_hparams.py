"""TensorBoard's HParams row of a run: the swept axes as its columns, real metrics or none."""

from __future__ import annotations

import math

from src.hparams import columns
from src.training import train
from tests.conftest import FAST, compose


def hparams_records(tb_dir):
    """The experiment's columns, the session's group name and values, the metric tags written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    ea.Reload()
    content = ea.PluginTagToContent("hparams")
    exp = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
    return [h.name for h in exp.hparam_infos], start.group_name, values, ea.Tags()["scalars"]


def test_columns_put_the_swept_axes_first_and_pad_to_five():
    assert columns([]) == ["optim", "init", "lr", "status", "act_fn"]
    assert columns(["optim", "init"]) == ["optim", "init", "lr", "status", "act_fn"]
    assert columns(["model.act_fn", "seed"]) == ["act_fn", "seed", "optim", "init", "lr", "status"]
    assert columns(["optim.lr", "optim"]) == ["lr", "optim", "init", "status", "act_fn"]


def test_a_run_declares_its_columns_and_real_metrics(tmp_path, data_dir):
    out = tmp_path / "ok"
    train(compose([*FAST, "optim=sgd"], out))
    cols, trial, values, scalars = hparams_records(out / "tensorboard")
    assert cols == ["optim", "init", "lr", "status", "act_fn"]
    assert trial == "ok"  # a single run is named by its run dir
    assert values["optim"] == "sgd" and values["status"] == "ok" and math.isclose(values["lr"], 0.1)
    assert values["hidden_sizes"] == "[512, 256, 256, 128]"  # every value travels with the run
    assert "hp/test_acc" in scalars and "hp/best_val_acc" in scalars


def test_a_diverged_run_has_no_test_acc_metric(tmp_path, data_dir):
    out = tmp_path / "nan"
    train(compose([*FAST, "optim=sgd", "optim.lr=50"], out))
    _, _, values, scalars = hparams_records(out / "tensorboard")
    assert values["status"] == "diverged"
    assert "hp/test_acc" not in scalars  # absent, never a 0.0 stand-in


def test_trial_name_is_the_swept_values_in_override_order():
    from src.hparams import trial_name

    overrides = ["optim=adam", "+init=kaiming", "seed=3", "data.tag=a=b", "~callbacks.weight_stats"]
    assert trial_name(overrides, ["init", "optim"]) == "adam · kaiming"
    assert trial_name(overrides, ["seed", "data.tag"]) == "3 · a=b"
    assert trial_name(overrides, ["callbacks.weight_stats"]) == ""  # a removal has no value
    assert trial_name(overrides, []) == ""
    assert trial_name([], ["optim"]) == ""
