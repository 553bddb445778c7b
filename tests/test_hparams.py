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


def test_a_single_runs_own_overrides_are_its_columns_and_its_name():
    """`train.py init=normal init.std=0.1 model.act_fn=tanh`: HParams showed init=normal and not the
    std, and the Trial ID was the run dir's time, cut to `2026-11-30_16-...` for every run."""
    from src.hparams import run_name
    from src.training import given_keys

    overrides = ["init=normal", "init.std=0.1", "model.act_fn=tanh", "paths.log_dir=/x", "hydra.run.dir=/y",
                 "print_config=false", "seed=3", "+trainer.limit_train_batches=5", "~callbacks.weight_stats"]
    overrides += ["logger=csv", "trainer.enable_progress_bar=false", "diagnostics.every_n_steps=5", "optim=sgd"]
    keys = given_keys(overrides)  # what it trains, not what it logs or shows
    assert keys == ["init", "init.std", "model.act_fn", "seed", "trainer.limit_train_batches", "optim"]
    assert columns(keys)[:4] == ["init", "init_std", "act_fn", "seed"]
    assert run_name(overrides, keys) == "normal · std=0.1 · act_fn=tanh · seed=3 · limit_train_batches=5 · sgd"
    # a value with "=" in it is the value; a deep key is named by its last part
    assert run_name(["+data.tag=a=b", "model.net.act_fn=tanh"], ["data.tag", "model.net.act_fn"]) == \
        "tag=a=b · act_fn=tanh"


def test_a_run_declares_its_columns_and_real_metrics(tmp_path, data_dir):
    out = tmp_path / "ok"
    train(compose([*FAST, "optim=sgd"], out))
    cols, trial, values, scalars = hparams_records(out / "tensorboard")
    # a single run's columns are what its command line set (FAST's trainer keys have no column but
    # max_epochs and accelerator), then the four every row has; its name: those values, its run dir
    assert cols == ["max_epochs", "accelerator", "optim", "init", "lr", "status"]
    assert trial == ("max_epochs=1 · limit_train_batches=10 · limit_val_batches=2 · limit_test_batches=2 · "
                     "accelerator=cpu · sgd · ok")
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


# ---------------------------------------------------------------------------------------------
# the values and the writer, without training


def _cfg(optim: dict, init: dict, **top):
    from omegaconf import OmegaConf

    return OmegaConf.create({"optim": optim, "init": init, "base_lr": 0.25, "seed": 3,
                             "model": {"act_fn": "tanh", "hidden_sizes": [8, 4]}, "data": {"batch_size": 64},
                             "trainer": {"accelerator": "cpu", "max_epochs": 2}, **top})


def test_hparams_of_every_key_with_its_stand_in_for_not_used():
    from src.hparams import hparams_of

    adam = _cfg({"_target_": "src.optim.Adam", "lr": "${base_lr}", "betas": [0.8, 0.99], "weight_decay": 0.01},
                {"_target_": "src.init.KaimingNormal", "nonlinearity": "relu"})
    assert hparams_of(adam) == {
        "optim": "Adam", "lr": 0.25, "momentum": 0.0, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.01,
        "init": "KaimingNormal", "init_fill": 0.0, "init_std": 0.0, "init_nonlinearity": "relu", "act_fn": "tanh",
        "hidden_sizes": "[8, 4]", "batch_size": 64, "seed": "3", "accelerator": "cpu", "max_epochs": 2}
    sgd = _cfg({"_target_": "src.optim.SGDMomentum", "lr": 0.1, "momentum": 0.9, "weight_decay": None},
               {"_target_": "src.init.Normal", "std": "${base_lr}", "fill": 0.5}, optim_name="sgd_mom",
               init_name="normal")
    values = hparams_of(sgd)
    assert (values["optim"], values["init"], values["momentum"], values["weight_decay"]) == ("sgd_mom", "normal", 0.9, 0.0)
    assert (values["beta1"], values["beta2"], values["init_std"], values["init_fill"]) == (0.0, 0.0, 0.25, 0.5)
    assert values["init_nonlinearity"] == ""
    bare = hparams_of(_cfg({"momentum": None}, {}))
    assert bare["optim"] == "" and bare["init"] == "" and math.isnan(bare["lr"])
    assert bare["momentum"] == bare["weight_decay"] == bare["beta1"] == bare["init_std"] == 0.0
    assert all(type(v) in (str, int, float) for v in bare.values())  # what TensorBoard accepts


def test_columns_of_unknown_keys_and_without_padding_past_five():
    assert columns(["model.foo.bar"]) == ["bar", "optim", "init", "lr", "status"]
    assert columns(["optim.momentum", "data.batch_size"]) == ["momentum", "batch_size", "optim", "init", "lr", "status"]
    assert columns(["optim.betas", "init.std"]) == ["beta1", "init_std", "optim", "init", "lr", "status"]


class _Plain:
    """A logger without TensorBoard's writer (CSV, W&B...), with the Logger API's signatures:
    log_hyperparams(params) takes no metrics (passing them failed every `logger=csv` run)."""

    def __init__(self):
        self.calls = []

    def log_hyperparams(self, params):
        self.calls.append(("hparams", params))

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", metrics, step))


def test_log_hparams_to_loggers_without_tensorboard():
    from src.hparams import hparams_of, log_hparams

    cfg = _cfg({"_target_": "src.optim.SGD", "lr": 0.1}, {"_target_": "src.init.Xavier"})
    first, second = _Plain(), _Plain()
    log_hparams([first, second], cfg, {"status": "ok", "test_acc": 0.5, "best_val_acc": 0.6, "global_step": 9},
                ["optim"], "t")
    expected = [("hparams", {**hparams_of(cfg), "status": "ok"}),
                ("metrics", {"hp/test_acc": 0.5, "hp/best_val_acc": 0.6}, 9)]
    assert first.calls == second.calls == expected
    log_hparams([first], cfg, {"status": "diverged", "test_acc": None, "global_step": 3}, [], "t")
    assert first.calls[2:] == [("hparams", {**hparams_of(cfg), "status": "diverged"})]  # no metrics at all


def test_log_hparams_skips_fast_dev_runs_dummy_logger_and_goes_on():
    """trainer.fast_dev_run puts Lightning's DummyLogger in place of the configured ones: its
    experiment answers every attribute with a no-op, so _get_file_writer() gave None (crash)."""
    from pytorch_lightning.loggers.logger import DummyLogger

    from src.hparams import log_hparams

    cfg = _cfg({"_target_": "src.optim.SGD", "lr": 0.1}, {"_target_": "src.init.Xavier"})
    after = _Plain()
    log_hparams([DummyLogger(), after], cfg, {"status": "ok", "test_acc": 0.5, "global_step": 1}, [], "t")
    assert [c[0] for c in after.calls] == ["hparams", "metrics"]  # the loggers after it still get the row


def test_log_hparams_to_tensorboard_status_and_metrics_at_the_step(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from src.hparams import log_hparams

    cfg = _cfg({"_target_": "src.optim.SGD", "lr": 0.1}, {"_target_": "src.init.Xavier"})
    for status, results, expected in (
            ("ok", {"test_acc": 0.75, "best_val_acc": 0.5, "global_step": 7}, "STATUS_SUCCESS"),
            ("diverged", {"best_val_acc": 0.25, "global_step": 4}, "STATUS_FAILURE")):
        logger = TensorBoardLogger(str(tmp_path / status), name="", version="")
        log_hparams([logger], cfg, {"status": status, **results}, ["optim.lr"], f"trial {status}")
        logger.finalize("success")
        cols, trial, values, scalars = hparams_records(tmp_path / status)
        assert cols == ["lr", "optim", "init", "status", "act_fn"] and trial == f"trial {status}"
        assert values["status"] == status and values["hidden_sizes"] == "[8, 4]"
        ea = EventAccumulator(str(tmp_path / status), size_guidance={"scalars": 0})
        ea.Reload()
        end = HParamsPluginData.FromString(ea.PluginTagToContent("hparams")["_hparams_/session_end_info"])
        assert Status.Name(end.session_end_info.status) == expected
        written = {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
        step = results["global_step"]
        assert written == {f"hp/{k}": [(step, results[k])] for k in ("test_acc", "best_val_acc") if k in results}
