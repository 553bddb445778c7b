"""train()'s first half, in-process and without training: what no constructor checks (seed,
epochs, the machine, ddp in a multirun, interpolations), building the module, callbacks and
loggers from the config, and how a multirun started again continues its jobs; and the end block
a run prints. Fast: the mutation tests run this file (scripts/mutants.py training_setup).
"""

from __future__ import annotations

import json
import re

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from src import cli
from src.checkpointing import AtomicCheckpointIO, checkpoint_stamp
from src.errors import ConfigError
from src.provenance import config_hash
from src.training import (
    build_callbacks,
    build_loggers,
    build_module,
    changes_on_resume,
    check_run_settings,
    config_changes,
    continue_sweep_job,
    first_try,
)
from tests.conftest import FAST, compose


def settings(**trainer) -> dict:
    return {"seed": 1, "trainer": {"max_epochs": 1, "accelerator": "cpu", **trainer}}


def check(config: dict) -> None:
    check_run_settings(OmegaConf.create(config))


# ---------------------------------------------------------------------------------------------
# check_run_settings


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1])
def test_seeds_that_are_accepted(seed):
    check({**settings(), "seed": seed})


@pytest.mark.parametrize("seed, shown", [(-1, "-1"), (2**32, "4294967296"), (True, "True"), (1.5, "1.5"),
                                         ("abc", "'abc'")])
def test_seeds_that_are_refused(seed, shown):
    with pytest.raises(ConfigError) as e:
        check({**settings(), "seed": seed})
    assert str(e.value) == f"seed={shown} must be an integer in [0, 2**32 - 1]"


@pytest.mark.parametrize("epochs, shown", [(0, "0"), (-1, "-1"), (True, "True"), (1.5, "1.5"), ("3", "'3'")])
def test_epochs_that_are_refused(epochs, shown):
    with pytest.raises(ConfigError) as e:
        check(settings(max_epochs=epochs))
    assert str(e.value) == f"trainer.max_epochs={shown} must be an integer >= 1"


@pytest.mark.parametrize("key, value, shown, accepted", [
    ("check_val_every_n_epoch", 2, "2", "1"), ("check_val_every_n_epoch", 1.0, "1.0", "1"),
    ("check_val_every_n_epoch", True, "True", "1"), ("check_val_every_n_epoch", 0, "0", "1"),
    ("val_check_interval", 0.5, "0.5", "1.0"), ("val_check_interval", 1, "1", "1.0"),
    ("val_check_interval", 100, "100", "1.0"), ("val_check_interval", "1.0", "'1.0'", "1.0")])
def test_validating_other_than_once_after_every_epoch_is_refused(key, value, shown, accepted):
    with pytest.raises(ConfigError) as e:
        check(settings(**{key: value}))
    assert str(e.value) == (f"trainer.{key}={shown}: this app validates once after every epoch (results.json's "
                            f"val_scores and best_val_epoch count epochs); accepted: {accepted}, or leave it "
                            "out; to validate on fewer images, trainer.limit_val_batches=N")


def test_validating_once_after_every_epoch_said_outright_is_fine():
    check(settings(check_val_every_n_epoch=1, val_check_interval=1.0))
    check(settings(check_val_every_n_epoch=None, val_check_interval=None))


@pytest.mark.parametrize("value, shown", [(0, "0"), (0.0, "0.0"), (False, "False")])
def test_training_on_no_batch_is_refused(value, shown):
    """Lightning would skip training and the run report the initial weights' test accuracy as its
    result (`ok`, 0 epochs, 14.53 % here)."""
    with pytest.raises(ConfigError) as e:
        check(settings(limit_train_batches=value))
    assert str(e.value) == (f"trainer.limit_train_batches={shown} trains nothing; accepted: a number of batches "
                            ">= 1 or a fraction of the epoch in (0, 1], or leave it out; to test a trained run "
                            "again: python eval.py ckpt_path=<run dir>")


@pytest.mark.parametrize("value", [None, 1, 0.5, 1.0, True])
def test_training_on_some_batches_is_fine(value):
    check(settings(limit_train_batches=value))  # True: Lightning reads it as 1 batch


@pytest.mark.parametrize("value, shown", [(0, "0"), (2.5, "2.5"), (-2, "-2"), (True, "True"), ("10", "'10'")])
def test_max_steps_that_train_nothing_or_no_whole_step_are_refused(value, shown):
    """Lightning takes 0 (trains nothing: `ok`, the initial weights tested) and 2.5 (3 steps)."""
    with pytest.raises(ConfigError) as e:
        check(settings(max_steps=value))
    assert str(e.value) == (f"trainer.max_steps={shown}: accepted: a whole number of optimizer steps >= 1, "
                            "or -1 (no limit: trainer.max_epochs decides); 0 would train nothing")


@pytest.mark.parametrize("value", [-1, 1, 20, None])
def test_max_steps_of_a_whole_number_or_no_limit_are_fine(value):
    check(settings(max_steps=value))


@pytest.mark.parametrize("value, shown", [("00:00:00:00", "00:00:00:00"), (" 0:0:0:0", " 0:0:0:0"),
                                          ({"seconds": 0}, "{'seconds': 0}"),
                                          ({"days": 0, "minutes": 0}, "{'days': 0, 'minutes': 0}")])
def test_a_max_time_of_zero_is_refused(value, shown):
    with pytest.raises(ConfigError) as e:
        check(settings(max_time=value))
    assert str(e.value) == (f"trainer.max_time={shown} trains nothing; accepted: a duration above zero as "
                            "DD:HH:MM:SS (00:02:00:00 for two hours), or leave it out")


def test_a_max_time_given_as_a_dict_reaches_lightning_as_one(tmp_path, data_dir):
    """Lightning reads a dict max_time as timedelta's arguments; as a DictConfig (Hydra's way
    of passing it) the Trainer crashed: `Missing key total_seconds`."""
    from src.training import train

    train(compose([*FAST, "+trainer.max_time={minutes: 10}"], tmp_path))
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "ok" and r["config"]["trainer"]["max_time"] == {"minutes": 10}


@pytest.mark.parametrize("value", ["00:00:00:01", "00:02:00:00", {"minutes": 1}, None,
                                   "soon", "1:2", {"fortnights": 0}])  # the last three: Lightning's to refuse
def test_a_max_time_above_zero_or_not_a_duration_is_ours_to_pass(value):
    check(settings(max_time=value))


@pytest.mark.parametrize("value, expected", [("00:00:00:05", 5), ("01:02:03:04", 93784), ({"hours": 1}, 3600),
                                             ("00:00:00", None), ("a:b:c:d", None), ({"fortnights": 1}, None),
                                             (5, None)])
def test_duration_seconds_reads_max_time_as_lightning_does(value, expected):
    from src.training import duration_seconds

    assert duration_seconds(value) == expected


@pytest.mark.parametrize("top, trainer, message", [
    # each ran on, read as nobody meant, or crashed mid-run
    ({"skip_test": "abc"}, {}, "skip_test='abc' must be true or false"),
    ({"optimized_metric": "val_acc"}, {}, "optimized_metric='val_acc' is not what train() can return; accepted: "
                                          "best_val_acc (searches: never looks at test data) or test_acc"),
    ({"print_config": "foo"}, {}, "print_config='foo' is not one of: compact, full, false"),
    ({}, {"accumulate_grad_batches": 0}, "trainer.accumulate_grad_batches=0 must be a whole number of batches >= 1 "
                                         "per optimizer step (1: every batch)"),
    ({}, {"accumulate_grad_batches": 1.5}, "trainer.accumulate_grad_batches=1.5 must be a whole number"),
    ({}, {"gradient_clip_val": -1}, "trainer.gradient_clip_val=-1 must be a number >= 0 (0 or null: no clipping); "
                                    "a negative one was ignored"),
    ({}, {"gradient_clip_val": "abc"}, "trainer.gradient_clip_val='abc' must be a number >= 0"),
    ({"model": {"num_classes": 1}}, {}, "model.num_classes=1 is fewer than FashionMNIST's 10 classes; accepted: 10"),
    # under one of the 10 test batches of 1024: the run trained every epoch, then failed at the test
    ({"data": {"eval_batch_size": 1024}}, {"limit_test_batches": 0.0001},
     "trainer.limit_test_batches=0.0001 is less than one of the 10 batches of 1024 images (data.eval_batch_size); "
     "accepted: a fraction >= 0.1, or a number of batches >= 1"),
    ({"data": {"eval_batch_size": 512}}, {"limit_val_batches": 0.04}, "trainer.limit_val_batches=0.04 is less than "
     "one of the 20 batches of 512 images"),
    ({}, {"limit_val_batches": 0.15, "devices": 2}, "trainer.limit_val_batches=0.15 is less than one of the 5 batches"),
    ({"model": {"input_size": 100}}, {}, "model.input_size=100: FashionMNIST's images are 28x28 = 784 values; "
                                         "accepted: 784"),
])
def test_settings_that_ran_wrong_or_crashed_mid_run_are_refused(top, trainer, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        check({**settings(**trainer), **top})


@pytest.mark.parametrize("top, trainer", [
    ({"skip_test": True, "optimized_metric": "test_acc", "print_config": False}, {"accumulate_grad_batches": 3}),
    ({"optimized_metric": None, "print_config": "FULL", "model": {"num_classes": 12}}, {"gradient_clip_val": 0.5}),
    ({}, {"gradient_clip_val": None, "gradient_clip_val ": 0}),
    *(({"print_config": off}, {}) for off in ("off", "none", None, "null", "False")),  # what print_start reads as off
    ({}, {"limit_test_batches": 0.1, "limit_val_batches": 0.0}),  # one batch of 10; 0.0: validation off
    ({}, {"limit_test_batches": 2, "limit_val_batches": 1.0}),
])
def test_the_accepted_values_of_those_settings_pass(top, trainer):
    check({**settings(**trainer), **top})


def test_barebones_is_refused_with_what_it_would_turn_off():
    with pytest.raises(ConfigError) as e:
        check(settings(barebones=True))
    assert str(e.value) == ("trainer.barebones=true turns off what every run here writes (results.json's curves "
                            "and checkpoints, the loggers, the epoch line); accepted: false, or leave it out; "
                            "for the least work a step: callbacks=essential logger=none")
    check(settings(barebones=False))


def test_one_epoch_and_group_callbacks_true_false_or_absent_are_fine():
    check(settings(max_epochs=1))
    check({**settings(), "group_callbacks": True})
    check({**settings(), "group_callbacks": False})


@pytest.mark.parametrize("value, shown", [("maybe", "'maybe'"), (1, "1"), (None, "None")])
def test_group_callbacks_must_be_a_bool(value, shown):
    with pytest.raises(ConfigError) as e:
        check({**settings(), "group_callbacks": value})
    assert str(e.value) == f"group_callbacks={shown} must be true or false"


@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_without_cuda_is_refused_and_with_cuda_passes(monkeypatch, accelerator):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        check(settings(accelerator=accelerator))
    assert str(e.value) == (f"trainer.accelerator={accelerator} but CUDA is not available on this machine "
                            "(torch.cuda.is_available() is False); use trainer.accelerator=cpu or auto")
    check(settings(accelerator="cpu"))
    check(settings(accelerator="auto"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check(settings(accelerator=accelerator))


def test_an_accelerator_left_out_is_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check({"seed": 1, "trainer": {"max_epochs": 1}})


@pytest.mark.parametrize("strategy, devices, slurm, multirun, refused", [
    ("ddp", 2, False, True, True),
    ("ddp_find_unused_parameters_true", 4, False, True, True),  # any ddp Lightning re-launches
    ("ddp", 2, False, False, False),  # a single run
    ("ddp", 1, False, True, False),  # one process: nothing re-launched
    ("ddp", "1", False, True, False),
    ("ddp", 2, True, True, False),  # SLURM starts the processes
    ("ddp_spawn", 2, False, True, False),  # spawned, not re-launched
    ("ddp_fork", 2, False, True, False),
    ("ddp_notebook", 2, False, True, False),
    ("auto", 2, False, True, False),
    ("fsdp", 2, False, True, False),
])
def test_ddp_inside_a_local_multirun(monkeypatch, strategy, devices, slurm, multirun, refused):
    if slurm:
        monkeypatch.setenv("SLURM_NTASKS", "2")
    else:
        monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.setattr(cli, "is_multirun", lambda: multirun)
    config = settings(strategy=strategy, devices=devices)
    if not refused:
        check(config)
        return
    with pytest.raises(ConfigError) as e:
        check(config)
    assert str(e.value) == (f"trainer.strategy={strategy} (devices={devices}) cannot run inside a local multirun: "
                            "Lightning re-runs the command line per process, which would restart the sweep; run it "
                            "as a single run, or per SLURM job (hydra/launcher=slurm "
                            "hydra.launcher.tasks_per_node=<devices>)")


def test_strategy_and_devices_left_out_are_one_process(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.setattr(cli, "is_multirun", lambda: True)
    check(settings())
    check(settings(strategy="ddp"))  # devices left out: read as 1 (conf/trainer sets it)


def test_an_interpolation_that_cannot_resolve_is_refused_before_anything_is_built():
    from omegaconf.errors import InterpolationKeyError

    with pytest.raises(InterpolationKeyError) as e:
        check({**settings(), "note": "${nope}"})
    assert cli.one_line(e.value) == "note: Interpolation key 'nope' not found"


# ---------------------------------------------------------------------------------------------
# build_module, build_callbacks, build_loggers


def test_build_module_draws_the_tutorials_order_layers_then_init(tmp_path):
    """Same seed: the network is drawn (nn.Linear's own init), then the init scheme redraws it;
    the optimizer holds exactly the network's parameters."""
    from src.init import Xavier
    from src.model import BaseNetwork

    cfg = compose([*FAST, "init=xavier", "optim=sgd_mom", "optim.lr=0.05", "model.hidden_sizes=[32,16]"], tmp_path)
    pl.seed_everything(3, verbose=False)
    module = build_module(cfg)
    pl.seed_everything(3, verbose=False)
    net = BaseNetwork(act_fn="relu", hidden_sizes=[32, 16])
    Xavier()(net)
    for (name, ours), (_, plain) in zip(module.net.named_parameters(), net.named_parameters(), strict=True):
        assert torch.equal(ours, plain), name
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert type(optimizer).__name__ == "SGDMomentum"
    assert optimizer.defaults["lr"] == 0.05 and optimizer.defaults["momentum"] == 0.9
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(module.net.parameters())


@pytest.mark.parametrize("overrides, message", [
    (["optim.lr=0"], "optim.lr=0: must be > 0"),  # the optimizer's ValueError, in config keys
    (["optim=sgd", "+optim.betas=[0.9,0.99]"], "optim: "),  # a TypeError: an argument SGD does not take
])
def test_an_optimizer_that_refuses_its_arguments_is_a_config_error(tmp_path, overrides, message):
    cfg = compose([*FAST, *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        build_module(cfg)
    assert str(e.value).startswith(message), str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one line, no chain


def test_build_callbacks_skips_nulls_and_non_targets_and_drops_disabled_ones():
    cfg = OmegaConf.create({"callbacks": {
        "on": {"_target_": "tests.test_run_setup.Switch", "enabled": True},
        "off": {"_target_": "tests.test_run_setup.Switch", "enabled": False},
        "plain": {"_target_": "pytorch_lightning.callbacks.Timer"},
        "removed": None,
        "settings_only": {"every_n_steps": 5},
    }})
    built = build_callbacks(cfg)
    assert [type(cb).__name__ for cb in built] == ["Switch", "Timer"] and built[0].enabled is True
    assert build_callbacks(OmegaConf.create({"callbacks": None})) == []
    assert build_callbacks(OmegaConf.create({})) == []


def test_a_disabled_callback_still_checks_its_arguments():
    cfg = OmegaConf.create({"callbacks": {"off": {"_target_": "tests.test_run_setup.Switch", "enabled": False,
                                                  "every": -1}}})
    with pytest.raises(Exception, match="every=-1 must be >= 1"):
        build_callbacks(cfg)


class Switch(pl.Callback):
    def __init__(self, enabled: bool = True, every: int = 1):
        if every < 1:
            raise ValueError(f"every={every} must be >= 1")
        self.enabled = enabled


def test_build_loggers_skips_nulls_and_non_targets(tmp_path):
    cfg = OmegaConf.create({"logger": {
        "csv": {"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": str(tmp_path)},
        "gone": None,
        "settings_only": {"name": "x"},
    }})
    assert [type(lg).__name__ for lg in build_loggers(cfg)] == ["CSVLogger"]
    assert build_loggers(OmegaConf.create({"logger": None})) == []
    assert build_loggers(OmegaConf.create({})) == []


# ---------------------------------------------------------------------------------------------
# run_warnings


def test_run_warnings_are_chance_level_then_each_callbacks_own():
    from types import SimpleNamespace

    from src.training import run_warnings

    module = SimpleNamespace(net=SimpleNamespace(config={"num_classes": 10}))
    callbacks = [SimpleNamespace(warnings=["vanishing: layers.0"]), SimpleNamespace(warnings=None), object(),
                 SimpleNamespace(warnings=("exploding: layers.8",))]
    kept = ["vanishing: layers.0", "exploding: layers.8"]
    assert run_warnings(module, callbacks, [0.5, 0.8]) == kept
    at_chance = "did not learn: final val acc 12.0 % is at chance level (10 %)"
    assert run_warnings(module, callbacks, [0.3, 0.8, 1 / 10 + 0.02]) == [at_chance, *kept]  # chance + 2 pt counts
    assert run_warnings(module, [], [0.1201]) == []
    assert run_warnings(module, [], [0.5, 0.099]) == ["did not learn: final val acc 9.9 % is at chance level (10 %)"]
    assert run_warnings(module, [], []) == []  # nothing validated: nothing to say


# ---------------------------------------------------------------------------------------------
# config_changes, changes_on_resume, first_try


def test_config_changes_names_each_setting_that_differs():
    before = {"seed": 1, "optim": {"lr": 0.1, "betas": [0.9, 0.999]}, "trainer": {"max_epochs": 40},
              "callbacks": {"probe": {"every": 1, "on": True}, "progress": {"every": 10}}, "note": None}
    after = {"seed": 1, "optim": {"lr": 0.01, "betas": [0.9, 0.99]}, "trainer": {"max_epochs": 40},
             "callbacks": {"progress": {"every": 10}, "path": {"every": 5}}, "extra": 3, "note": None}
    assert config_changes(before, after) == ["callbacks.path added", "callbacks.probe removed",
                                             "extra (none) → 3", "optim.betas [0.9, 0.999] → [0.9, 0.99]",
                                             "optim.lr 0.1 → 0.01"]
    assert config_changes(before, before) == [] and config_changes({}, {}) == []
    assert config_changes({"a": None}, {}) == ["a None → (none)"]  # a key set to null is not a missing key
    assert config_changes({"a": {"b": 1}}, {"a": 3}) == ["a {'b': 1} → 3"]
    assert config_changes({"lr": 1}, {"lr": 1.0}) == []  # the same value
    many = config_changes({f"k{i}": i for i in range(9)}, {f"k{i}": -i for i in range(9)}, most=3)
    assert many == ["k1 1 → -1", "k2 2 → -2", "k3 3 → -3", "5 more"]  # k0 0 → 0 is no change
    assert len(config_changes({f"k{i}": i for i in range(10)}, {})) == 8 + 1  # 8 by default, then the count
    assert config_changes({f"k{i}": i for i in range(8)}, {}) == [f"k{i} {i} → (none)" for i in range(8)]  # no "0 more"


def test_changes_on_resume_adds_this_resumes_to_the_checkpoints(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    AtomicCheckpointIO(stamp={"config_hash": "h", "seed": 1, "config": {"optim": {"lr": 0.1}},
                              "changes": ["resumed at step 3 with a changed config: …"]}).save_checkpoint(
        {"global_step": 8}, ckpt)
    earlier = checkpoint_stamp(ckpt)
    now = {"config_hash": "g", "seed": 2, "config": {"optim": {"lr": 0.01}}}
    assert changes_on_resume(earlier, now) == [
        "resumed at step 3 with a changed config: …",
        "resumed at step 8 with a changed config: optim.lr 0.1 → 0.01, seed 1 → 2; results.json's config holds "
        "the new values"]
    same = {"config_hash": "h", "seed": 1, "config": {"optim": {"lr": 0.1}}}
    assert changes_on_resume(earlier, same) == ["resumed at step 3 with a changed config: …"]
    assert changes_on_resume({}, now) == []  # a fresh run
    AtomicCheckpointIO(stamp={"config_hash": "h", "seed": 1}).save_checkpoint({"global_step": 8}, ckpt)
    assert changes_on_resume(checkpoint_stamp(ckpt), now) == []  # a checkpoint without its config: nothing to compare


def test_first_try_is_this_trys_then_carried_over_from_the_resumed_checkpoints_stamp():
    kaiming, xavier = {"_target_": "src.init.Kaiming"}, {"_target_": "src.init.Xavier"}
    fresh = {"seed": 42, "config": {"init": kaiming, "init_name": "kaiming", "optim": {"lr": 0.1}}}
    first = {"seed": 42, "init": kaiming, "init_name": "kaiming"}
    assert first_try(None, fresh) == first  # a fresh run is the first try
    # resumed with seed=7 init=xavier, then again with seed=9: the first try's, carried over
    second = {"seed": 7, "config": {"init": xavier, "init_name": "xavier", "optim": {"lr": 0.1}}}
    assert first_try({**fresh, "changes": [], "first": first, "global_step": 7}, second) == first
    third = {**second, "seed": 9}
    assert first_try({**second, "changes": ["resumed at step 7 ..."], "first": first}, third) == first
    # a checkpoint stamped before `first`: its own seed and init when no resume changed its config
    assert first_try({**fresh, "changes": []}, second) == first
    assert first_try({**second, "changes": ["resumed at step 7 ..."]}, third) is None  # then nothing says
    assert first_try({**second, "changes": ["..."], "first": None}, third) is None  # and stays unknown
    assert first_try({}, second) is None  # resumed from a checkpoint without a stamp
    assert first_try({"config_hash": "h", "seed": 1}, second) is None  # a stamp without its config




# ---------------------------------------------------------------------------------------------
# continue_sweep_job


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A sweep job's config and run dir, in a multirun."""
    monkeypatch.setattr(cli, "is_multirun", lambda: True)
    out = tmp_path / "0_optim=sgd"
    out.mkdir()
    return compose([*FAST, "optim=sgd", "seed=3"], out), out


def _results(out, cfg, status="ok", **changes) -> dict:
    results = {"status": status, "test_acc": 0.8, "config": {"seed": cfg.seed},
               "provenance": {"config_hash": config_hash(cfg)}, **changes}
    (out / "results.json").write_text(json.dumps(results))
    return results


def _last(out):
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"")
    return out / "checkpoints" / "last.ckpt"


def test_a_single_run_is_never_skipped_or_resumed_by_itself(job, monkeypatch):
    cfg, out = job
    monkeypatch.setattr(cli, "is_multirun", lambda: False)
    _results(out, cfg)
    _last(out)
    assert continue_sweep_job(cfg, out) == (None, None)
    cfg.ckpt_path = "/given/last.ckpt"  # only what the user passed
    assert continue_sweep_job(cfg, out) == (None, "/given/last.ckpt")


def test_an_ok_job_of_the_same_config_and_seed_is_skipped(job, capsys):
    cfg, out = job
    old = _results(out, cfg)
    assert continue_sweep_job(cfg, out) == (old, None)
    assert capsys.readouterr().out == (f"skipping {out.name}: already ok (test acc 80.00 %); "
                                       "+sweep.rerun=all reruns it\n")
    # skip_test=true left no test accuracy
    (out / "results.json").write_text(json.dumps({**old, "test_acc": None}))
    continue_sweep_job(cfg, out)
    assert "already ok (test acc n/a);" in capsys.readouterr().out


@pytest.mark.parametrize("why", ["failed", "other config", "other seed", "no provenance", "broken json",
                                 "not an object"])
def test_a_job_that_is_not_the_same_ok_job_runs_again(job, why, capsys):
    cfg, out = job
    if why == "failed":
        _results(out, cfg, status="failed")
    elif why == "other config":
        _results(out, cfg, provenance={"config_hash": "0123456789ab"})
    elif why == "other seed":
        _results(out, cfg, config={"seed": 4})
    elif why == "no provenance":
        _results(out, cfg, provenance=None)
    elif why == "broken json":
        (out / "results.json").write_text('{"status": "ok", ')
    else:
        (out / "results.json").write_text('["ok"]')
    assert continue_sweep_job(cfg, out) == (None, None)
    assert "skipping" not in capsys.readouterr().out


def test_rerun_all_runs_even_an_ok_job(job):
    cfg, out = job
    _results(out, cfg)
    _last(out)
    cfg = compose([*FAST, "optim=sgd", "seed=3", "+sweep.rerun=all"], out)
    assert continue_sweep_job(cfg, out) == (None, None)
    cfg = compose([*FAST, "optim=sgd", "seed=3", "+sweep.rerun=no"], out)  # anything but `all`
    assert continue_sweep_job(cfg, out)[0] is not None


def test_a_rerun_all_that_was_stopped_continues_without_the_flag(job):
    """The jobs a `+sweep.rerun=all` finished are skipped when the sweep is started again as
    usual: the flag says how to start, it is not part of the experiment (config_hash)."""
    cfg, out = job
    _results(out, compose([*FAST, "optim=sgd", "seed=3", "+sweep.rerun=all", "verbose=true"], out))
    assert continue_sweep_job(cfg, out)[0] is not None


def test_a_job_with_last_ckpt_resumes_from_it(job, capsys):
    cfg, out = job
    last = _last(out)
    (out / "tensorboard").mkdir()
    assert continue_sweep_job(cfg, out) == (None, str(last))
    assert capsys.readouterr().out == f"resuming {out.name} from {last}\n"
    assert (out / "tensorboard").is_dir()  # the resumed run goes on writing its event file


def test_a_diverged_job_of_the_same_config_and_seed_is_skipped_too(job, capsys):
    cfg, out = job
    old = _results(out, cfg, status="diverged", test_acc=None, diverged_step=12)
    _last(out)
    assert continue_sweep_job(cfg, out) == (old, None)
    assert capsys.readouterr().out == (f"skipping {out.name}: already diverged (at step 12); "
                                       "+sweep.rerun=all reruns it\n")


@pytest.mark.parametrize("status", ["ok", "diverged"])
def test_a_finished_job_of_another_config_starts_afresh_not_from_its_last_ckpt(job, capsys, status):
    """Resuming it would restore a finished run of the old config and report it as the new."""
    cfg, out = job
    _results(out, cfg, status=status, provenance={"config_hash": "0123456789ab"})
    _last(out)
    (out / "checkpoints" / "best-epoch=03.ckpt").write_bytes(b"")
    (out / "tensorboard").mkdir()
    assert continue_sweep_job(cfg, out) == (None, None)
    assert capsys.readouterr().out == (f"rerunning {out.name} (its config or seed changed since it finished): its "
                                       "earlier checkpoints and tensorboard are replaced\n")
    assert not (out / "checkpoints").exists() and not (out / "tensorboard").exists()


def test_rerun_all_replaces_the_earlier_checkpoints_and_events(job, capsys):
    cfg, out = job
    _results(out, cfg)
    _last(out)
    cfg = compose([*FAST, "optim=sgd", "seed=3", "+sweep.rerun=all"], out)
    assert continue_sweep_job(cfg, out) == (None, None)
    assert capsys.readouterr().out == (f"rerunning {out.name} (+sweep.rerun=all): its earlier checkpoints are "
                                       "replaced\n")
    assert not (out / "checkpoints").exists()
    assert continue_sweep_job(cfg, out) == (None, None)  # nothing left to replace: nothing said
    assert capsys.readouterr().out == ""


def _stamped_last(out, config_hash, seed):
    (out / "checkpoints").mkdir(exist_ok=True)
    AtomicCheckpointIO(stamp={"config_hash": config_hash, "seed": seed}).save_checkpoint(
        {"state_dict": {}}, out / "checkpoints" / "last.ckpt")
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("status", ["interrupted", "failed"])
@pytest.mark.parametrize("stamped", [True, False])  # killed (no results.json) / before stamps
def test_a_stopped_job_of_another_config_starts_afresh(job, capsys, status, stamped):
    """Resumed, its results.json would report epochs trained under the old config as the new's
    (and another model would fail the job on the checkpoint check)."""
    cfg, out = job
    if stamped:
        _stamped_last(out, "0123456789ab", cfg.seed)
    else:
        _results(out, cfg, status=status, provenance={"config_hash": "0123456789ab"})
        _last(out)
    (out / "tensorboard").mkdir()
    assert continue_sweep_job(cfg, out) == (None, None)
    assert capsys.readouterr().out == (f"rerunning {out.name} (its config or seed changed since it stopped): its "
                                       "earlier checkpoints and tensorboard are replaced\n")
    assert not (out / "checkpoints").exists() and not (out / "tensorboard").exists()


@pytest.mark.parametrize("status", ["ok", "interrupted"])
def test_a_rerun_says_what_changed_when_the_checkpoint_knows(job, capsys, status):
    from src.provenance import what_is_trained

    cfg, out = job
    before = what_is_trained(cfg)
    before["optim"] = {**before["optim"], "lr": 0.5, "weight_decay": 0.1}
    _results(out, cfg, status=status, provenance={"config_hash": "0123456789ab"})
    (out / "checkpoints").mkdir()
    AtomicCheckpointIO(stamp={"config_hash": "0123456789ab", "seed": cfg.seed, "config": before}).save_checkpoint(
        {"global_step": 3}, out / "checkpoints" / "last.ckpt")
    assert continue_sweep_job(cfg, out) == (None, None)
    since = "finished" if status == "ok" else "stopped"
    assert capsys.readouterr().out == (f"rerunning {out.name} (changed since it {since}: optim.lr 0.5 → "
                                       f"{cfg.optim.lr}, optim.weight_decay 0.1 → {cfg.optim.weight_decay}): its "
                                       "earlier checkpoints are replaced\n")


def test_a_stopped_job_of_another_seed_starts_afresh(job):
    cfg, out = job
    _stamped_last(out, config_hash(cfg), cfg.seed + 1)
    assert continue_sweep_job(cfg, out) == (None, None)


def test_the_checkpoints_stamp_wins_over_an_older_results_json(job, capsys):
    # try 1 stopped under the old config; try 2 started afresh under this one and was killed
    cfg, out = job
    _results(out, cfg, status="interrupted", provenance={"config_hash": "0123456789ab"})
    last = _stamped_last(out, config_hash(cfg), cfg.seed)
    assert continue_sweep_job(cfg, out) == (None, str(last))
    assert capsys.readouterr().out == f"resuming {out.name} from {last}\n"


def test_a_stopped_job_of_the_same_config_resumes_from_a_stamped_checkpoint(job):
    cfg, out = job
    _results(out, cfg, status="interrupted")
    last = _stamped_last(out, config_hash(cfg), cfg.seed)
    assert continue_sweep_job(cfg, out) == (None, str(last))


def test_a_skipped_job_returns_what_its_run_returned(job, monkeypatch):

    from src.training import train

    cfg, out = job
    monkeypatch.setattr("src.training.check_run_settings", lambda cfg: None)
    _results(out, cfg, status="diverged", test_acc=None)
    assert train(cfg) is None  # as a diverging run returns: Optuna marks the trial failed
    _results(out, cfg, test_acc=0.8, best_val_acc=0.9)
    assert cfg.optimized_metric == "best_val_acc" and train(cfg) == 0.9
    cfg = compose([*FAST, "optim=sgd", "seed=3", "optimized_metric=test_acc"], out)
    _results(out, cfg, test_acc=0.8, best_val_acc=0.9)
    assert train(cfg) == 0.8


def test_a_ckpt_path_given_wins_over_last_ckpt(job):
    cfg, out = job
    _last(out)
    cfg.ckpt_path = "/elsewhere/last.ckpt"
    assert continue_sweep_job(cfg, out) == (None, "/elsewhere/last.ckpt")


def test_a_fresh_start_removes_the_dead_tries_event_files(job, capsys):
    cfg, out = job
    (out / "tensorboard" / "version_0").mkdir(parents=True)
    (out / "tensorboard" / "version_0" / "events.out.tfevents.1").write_bytes(b"x")
    assert continue_sweep_job(cfg, out) == (None, None)
    assert not (out / "tensorboard").exists()
    assert capsys.readouterr().out == ""  # a try that never checkpointed: nothing changed, nothing to say


def test_a_stopped_job_with_a_checkpoint_from_before_stamps_goes_by_its_results(job, capsys):
    cfg, out = job
    _results(out, cfg, status="interrupted")  # the same config and seed
    last = _last(out)  # no stamp in it
    assert continue_sweep_job(cfg, out) == (None, str(last))
    _results(out, cfg, status="interrupted", config={"seed": cfg.seed + 1})
    assert continue_sweep_job(cfg, out) == (None, None)
    assert "its config or seed changed since it stopped" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# print_end


def test_the_end_block(tmp_path, capsys):
    from src.training import print_end

    (tmp_path / "tensorboard").mkdir()
    print_end({"status": "ok", "test_acc": 0.8857, "best_val_acc": 0.89125, "best_val_epoch": 12, "epochs": 40,
               "seconds": 61.26, "output_dir": str(tmp_path), "warnings": ["did not learn: …"]})
    assert capsys.readouterr().out == (
        "ok: test acc 88.57 % · best val acc 89.12 % (epoch 12) · 40 epochs in 61.3 s\n"
        "warning: did not learn: …\n"
        f"results: {tmp_path / 'results.json'}\ntensorboard --logdir {tmp_path / 'tensorboard'}\n  # then open "
        "http://localhost:6006/?smoothing=0#timeseries (unsmoothed)\n")


def test_the_end_block_of_a_run_stopped_before_its_first_validation(tmp_path, capsys):
    from src.training import print_end

    print_end({"status": "ok", "test_acc": 0.5, "best_val_acc": 0.5, "best_val_epoch": 0, "epochs": 1,
               "seconds": 1.0, "output_dir": str(tmp_path)})
    assert capsys.readouterr().out.startswith("ok: test acc 50.00 % · best val acc 50.00 % (epoch 0) · 1 epoch in 1.0 s\n")

    print_end({"status": "interrupted", "test_acc": None, "best_val_acc": None, "best_val_epoch": -1,
               "epochs": 0, "seconds": 2.6, "output_dir": str(tmp_path)})
    assert capsys.readouterr().out == ("interrupted: test acc n/a · best val acc n/a · 0 epochs in 2.6 s\n"
                                       f"results: {tmp_path / 'results.json'}\n")  # no "(epoch -1)", no TensorBoard
