"""src/cli.py in-process, line by line: the one `error:` line for each kind of bad input (real
Hydra and OmegaConf exceptions), what run_task and run_app do with each way a task ends, how
`ckpt_path=<run dir>` rewrites the command line, the start line. Fast (no training, no
subprocess): the mutation tests run this file (scripts/mutants.py cli).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from omegaconf import OmegaConf

from src import cli
from src.config import compose_config
from src.errors import CheckpointError, ConfigError, Interrupted, UserError

HINT = "(overrides are key=value; quote a value with special characters: key='a,b')"


def composition_error(overrides: list[str], tmp_path) -> Exception:
    with pytest.raises(Exception) as info:
        compose_config(overrides, tmp_path / "run")
    return info.value


def chained(inner: BaseException, outer: BaseException) -> BaseException:
    """`outer` as if raised `from inner` (how Hydra's instantiate wraps a constructor's error)."""
    outer.__cause__ = inner
    return outer


# ---------------------------------------------------------------------------------------------
# one_line: Hydra's composition errors


@pytest.mark.parametrize("overrides, line", [
    (["optim=adamw"],
     "optim=adamw is not an available option; available: adam, sgd, sgd_mom, torch_adam, torch_sgd, torch_sgd_mom"),
    # an option in a sub-folder: the group is `trainer`, not `trainer/nope`
    (["trainer=nope/x"], "trainer=nope/x is not an available option; available: cpu, ddp, ddp_sim, default, gpu"),
    (["optim.lrr=0.1"], "optim.lrr is not a key of optim=adam (did you mean optim.lr?); its keys: betas, eps, lr, "
                        "weight_decay (add a new one with +optim.lrr=…)"),
    # the option chosen, and the options that have the key; no "+key" where it would be refused
    (["optim=adam", "optim.momentum=0.9"], "optim.momentum is not a key of optim=adam (optim=sgd_mom, "
                                           "optim=torch_sgd_mom have it); its keys: betas, eps, lr, weight_decay"),
    (["optim=sgd", "optim.betas=[0.9,0.99]"], "optim.betas is not a key of optim=sgd (optim=adam, optim=torch_adam "
                                              "have it); its keys: lr, weight_decay"),
    (["init.std=2"], "init.std is not a key of init=kaiming (init=normal has it); it takes no parameters"),
    (["optim=sgd_mom", "optim.nesterov=true"], "optim.nesterov is not a key of optim=sgd_mom; its keys: lr, "
                                               "momentum, weight_decay (add a new one with +optim.nesterov=…)"),
    (["trainer.max_epoch=3"], "trainer.max_epoch is not a key of trainer=default (did you mean "
                              "trainer.max_epochs?); "),
    (["init=xavier", "init.gain=2"], "init.gain is not a key of init=xavier; it takes no parameters (add a new "
                                     "one with +init.gain=…)"),
    (["optim.lr=1)"], f"cannot parse the override 'optim.lr=1)': extraneous input ')' expecting <EOF> {HINT}"),
    (["seed"], f"cannot parse the override 'seed': missing EQUAL at '<EOF>' {HINT}"),
    (["optim.lr=[1"], f"cannot parse an override: no viable alternative at input '[1' {HINT}"),
    (["+trainer.precision=banana"], "Could not append to config. An item is already at 'trainer.precision'. "
                                    "Either remove + prefix: 'trainer.precision=banana' Or add a second + "),
    (["optim=sgd,adam"], "Ambiguous value for argument 'optim=sgd,adam' 1. To use it as a list, use "
                         "key=[value1,value2] 2. To use it as string,"),
])
def test_composition_errors_are_one_line_naming_what_is_accepted(tmp_path, overrides, line):
    e = composition_error(overrides, tmp_path)
    assert cli._is_user_error(e)
    text = cli.one_line(e)
    assert text.startswith(line), text
    assert "\n" not in text and "See https://" not in text
    if "have it" in line or "has it" in line:
        assert text == line


def test_a_group_the_script_does_not_choose_is_named_with_the_script(tmp_path, monkeypatch):
    from hydra.errors import ConfigCompositionException

    monkeypatch.setattr(sys, "argv", ["eval.py"])
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["optim=sgd"], tmp_path, "eval")
    assert cli.one_line(info.value) == ("optim: eval.py chooses no optim option, so there is none to change "
                                        "(+optim=sgd would add one)")
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert cli.one_line(ConfigCompositionException("Could not override 'init'. No match in the defaults list.")) == (
        "init: this config chooses no init option, so there is none to change (+init=… would add one)")
    # `+experiment=x` where the defaults list has experiment (null): Hydra's advice was a line of a config file
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["+experiment=lr_sensitivity_quick"], tmp_path, "train")
    assert cli.one_line(info.value) == (
        "+experiment=lr_sensitivity_quick: experiment is in this config's defaults list already (null: none chosen); "
        "choose it without the +: experiment=lr_sensitivity_quick")


@pytest.mark.parametrize("message, missing, line", [
    # Hydra names the group whose options it lists
    ("Could not find 'hydra/launcher/x/y'\nAvailable options in 'hydra/launcher':\n\tbasic", "hydra/launcher/x/y",
     "hydra/launcher=x/y is not an available option; available: basic, slurm"),
    # no list, or a list of another group: the folder of the missing file is the group
    ("Could not find 'a/b/c'", "a/b/c", "a/b=c is not an available option; available: basic, slurm"),
    ("Could not find 'a/b/c'\nAvailable options in 'other':", "a/b/c",
     "a/b=c is not an available option; available: basic, slurm"),
])
def test_a_missing_option_is_named_in_its_group(message, missing, line):
    from hydra.errors import MissingConfigException

    assert cli.one_line(MissingConfigException(message, missing, options=["basic", "slurm"])) == line


def test_a_composition_error_without_a_key_is_hydras_message_in_one_line():
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigKeyError

    cause = ConfigKeyError("no key")
    cause.parent_node, cause.full_key = OmegaConf.create({"a": 1}), ""  # a node, but no key
    e = ConfigCompositionException("Could not override 'x'.\n\nSee https://hydra.cc/docs for details\nTry +x")
    e.__cause__ = cause
    assert cli.one_line(e) == "Could not override 'x'. Try +x"


def test_a_top_level_typo_names_where_the_key_is(tmp_path):
    """`lr=0.1` is the first mistake a user makes: the key is optim.lr."""
    text = cli.one_line(composition_error(["lr=0.1"], tmp_path))
    assert text.startswith("lr is not a key at the top level (did you mean optim.lr?); its keys: callbacks, "
                           "checkpoint, ckpt_path, data, "), text
    assert text.endswith(", trainer, verbose (add a new one with +lr=…)"), text
    assert "hydra" not in text and "_target_" not in text


def test_a_key_of_a_group_with_no_option_chosen_says_choose_one(tmp_path):
    """surfaces.py has the optim group but chooses none of its options by default."""
    with pytest.raises(Exception) as info:
        compose_config(["optim.lr=0.5"], tmp_path, "surfaces")
    assert cli.one_line(info.value) == (
        "no optim option is chosen in this config, so optim.<key>=… has nothing to set; choose one first "
        "(optim=<option> optim.<key>=…); options: adam, sgd, sgd_mom, torch_adam, torch_sgd, torch_sgd_mom")


def test_a_key_in_several_places_names_up_to_three(tmp_path):
    text = cli.one_line(composition_error(["every_n_steps=10"], tmp_path))  # five callbacks have it
    guesses = text.split("(did you mean ", 1)[1].split("?)", 1)[0].split(" or ")
    assert len(guesses) == 3 and all(g.startswith("callbacks.") and g.endswith(".every_n_steps") for g in guesses)
    assert text.startswith("every_n_steps is not a key at the top level (did you mean callbacks."), text


def test_key_paths_walk_the_tree_without_hydra_or_private_keys():
    cfg = OmegaConf.create({"hydra": {"run": {"dir": "x"}}, "a": {"b": 1, "_target_": "t", "c": {"d": 2}},
                            "e": None, "f": "???", "g": {"h": None}})
    assert cli._key_paths(cfg) == ["a", "a.b", "a.c", "a.c.d", "e", "f", "g", "g.h"]
    none_node = OmegaConf.create({"n": {"x": 1}, "m": {"y": 1}})
    none_node.n, none_node.m = None, "???"  # a group set to null, and one left to fill in
    assert cli._key_paths(none_node) == ["n", "m"]


def test_the_chosen_option_is_the_one_file_with_the_nodes_target_and_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "CONF", tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.yaml").write_text("_target_: x.A\nlr: 1\n")
    (tmp_path / "g" / "b.yaml").write_text("_target_: x.B\nlr: 1\nstd: 2\n")
    (tmp_path / "g" / "b2.yaml").write_text("_target_: x.B\nlr: 1\nstd: 2\nmomentum: 3\n")
    (tmp_path / "g" / "c.yaml").write_text("- a list\n")  # not an option of keys: never chosen nor listed
    (tmp_path / "g" / "d.yaml").write_text("")
    node = OmegaConf.create({"_target_": "x.B", "lr": 5, "std": 0})
    chosen, others = cli._chosen_option("g", node)
    assert chosen == "b" and list(others) == ["a", "b2", "d"]
    assert cli.unknown_key("g.momentum", node) == "g.momentum is not a key of g=b (g=b2 has it); its keys: lr, std"
    # a key added to the option (+g.x=1), or a target two files share with the same keys: no name
    assert cli._chosen_option("g", OmegaConf.create({"_target_": "x.B", "lr": 5, "std": 0, "x": 1}))[0] is None
    (tmp_path / "g" / "b3.yaml").write_text("_target_: x.B\nstd: 2\nlr: 1\n")
    assert cli._chosen_option("g", node)[0] is None
    assert cli._chosen_option("g", OmegaConf.create({"lr": 1}))[0] is None  # no _target_: nothing to compare
    (tmp_path / "top.yaml").write_text("_target_: x.B\nlr: 1\nstd: 2\n")  # a config, not a group's option
    assert cli._chosen_option("nope", node) == (None, {}) and cli._chosen_option("", node) == (None, {})
    assert cli.unknown_key("g.momentum", node) == ("g.momentum is not a key of g (g=b2 has it); its keys: lr, std")
    for name in ("b4", "b5", "b6"):
        (tmp_path / "g" / f"{name}.yaml").write_text("momentum: 1\n")
    assert cli.unknown_key("g.momentum", node) == ("g.momentum is not a key of g (g=b2, g=b4, g=b5 have it); its "
                                                   "keys: lr, std")  # three at most
    # the command line's choice wins: the user's own option (--config-dir) may match a file of ours
    monkeypatch.setattr(sys, "argv", ["train.py", "g=mine", "g.lr=2"])
    assert cli._chosen_option("g", node)[0] == "mine" and "b" in cli._chosen_option("g", node)[1]
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "+g=a,b"])  # a sweep's list names no one option
    assert cli._chosen_option("g", node)[0] is None
    monkeypatch.setattr(sys, "argv", ["train.py", "g=b", "+g=a"])  # the last one, as Hydra reads them
    chosen, others = cli._chosen_option("g", node)
    assert chosen == "a" and "a" not in others and "b" in others
    monkeypatch.setattr(sys, "argv", ["train.py"])
    # no option to name, no keys: "it has none", and adding one is the way
    empty = OmegaConf.create({"h": {"_target_": "x.H"}})
    assert cli.unknown_key("h.a", empty.h) == "h.a is not a key of h; it has none (add a new one with +h.a=…)"


def test_unknown_key_in_a_nested_group_finds_a_spelling_or_the_same_name_elsewhere():
    cfg = OmegaConf.create({"optim": {"lr": 0.1, "_target_": "x"}, "trainer": {"max_epochs": 3}, "hydra": {"lr": 1}})
    assert cli.unknown_key("trainer.lr", cfg.trainer) == (
        "trainer.lr is not a key of trainer (did you mean optim.lr?); its keys: max_epochs "
        "(add a new one with +trainer.lr=…)")
    assert cli.unknown_key("optim.lrr", cfg.optim).startswith("optim.lrr is not a key of optim (did you mean optim.lr?)")
    assert cli.unknown_key("optm", cfg).startswith("optm is not a key at the top level (did you mean optim?); ")
    limits = OmegaConf.create({"max_epochs": 1, "max_steps": 1, "min_epochs": 1, "max_time": 1})
    assert cli.unknown_key("max_epoch", limits).startswith(  # the closest one, not a list of near ones
        "max_epoch is not a key at the top level (did you mean max_epochs?); ")
    # a key inside a group named like a config group: no "choose one first"
    assert cli.unknown_key("trainer.optim", cfg.trainer).startswith("trainer.optim is not a key of trainer")
    assert cli.unknown_key("zzz", cfg) == ("zzz is not a key at the top level; its keys: optim, trainer "
                                           "(add a new one with +zzz=…)")


# ---------------------------------------------------------------------------------------------
# one_line: everything else


def test_an_interpolation_error_names_its_key_not_omegaconfs_object_type(tmp_path):
    cfg = OmegaConf.create({"seed": "${oops}", "data": {"seed": "${seed}"}})
    with pytest.raises(Exception) as info:
        OmegaConf.to_container(cfg, resolve=True)
    assert cli._is_user_error(info.value)
    assert cli.one_line(info.value) == "seed: Interpolation key 'oops' not found"


def test_an_omegaconf_error_without_a_key_is_its_first_line():
    from omegaconf.errors import InterpolationKeyError

    assert cli.one_line(InterpolationKeyError("no key here\n  second")) == "no key here"


def test_an_omegaconf_error_without_a_message_is_its_type():
    from omegaconf.errors import InterpolationKeyError

    assert cli.one_line(InterpolationKeyError("")) == "InterpolationKeyError: InterpolationKeyError"


def test_an_omegaconf_error_inside_a_crash_is_its_first_line_with_its_key():
    from omegaconf.errors import InterpolationKeyError

    inner = InterpolationKeyError("Interpolation key 'x' not found\n    full_key: a.b\n    object_type=dict")
    inner.full_key = "a.b"
    assert cli.one_line(chained(inner, RuntimeError("wrapped"))) == "a.b: Interpolation key 'x' not found"


def test_a_constructor_error_through_instantiate_is_said_in_config_keys():
    import hydra

    with pytest.raises(Exception) as info:
        hydra.utils.instantiate(OmegaConf.create({"init": {"_target_": "src.init.Normal", "std": -0.1}}))
    assert cli._is_user_error(info.value)
    assert cli.one_line(info.value) == "init.std=-0.1: must be > 0 and finite"


def test_instantiate_names_the_outer_full_key():
    from hydra.errors import InstantiationException

    e = InstantiationException("Error in call to target 'x':\nValueError('inner full_key: a.b')\nfull_key: init")
    assert cli.one_line(e).startswith("init: ")


def test_instantiate_without_a_full_key_says_config():
    from hydra.errors import InstantiationException

    e = InstantiationException("Error in call to target\nboom")
    assert cli.one_line(e) == "config: boom"


@pytest.mark.parametrize("error, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run"), "no space left on device: /data/run"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError("a bare message"), "OSError: a bare message"),
    (UserError("first\nthe line that counts"), "the line that counts"),
    (ConfigError("seed=-1 must be an integer"), "seed=-1 must be an integer"),
    (RuntimeError(""), "RuntimeError: RuntimeError"),
])
def test_other_errors_in_one_line(error, line):
    assert cli.one_line(error) == line


def test_a_chained_crash_names_its_root_cause():
    assert cli.one_line(chained(KeyError("inner"), RuntimeError("outer"))) == "KeyError: 'inner'"


def test_which_errors_are_the_users():
    from hydra.errors import HydraException
    from omegaconf.errors import ValidationError

    class MisconfigurationException(Exception):  # Lightning's, matched by name (no import)
        pass

    for e in (UserError("x"), ConfigError("x"), CheckpointError("x"), HydraException("x"), ValidationError("x"),
              MisconfigurationException("x")):
        assert cli._is_user_error(e), e
    for e in (ValueError("x"), RuntimeError("x"), OSError("x"), KeyboardInterrupt()):
        assert not cli._is_user_error(e), e


def _raise_inside(module_name: str, error: Exception) -> Exception:
    """An error whose innermost frame is in `module_name`, as if raised by that library."""
    namespace = {"__name__": module_name, "error": error}
    exec("def boom():\n    raise error\n", namespace)
    try:
        namespace["boom"]()
    except Exception as e:
        return e
    raise AssertionError("not raised")


def test_refused_by_config_library_is_a_plain_error_raised_inside_omegaconf_or_hydra(tmp_path):
    real = composition_error(["model.hidden_sizes.x=3"], tmp_path)  # OmegaConf indexes a list with `x`
    assert type(real) is ValueError and cli._refused_by_config_library(real)
    for module in ("omegaconf.omegaconf", "hydra._internal.config_loader_impl", "omegaconf", "hydra"):
        for error in (ValueError("v"), TypeError("t"), KeyError("k"), IndexError("i")):
            assert cli._refused_by_config_library(_raise_inside(module, error)), (module, error)
    assert not cli._refused_by_config_library(_raise_inside("src.training", ValueError("ours")))
    assert not cli._refused_by_config_library(_raise_inside("omegaconfig", ValueError("not omegaconf")))
    assert not cli._refused_by_config_library(_raise_inside("omegaconf.base", RuntimeError("not a value")))
    assert not cli._refused_by_config_library(ValueError("never raised: no traceback"))


# ---------------------------------------------------------------------------------------------
# mark_failed


def test_mark_failed_writes_status_error_config_unresolved_and_extras(tmp_path):
    cfg = OmegaConf.create({"seed": 3, "data": {"seed": "${seed}"}})
    cli.mark_failed(tmp_path, "optim.lr=0: must be > 0", cfg, epochs=2)
    assert json.loads((tmp_path / "results.json").read_text()) == {
        "status": "failed", "error": "optim.lr=0: must be > 0", "epochs": 2,
        "config": {"seed": 3, "data": {"seed": "${seed}"}}}
    cli.mark_failed(tmp_path, "stopped", status="interrupted")
    assert json.loads((tmp_path / "results.json").read_text()) == {"status": "interrupted", "error": "stopped"}


def test_mark_failed_with_a_config_that_cannot_be_converted_still_writes(tmp_path):
    cli.mark_failed(tmp_path, "bad", cfg=object())
    assert json.loads((tmp_path / "results.json").read_text()) == {"status": "failed", "error": "bad"}


# ---------------------------------------------------------------------------------------------
# Hydra's runtime config: single run or multirun, this job's overrides, the swept keys


@pytest.fixture
def hydra_runtime():
    """Set Hydra's runtime config (as a real app would) and give the previous one back after."""
    from hydra.core.hydra_config import HydraConfig

    saved = HydraConfig.instance().cfg

    def set_runtime(hydra: dict | None):
        HydraConfig.instance().cfg = None if hydra is None else OmegaConf.create({"hydra": hydra})

    yield set_runtime
    HydraConfig.instance().cfg = saved


def _multirun(sweep_dir, task=(), params=None):
    from hydra.types import RunMode

    return {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep_dir)}, "sweeper": {"params": params},
            "overrides": {"task": list(task)}}


def test_outside_hydra_nothing_is_swept(hydra_runtime):
    hydra_runtime(None)
    assert cli.is_multirun() is False
    assert cli.job_overrides() == []
    assert cli.swept_keys() == []


def test_a_single_run_is_not_a_multirun(hydra_runtime, tmp_path):
    from hydra.types import RunMode

    hydra_runtime({"mode": RunMode.RUN, "sweep": {"dir": str(tmp_path)}, "sweeper": {"params": {"seed": "1,2"}},
                   "overrides": {"task": ["optim=sgd", "seed=1"]}})
    assert cli.is_multirun() is False
    assert cli.job_overrides() == ["optim=sgd", "seed=1"]
    assert cli.swept_keys() == []


def test_swept_keys_are_the_presets_params_then_the_command_lines_sweeps(hydra_runtime, tmp_path):
    import yaml

    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "optim=sgd,adam", "init=xavier", "+extra=range(1,4)", "~gone=choice(1,2)", "lr=glob(*)",
        "x=interval(0,1)", "trainer.max_epochs=2", "seed=1,2", "n=range(5)", "c=choice(only)", "tag=a=b,c",
        "+XLA=1,2", "name=a=b", "model.hidden_sizes=[512,256,256,128]", "sizes=[1,2],[3]"]}}}))
    hydra_runtime(_multirun(tmp_path, task=["optim=sgd", "seed=1"], params={"seed": "1,2,3", "init": "a,b"}))
    assert cli.is_multirun() is True
    assert cli.job_overrides() == ["optim=sgd", "seed=1"]
    # as Hydra parses them: a list value is one value (its commas sweep nothing); a list of lists
    # sweeps; what Hydra's parser refuses (`tag=a=b,c`) never reaches a multirun.yaml
    assert cli.swept_keys() == ["seed", "init", "optim", "extra", "gone", "lr", "x", "n", "c", "XLA", "sizes"]


def test_a_job_dir_is_named_as_hydra_names_it_while_the_name_fits(hydra_runtime, tmp_path):
    from src.resolvers import MAX_DIR_NAME, job_dir_name

    hydra_runtime(_multirun(tmp_path))
    assert job_dir_name(3, "optim=sgd,seed=1") == "3_optim=sgd,seed=1"
    assert job_dir_name(0, "") == "0_"  # Hydra's `${hydra.job.num}_${hydra.job.override_dirname}`
    fits = "x=" + "a" * (MAX_DIR_NAME - 4)
    assert job_dir_name(7, fits) == f"7_{fits}" and len(f"7_{fits}") == MAX_DIR_NAME
    # what conf/hydra/default.yaml passes: the override_dirname's commas and brackets are one argument
    node = OmegaConf.create({"num": 0, "od": "model.hidden_sizes=[64,32],optim=sgd",
                             "name": "${job_dir_name:${num},${od}}"})
    assert node.name == "0_model.hidden_sizes=[64,32],optim=sgd"


def test_a_name_too_long_keeps_the_swept_overrides_and_a_hash_of_all(hydra_runtime, tmp_path):
    import hashlib

    import yaml

    from src.resolvers import MAX_DIR_NAME, job_dir_name

    fixed = [f"trainer.limit_{k}_batches={n}" for k, n in (("train", 5), ("val", 2), ("test", 2))] + [
        "callbacks=essential", "model.hidden_sizes=[512,256,256,128]", "data.batch_size=256", "init=kaiming",
        "optim.weight_decay=0.0", "trainer.accelerator=cpu", "trainer.deterministic=True"]
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "optim=sgd,adam", "seed=1,2", *fixed]}}}))
    hydra_runtime(_multirun(tmp_path))
    items = sorted([*fixed, "optim=adam", "seed=2"])
    od = ",".join(items)
    assert len(f"1_{od}") > MAX_DIR_NAME  # what Hydra would name it: too long for some file systems
    name = job_dir_name(1, od)
    assert name == f"1_optim=adam,seed=2,and_10_more_{hashlib.sha256(od.encode()).hexdigest()[:8]}"
    assert job_dir_name(1, od) == name  # the same job, the same dir: a sweep started again finds it
    other = od.replace("data.batch_size=256", "data.batch_size=128")
    assert job_dir_name(1, other) != name and job_dir_name(1, other).startswith("1_optim=adam,seed=2,and_10_more_")

    # the swept overrides alone too long: cut (at a character, never inside one), the hash keeps them apart
    long_value = "ü" * 150
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        f"+note='{long_value}',b", "seed=1,2"]}}}, allow_unicode=True))
    for od in (f"+note={long_value},seed=1", f"+note={long_value},seed=2"):
        name = job_dir_name(0, od)
        assert len(name.encode()) <= MAX_DIR_NAME and name.startswith("0_+note=üü") and "\ufffd" not in name
        assert name.endswith(f"and_0_more_{hashlib.sha256(od.encode()).hexdigest()[:8]}")
    assert job_dir_name(0, f"+note={long_value},seed=1") != job_dir_name(0, f"+note={long_value},seed=2")

    # a swept value that holds `=` is kept whole; with no swept override in the name, only the count
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "+tag='a=b','c=d'", *fixed]}}}))
    od = ",".join(sorted([*fixed, "+tag=a=b"]))
    assert job_dir_name(2, od).startswith("2_+tag=a=b,and_10_more_")
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": fixed}}}))
    od = ",".join(sorted(fixed))
    assert job_dir_name(4, od) == f"4_and_10_more_{hashlib.sha256(od.encode()).hexdigest()[:8]}"


def test_swept_keys_of_a_sweep_dir_read_its_sweepers_params_there_too(tmp_path):
    import yaml

    from src.resolvers import swept_keys_of

    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"params": {"+optim.lr": "interval(1e-4,1e-1)", "~x": "a,b", "seed": "1,2"}},
        "overrides": {"task": ["init=xavier,kaiming", "seed=1,2"]}}}))
    # what the report asks (no params given): the preset's params first, as Hydra saved them
    assert swept_keys_of(tmp_path) == ["optim.lr", "seed", "x", "init"]  # (safe_dump sorts the keys)
    assert swept_keys_of(tmp_path, {}) == ["init", "seed"]  # the params given win, none here
    assert swept_keys_of(tmp_path / "nowhere") == []


def test_swept_keys_without_multirun_yaml_are_the_presets(hydra_runtime, tmp_path):
    hydra_runtime(_multirun(tmp_path / "nowhere", params={"seed": "1,2"}))
    assert cli.swept_keys() == ["seed"]
    hydra_runtime(_multirun(tmp_path / "nowhere"))
    assert cli.swept_keys() == []


def test_swept_keys_with_an_empty_multirun_yaml(hydra_runtime, tmp_path):
    (tmp_path / "multirun.yaml").write_text("")
    hydra_runtime(_multirun(tmp_path, params={"seed": "1,2"}))
    assert cli.swept_keys() == ["seed"]
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides: {}\n")
    assert cli.swept_keys() == ["seed"]


# ---------------------------------------------------------------------------------------------
# What the libraries may print


LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
           "lightning_fabric.utilities.rank_zero", "pytorch_lightning.trainer.connectors.signal_connector",
           "torch._subclasses.fake_tensor")


@pytest.fixture
def restore_logging_and_warnings():
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    root = logging.getLogger()
    handlers = list(root.handlers)
    formatwarning = warnings.formatwarning
    with warnings.catch_warnings():
        yield
    warnings.formatwarning = formatwarning
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root.handlers[:] = handlers


def test_quiet_frameworks_raises_the_libraries_log_level(restore_logging_and_warnings):
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    cli.quiet_frameworks()
    assert [logging.getLogger(name).level for name in LOGGERS] == [logging.WARNING] * 5


STEP_CHECKPOINT = ('Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be '
                   'provided during `Trainer` instantiation. Please add the following callbacks: '
                   '["StepCheckpoint{\'monitor\': None, \'every_n_train_steps\': %d, \'train_time_interval\': None}"].')


@pytest.mark.parametrize("message, hidden", [
    ("Checkpoint directory /runs/a/checkpoints exists and is not empty.", True),
    ("The number of training batches (10) is smaller than the logging interval Trainer(log_every_n_steps=50).", True),
    ("The 'train_dataloader' does not have many workers which may be a bottleneck.", True),
    ("`isinstance(treespec, LeafSpec)` is deprecated", True),
    (STEP_CHECKPOINT % 0, True),  # an inert step checkpoint: nothing to restore
    (STEP_CHECKPOINT % 50, False),  # a real one missing: the user should know
    (STEP_CHECKPOINT % 0 + " and more", False),
    ("Checkpoint directory exists", False),
    # Lightning's, when no validation ran (limit_val_batches=0): the app's own warning says it
    ("`ModelCheckpoint(monitor='val/acc')` could not find the monitored key in the returned metrics: "
     "['train/loss', 'train/acc', 'epoch', 'step']. HINT: Did you call `log('val/acc', value)` in the "
     "`LightningModule`?", True),
    ("something else entirely", False),
])
def test_quiet_frameworks_hides_only_the_known_harmless_warnings(restore_logging_and_warnings, message, hidden):
    warnings.simplefilter("always")
    cli.quiet_frameworks()
    with warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("always", message="^(?!.*(LeafSpec|logging interval|many workers|Checkpoint "
                                                  "directory .* exists|every_n_train_steps': 0,|monitored key)).*$")
        warnings.warn(message, UserWarning, stacklevel=1)
    assert (len(seen) == 0) == hidden, [str(w.message) for w in seen]


def test_our_warnings_print_as_one_line_the_libraries_keep_their_source(restore_logging_and_warnings):
    import pytorch_lightning

    cli.quiet_frameworks()
    ours = str(cli.ROOT / "callbacks" / "diagnostics.py")
    assert warnings.formatwarning("no TensorBoard", UserWarning, ours, 264, "  rank_zero_warn(...)") == \
        "warning: no TensorBoard\n"
    theirs = str(Path(pytorch_lightning.__file__).parent / "trainer" / "trainer.py")
    assert warnings.formatwarning("slow", UserWarning, theirs, 7, "x = 1") == f"{theirs}:7: UserWarning: slow\n  x = 1\n"
    in_venv = str(cli.ROOT / ".venv" / "lib" / "python3.11" / "site-packages" / "lib.py")  # make's venv is in the repo
    assert warnings.formatwarning("slow", UserWarning, in_venv, 7, "x = 1") == f"{in_venv}:7: UserWarning: slow\n  x = 1\n"
    assert cli.one_line_warning("m", UserWarning, "/elsewhere/x.py", 3, "y") == "/elsewhere/x.py:3: UserWarning: m\n  y\n"


def test_in_a_terminal_log_lines_go_through_richs_console(restore_logging_and_warnings, monkeypatch, tmp_path):
    from rich.logging import RichHandler

    root = logging.getLogger()
    console, file = logging.StreamHandler(sys.stderr), logging.FileHandler(tmp_path / "job.log")
    console.setLevel(logging.INFO)
    root.handlers[:] = [console, file]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    cli.logs_above_the_progress_bar()
    assert root.handlers == [console, file]  # piped: unchanged
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    cli.logs_above_the_progress_bar()
    assert file in root.handlers and console not in root.handlers  # the file handler is a StreamHandler too
    rich = [h for h in root.handlers if isinstance(h, RichHandler)]
    assert len(rich) == 1 and rich[0].level == logging.INFO
    assert rich[0]._log_render.show_path is False  # a log line is the message, not our file name
    file.close()


# ---------------------------------------------------------------------------------------------
# run_task: each way a task ends


@pytest.fixture
def libraries_left_alone(monkeypatch):
    """run_task without its changes to the test process's warnings and log handlers."""
    monkeypatch.setattr(cli, "quiet_frameworks", lambda: None)
    monkeypatch.setattr(cli, "logs_above_the_progress_bar", lambda: None)


@pytest.fixture
def single_run(monkeypatch, libraries_left_alone):
    monkeypatch.setattr(cli, "is_multirun", lambda: False)


def _cfg(out, **extra):
    return OmegaConf.create({"paths": {"output_dir": str(out)}, "seed": 1, "data": {"seed": "${seed}"}, **extra})


def _results(out) -> dict:
    return json.loads((out / "results.json").read_text())


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def test_a_task_that_finishes_returns_its_value_and_writes_nothing(single_run, tmp_path, capsys):
    assert cli.run_task(lambda cfg: cfg.seed + 1, _cfg(tmp_path)) == 2
    assert not (tmp_path / "results.json").exists() and error_lines(capsys) == []


def test_bad_input_is_one_line_exit_2_and_a_failed_results_json(single_run, tmp_path, capsys):
    def task(cfg):
        raise ConfigError("seed=-1 must be an integer in [0, 2**32 - 1]")

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == cli.EXIT_USER_ERROR == 2
    assert error_lines(capsys) == ["error: seed=-1 must be an integer in [0, 2**32 - 1]"]
    assert _results(tmp_path) == {"status": "failed", "error": "seed=-1 must be an integer in [0, 2**32 - 1]",
                                  "config": {"paths": {"output_dir": str(tmp_path)}, "seed": 1,
                                             "data": {"seed": "${seed}"}}}


def test_no_run_dir_no_results_json(single_run, tmp_path, capsys):
    def task(cfg):
        raise ConfigError("bad")

    with pytest.raises(SystemExit):
        cli.run_task(task, _cfg(tmp_path / "never made"))
    assert not (tmp_path / "never made").exists()
    assert error_lines(capsys) == ["error: bad"]


def test_a_full_disk_is_the_users_to_fix_exit_2(single_run, tmp_path, capsys):
    def task(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == 2
    assert error_lines(capsys) == [f"error: no space left on device: {tmp_path / 'x'}"]
    assert _results(tmp_path)["status"] == "failed"


def test_a_disk_that_refuses_results_json_too_still_gives_the_line(single_run, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "atomic_write_json", refuse)
    with pytest.raises(SystemExit) as info:
        cli.run_task(lambda cfg: refuse(), _cfg(tmp_path))
    assert info.value.code == 2 and error_lines(capsys) == ["error: no space left on device"]


def test_a_crash_keeps_its_traceback_once_and_exits_1(single_run, tmp_path, capsys, caplog):
    def task(cfg):
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="src.cli"), pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == cli.EXIT_CRASH == 1
    assert error_lines(capsys) == ["error: RuntimeError: a bug"]
    crashed = [r for r in caplog.records if r.getMessage() == "crashed"]
    assert len(crashed) == 1 and crashed[0].exc_info[0] is RuntimeError
    assert _results(tmp_path) == {**_results(tmp_path), "status": "failed", "error": "RuntimeError: a bug"}


def test_bad_input_logs_no_traceback(single_run, tmp_path, capsys, caplog):
    with caplog.at_level(logging.DEBUG, logger="src.cli"), pytest.raises(SystemExit):
        cli.run_task(lambda cfg: (_ for _ in ()).throw(ConfigError("bad")), _cfg(tmp_path))
    assert [r for r in caplog.records if r.getMessage() == "crashed"] == []


def test_an_interrupted_fit_says_how_to_resume_and_exits_128_plus_the_signal(single_run, tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"status": "interrupted"}')
    (tmp_path / "checkpoints").mkdir()  # what makes it resumable (a stop at once before it: start again)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")

    def task(cfg):
        stopped = Interrupted(signal.SIGTERM)
        stopped.reported = True  # as train() does after writing results.json
        raise stopped

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == 128 + signal.SIGTERM
    assert error_lines(capsys) == [f"error: interrupted by SIGTERM; resume with: python train.py ckpt_path={tmp_path}"]
    assert _results(tmp_path) == {"status": "interrupted"}  # train()'s results.json, untouched


def _stop_in(tmp_path, capsys, raised: BaseException, checkpoint: bool):
    if checkpoint:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")

    def task(cfg):
        raise raised

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    return info.value.code, error_lines(capsys), _results(tmp_path)


def test_a_stop_after_the_fit_with_a_checkpoint_writes_results_json_to_resume(single_run, tmp_path, capsys):
    """E.g. SIGTERM during the test: Lightning raises its SIGTERMException (a SystemExit, which
    exited 0 with no results.json)."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    code, lines, results = _stop_in(tmp_path, capsys, SIGTERMException(), checkpoint=True)
    resume = f"python train.py ckpt_path={tmp_path}"
    assert code == 143 and lines == [f"error: interrupted by SIGTERM; resume with: {resume}"]
    assert results == {"status": "interrupted", "error": "interrupted by SIGTERM", "signal": "SIGTERM",
                       "resume": resume, "config": OmegaConf.to_container(_cfg(tmp_path))}


def test_a_stop_before_the_first_checkpoint_says_start_it_again(single_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/somewhere/train.py", "optim=sgd", "model.hidden_sizes=[64, 32]"])
    code, lines, results = _stop_in(tmp_path, capsys, KeyboardInterrupt(), checkpoint=False)
    again = "python train.py optim=sgd 'model.hidden_sizes=[64, 32]'"  # as a shell reads it back
    assert code == 130
    assert lines == [f"error: interrupted by SIGINT before the first checkpoint; start it again: {again}"]
    assert results["status"] == "interrupted" and results["signal"] == "SIGINT"
    assert results["error"] == "interrupted by SIGINT before the first checkpoint"
    assert results["again"] == again and "resume" not in results


@pytest.mark.parametrize("checkpoint, reported", [(False, False), (True, False), (True, True)])
def test_a_stopped_sweep_job_says_to_continue_the_sweep(hydra_runtime, monkeypatch, libraries_left_alone, tmp_path,
                                                        capsys, checkpoint, reported):
    """Started again, the sweep skips its finished jobs and resumes this one (continue_sweep_job)."""
    hydra_runtime(_multirun(tmp_path / "sweep"))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "optim=sgd,adam"])
    job = tmp_path / "sweep" / "1"
    job.mkdir(parents=True)
    if checkpoint:
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_bytes(b"")
    if reported:
        (job / "results.json").write_text('{"status": "interrupted"}')

    def task(cfg):
        stopped = Interrupted(signal.SIGTERM)
        stopped.reported = reported
        raise stopped

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(job))
    again = f"python train.py -m optim=sgd,adam hydra.sweep.dir={tmp_path / 'sweep'}"
    error = "interrupted by SIGTERM" + ("" if checkpoint else " before the first checkpoint")
    assert info.value.code == 143
    assert error_lines(capsys) == [f"error: {error}; continue the sweep: {again}"]
    results = _results(job)
    if reported:
        assert results == {"status": "interrupted"}
    else:
        assert results["error"] == error
        assert results.get("resume" if checkpoint else "again") == (
            f"python train.py ckpt_path={job}" if checkpoint else again)


def test_a_stop_without_a_run_dir_writes_nothing(single_run, tmp_path, capsys):
    def task(cfg):
        raise Interrupted(signal.SIGTERM, at_once=True)

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path / "never made"))
    assert info.value.code == 143 and not (tmp_path / "never made").exists()


def test_a_stop_a_library_turned_into_another_error_is_still_a_stop(single_run, tmp_path, capsys):
    """SIGTERM during the start-up's imports raised inside numpy's lazy attribute import, which
    caught it as an Exception and failed with a RecursionError: the run was marked failed with
    the traceback of a crash. A signal received makes what follows an interruption."""
    def task(cfg):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises Interrupted here
        except Exception:  # a library's fallback that does not expect it
            raise RecursionError("maximum recursion depth exceeded") from None

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == 143
    (line,) = error_lines(capsys)
    assert line.startswith("error: interrupted by SIGTERM before the first checkpoint; start it again: ")
    assert _results(tmp_path)["status"] == "interrupted"
    # without a signal the same error is a crash
    with pytest.raises(SystemExit) as info:
        cli.run_task(lambda cfg: (_ for _ in ()).throw(RecursionError("deep")), _cfg(tmp_path))
    assert info.value.code == cli.EXIT_CRASH and _results(tmp_path)["status"] == "failed"
    # a signal only noted (a fit's: it stops at the next batch boundary), then a real failure: failed
    def noted_then_broken(cfg):
        with mock.patch("signal.getsignal", return_value=None):  # Lightning's handler in charge
            os.kill(os.getpid(), signal.SIGTERM)
        raise OSError(errno.EIO, "Input/output error", "last.ckpt")

    with pytest.raises(SystemExit) as info:
        cli.run_task(noted_then_broken, _cfg(tmp_path))
    assert info.value.code == 2 and _results(tmp_path)["status"] == "failed"


def test_another_system_exit_passes_through(single_run, tmp_path):
    def task(cfg):
        sys.exit(1)  # e.g. Lightning's answer to a KeyboardInterrupt it caught itself

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == 1 and not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_real_signal_outside_a_fit_stops_the_task_at_once(single_run, tmp_path, capsys, signum, request):
    """Start-up (imports, data, building) used to die of SIGTERM with no results.json, and of
    Ctrl-C with a KeyboardInterrupt traceback."""
    def not_in_charge(s, frame):  # what the process had: reached only if run_task set no handler
        raise AssertionError(f"signal {s} reached the process's own handler")

    for s in (signal.SIGTERM, signal.SIGINT):  # (not the default: it would end the test process)
        request.addfinalizer(functools.partial(signal.signal, s, signal.signal(s, not_in_charge)))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    after = []

    def task(cfg):
        os.kill(os.getpid(), signum)
        after.append("not stopped")

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == 128 + signum and after == []
    assert _results(tmp_path)["status"] == "interrupted"
    assert {s: signal.getsignal(s) for s in before} == before  # the process's handlers are back


def test_while_another_handler_is_in_charge_a_signal_is_only_noted(single_run, tmp_path, capsys):
    """During a fit Lightning's SIGTERM handler calls ours after its own: the fit stops at a batch
    boundary, not here. If nothing stopped, the run finished: exit 128 + signal, results kept."""
    (tmp_path / "results.json").write_text('{"status": "ok"}')

    def task(cfg):
        ours = signal.getsignal(signal.SIGTERM)
        noted = []
        signal.signal(signal.SIGTERM, lambda s, f: (noted.append(s), ours(s, f)))  # like Lightning's
        os.kill(os.getpid(), signal.SIGTERM)
        signal.signal(signal.SIGTERM, ours)
        return noted

    with pytest.raises(SystemExit) as info:
        cli.run_task(task, _cfg(tmp_path))
    assert info.value.code == 143
    assert error_lines(capsys) == ["error: interrupted by SIGTERM after the run had finished (its results.json "
                                   "is complete)"]
    assert _results(tmp_path) == {"status": "ok"}


def test_stop_signals_raise_at_once_and_give_back_what_they_replaced(request):
    stop = cli.StopSignals()
    request.addfinalizer(functools.partial(signal.signal, signal.SIGTERM, signal.getsignal(signal.SIGTERM)))
    signal.signal(signal.SIGTERM, lambda s, f: pytest.fail("StopSignals set no handler"))
    before = signal.getsignal(signal.SIGTERM)
    for _ in range(2):  # the same object, twice
        with pytest.raises(Interrupted) as e, stop:
            os.kill(os.getpid(), signal.SIGTERM)
        assert e.value.signum == signal.SIGTERM and e.value.at_once  # no checkpoint of a half-done step
        assert signal.getsignal(signal.SIGTERM) == before
    stop._previous = {signal.SIGTERM: None}  # a handler not set from Python: the default comes back
    try:
        stop.__exit__(None, None, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_sweep_dir_given_is_not_given_twice(hydra_runtime, monkeypatch, tmp_path):
    hydra_runtime(_multirun(tmp_path / "sweep"))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=1,2", "hydra.sweep.dir=mine"])
    line = cli.interrupted_line(Interrupted(signal.SIGTERM), _cfg(tmp_path / "job"))
    assert line == ("interrupted by SIGTERM before the first checkpoint; continue the sweep: "
                    "python train.py -m seed=1,2 hydra.sweep.dir=mine")


@pytest.mark.parametrize("extra, checkpointing", [({}, True), ({"task_name": "compare_optimizers"}, True),
                                                   ({"task_name": "probe"}, False), ({"task_name": "eval"}, False),
                                                   ({"task_name": "landscape"}, False), ({"surface": {}}, False)])
def test_a_task_without_checkpoints_is_not_stopped_before_its_first_one(single_run, tmp_path, monkeypatch,
                                                                        extra, checkpointing):
    """probe.py said `interrupted by SIGTERM before the first checkpoint`: it writes none."""
    monkeypatch.setattr(sys, "argv", ["probe.py", "init=normal"])
    line = cli.interrupted_line(Interrupted(signal.SIGTERM), _cfg(tmp_path, **extra))
    said = "interrupted by SIGTERM before the first checkpoint" if checkpointing else "interrupted by SIGTERM"
    assert line == f"{said}; start it again: python probe.py init=normal"
    assert _results(tmp_path)["error"] == said and _results(tmp_path)["again"] == "python probe.py init=normal"


def test_a_signal_the_shell_ignores_stays_ignored(single_run, tmp_path):
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's Ctrl-C
    try:
        seen = []
        cli.run_task(lambda cfg: seen.append(signal.getsignal(signal.SIGINT)), _cfg(tmp_path))
        assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_outside_the_main_thread_no_handler_is_set(single_run, tmp_path):
    import threading

    seen = []
    thread = threading.Thread(target=lambda: cli.run_task(
        lambda cfg: seen.append(isinstance(signal.getsignal(signal.SIGTERM), cli.StopSignals)), _cfg(tmp_path)))
    thread.start()
    thread.join()
    assert seen == [False]


@pytest.mark.parametrize("error", [ConfigError("bad value"), RuntimeError("a bug")])
def test_in_a_multirun_a_failed_job_returns_and_the_sweep_goes_on(monkeypatch, libraries_left_alone, tmp_path, capsys,
                                                                  error):
    monkeypatch.setattr(cli, "is_multirun", lambda: True)

    def task(cfg):
        raise error

    assert cli.run_task(task, _cfg(tmp_path)) is None
    assert len(error_lines(capsys)) == 1 and _results(tmp_path)["status"] == "failed"


def test_run_task_quiets_the_libraries_unless_verbose(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "quiet_frameworks", lambda: calls.append("quiet"))
    monkeypatch.setattr(cli, "logs_above_the_progress_bar", lambda: calls.append("rich"))
    cli.run_task(lambda cfg: None, _cfg(tmp_path))
    assert calls == ["quiet", "rich"]
    calls.clear()
    cli.run_task(lambda cfg: None, _cfg(tmp_path, verbose=True))
    assert calls == ["rich"]


# ---------------------------------------------------------------------------------------------
# run_app: errors before the task (composition), and the resume argv


@pytest.fixture
def app_env(monkeypatch):
    # run_app sets HYDRA_FULL_ERROR=1 in the process; setenv (not delenv of an unset variable,
    # which records nothing) takes it back after the test, or every later train.py subprocess
    # would inherit it and keep its traceback.
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    return monkeypatch


def test_run_app_turns_hydra_errors_into_one_line_and_exit_2(app_env, tmp_path, capsys):
    import os

    def main():
        assert os.environ["HYDRA_FULL_ERROR"] == "1"  # Hydra raises instead of printing its five lines
        compose_config(["optim=adamw"], tmp_path)

    with pytest.raises(SystemExit) as info:
        cli.run_app(main)
    assert info.value.code == 2
    assert error_lines(capsys) == ["error: optim=adamw is not an available option; available: adam, sgd, sgd_mom, "
                                   "torch_adam, torch_sgd, torch_sgd_mom"]


def test_run_app_names_an_override_omegaconf_could_not_apply(app_env, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.run_app(lambda: compose_config(["model.hidden_sizes.x=3"], tmp_path))
    assert info.value.code == 2
    assert error_lines(capsys) == ["error: an override could not be applied: ValueError: invalid literal for "
                                   "int() with base 10: 'x'"]


@pytest.mark.parametrize("error", [ValueError("our bug"), RuntimeError("our bug")])
def test_run_app_lets_a_crash_outside_the_libraries_raise(app_env, error):
    def main():
        raise error

    with pytest.raises(type(error)):
        cli.run_app(main)


def test_run_app_a_full_disk_is_one_line(app_env, capsys):
    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs")

    with pytest.raises(SystemExit) as info:
        cli.run_app(main)
    assert info.value.code == 2 and error_lines(capsys) == ["error: no space left on device: /runs"]


def _used_run_dir(tmp_path, status=None, checkpoints=(), name="run"):
    run = tmp_path / name
    (run / "checkpoints").mkdir(parents=True)
    for name in checkpoints:
        (run / "checkpoints" / name).write_bytes(b"")
    if status is not None:
        (run / "results.json").write_text(json.dumps({"status": status}))
    return run


@pytest.mark.parametrize("status, checkpoints, held, resume", [
    ("ok", ["last.ckpt", "best-epoch=03.ckpt"], "a finished run (status ok, 2 checkpoints)", False),
    ("diverged", [], "a finished run (status diverged)", False),
    ("interrupted", ["last.ckpt"], "a stopped run (status interrupted, 1 checkpoint)", True),
    ("failed", ["last.ckpt"], "a stopped run (status failed, 1 checkpoint)", True),  # a crash after a checkpoint
    (None, ["last.ckpt"], "a stopped run (no results.json, 1 checkpoint)", True),  # SIGKILL
    (None, ["best-epoch=00.ckpt"], "a stopped run (no results.json, 1 checkpoint)", False),
])
def test_a_new_run_in_a_dir_that_holds_a_run_is_refused_before_hydra_writes(app_env, tmp_path, capsys, status,
                                                                           checkpoints, held, resume):
    run = _used_run_dir(tmp_path, status, checkpoints)
    before = sorted(p.name for p in run.rglob("*"))
    app_env.setattr(sys, "argv", ["train.py", "optim=sgd", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit) as info:
        cli.run_app(lambda: pytest.fail("Hydra must not start"), resume=True)
    assert info.value.code == 2
    again = f"resume it with: python train.py ckpt_path={run}; or " if resume else ""
    assert error_lines(capsys) == [f"error: hydra.run.dir={run} already holds {held}; {again}give a new "
                                   "hydra.run.dir, or delete that one: a new run there would overwrite its "
                                   "results.json and mix their checkpoints"]
    assert sorted(p.name for p in run.rglob("*")) == before


@pytest.mark.parametrize("extra", [["ckpt_path="], ["ckpt_path=null"], ["seed"]])  # no checkpoint; Hydra's own error later
def test_a_used_sweep_job_dir_given_as_a_run_dir_is_named_whole(tmp_path, extra):
    run = _used_run_dir(tmp_path, "ok", ["last.ckpt"], name="0_optim=sgd,seed=1")
    with pytest.raises(UserError, match=f"^hydra.run.dir={re.escape(str(run))} already holds a finished run "):
        cli.refuse_a_used_run_dir(["train.py", *extra, f"hydra.run.dir={run}"])


@pytest.mark.parametrize("argv", [
    ["hydra.run.dir={run}", "ckpt_path={run}"],  # resuming it
    ["ckpt_path={run}/checkpoints/last.ckpt", "hydra.run.dir={run}"],
    ["-m", "hydra.run.dir={run}", "seed=1,2"],  # a sweep's own dirs: continue_sweep_job
    ["--multirun", "hydra.run.dir={run}"],
    ["hydra.run.dir={run}/other"],  # another dir
    ["hydra.run.dir={run}", "hydra.run.dir={run}/other"],  # the last one counts, as in Hydra
    ["optim=sgd"],  # Hydra's own timestamped dir
])
def test_resuming_a_sweep_and_other_dirs_are_not_refused(app_env, tmp_path, argv):
    run = _used_run_dir(tmp_path, "interrupted", ["last.ckpt"])
    cli.refuse_a_used_run_dir(["train.py", *(a.format(run=run) for a in argv)])


@pytest.mark.parametrize("given", ["{other}", "{other}/checkpoints/last.ckpt"])
def test_another_runs_checkpoint_resumed_into_a_dir_that_holds_a_run_is_refused(tmp_path, given):
    # it would overwrite the finished run's results.json as a new run would, and mix their checkpoints
    run = _used_run_dir(tmp_path, "ok", ["last.ckpt", "best-epoch=03.ckpt"])
    other = _used_run_dir(tmp_path, "interrupted", ["last.ckpt"], name="other")
    with pytest.raises(UserError, match=f"^hydra.run.dir={re.escape(str(run))} already holds a finished run "
                                        r"\(status ok, 2 checkpoints\); give a new hydra.run.dir"):
        cli.refuse_a_used_run_dir(["train.py", f"ckpt_path={given.format(other=other)}", f"hydra.run.dir={run}"])


@pytest.mark.parametrize("sweep", [True, False])
def test_a_stop_outside_every_job_is_one_line_with_the_way_on(app_env, tmp_path, capsys, sweep):
    """SIGTERM between a sweep's jobs (or before a run's dir exists) reached no job's handler: the
    process died silently, or Ctrl-C printed Hydra's KeyboardInterrupt traceback."""
    import signal

    from src import hydra_callbacks
    from src.errors import Interrupted

    def main():
        if sweep:
            hydra_callbacks.started_sweep.update(dir=tmp_path / "sw", made=None)
        raise Interrupted(signal.SIGTERM)

    app_env.setattr(sys, "argv", ["train.py", *(["-m"] if sweep else []), "optim=sgd,adam" if sweep else "optim=sgd"])
    with pytest.raises(SystemExit) as info:
        cli.run_app(main)
    assert info.value.code == 128 + signal.SIGTERM
    assert error_lines(capsys) == ([f"error: interrupted by SIGTERM between the sweep's jobs; continue the sweep: "
                                    f"python train.py -m optim=sgd,adam hydra.sweep.dir={tmp_path / 'sw'}"] if sweep else
                                   ["error: interrupted by SIGTERM before the run started; start it again: "
                                    "python train.py optim=sgd"])
    # the app's own handler raises what Hydra's job wrapper (`except Exception`: the job failed, go
    # on) cannot catch: a SIGTERM in a job's last lines was swallowed there and the sweep went on, exit 0
    from src.errors import StopRequested

    with cli.StopSignals(outside_jobs=True):
        with pytest.raises(StopRequested) as stop:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except Exception:  # noqa: BLE001  (as Hydra's run_job does)
                pytest.fail("an Exception would be swallowed by Hydra's job wrapper")
    assert not isinstance(stop.value, Exception) and stop.value.interrupted.signum == signal.SIGTERM
    # OmegaConf rebuilds an exception from its message (type(e)(text)): the signal survives it
    rebuilt = Interrupted("interrupted by SIGTERM\n    full_key: name")
    assert rebuilt.signum == signal.SIGTERM and rebuilt.at_once and rebuilt.exit_code == 143
    assert Interrupted("no name here").signum == signal.SIGINT


def test_a_refused_resume_gets_its_records_back_but_not_once_it_trained(tmp_path):
    import os

    run = _used_run_dir(tmp_path, "ok", ["last.ckpt"])
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- optim=sgd\n")
    argv = ["train.py", f"ckpt_path={run}", f"hydra.run.dir={run}"]
    kept = cli.RunRecords.of_the_resumed_run(argv)
    ok = (run / "results.json").read_bytes()

    def attempt():  # what a resume does to the records before it fails
        (run / "results.json").write_text('{"status": "failed"}')
        (run / ".hydra" / "overrides.yaml").write_text("- optim.lr=abc\n")
        (run / ".hydra" / "config.yaml").write_text("new: 1\n")  # there was none

    attempt()
    kept.restore()  # refused before training: the run as it was
    assert (run / "results.json").read_bytes() == ok
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- optim=sgd\n"
    assert not (run / ".hydra" / "config.yaml").exists()
    attempt()
    last = run / "checkpoints" / "last.ckpt"
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))  # it trained and saved
    kept.restore()  # then failed: that ending is the run's own
    assert (run / "results.json").read_text() == '{"status": "failed"}'
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- optim.lr=abc\n"
    assert cli.RunRecords.of_the_resumed_run(["train.py", f"hydra.run.dir={run}"]) is None  # not a resume


@pytest.mark.parametrize("app", ["probe.py", "eval.py", "landscape.py", "surfaces.py", "train.py"])
def test_another_apps_run_dir_is_refused_before_hydra_writes(app_env, tmp_path, capsys, app):
    """`probe.py hydra.run.dir=<a train.py run>` replaced the run's results.json with probe's (and
    eval.py's failure marked a finished training run `failed`)."""
    run = _used_run_dir(tmp_path, "ok", ["last.ckpt"])
    (run / ".hydra").mkdir(exist_ok=True)
    made_by = "probe" if app == "train.py" else "train"
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {made_by}\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    app_env.setattr(sys, "argv", [app, f"hydra.run.dir={run}", f"ckpt_path={run}"])
    with pytest.raises(SystemExit) as info:
        cli.run_app(lambda: pytest.fail("Hydra must not start"), resume=app == "train.py")
    assert info.value.code == 2
    assert error_lines(capsys) == [f"error: hydra.run.dir={run} holds a run of {made_by}.py; {app} would overwrite "
                                   "its results.json and .hydra/: give a new hydra.run.dir (or leave it out)"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # its own kind of run dir, a dir Hydra did not make, or a sweep: not this check's business
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {Path(app).stem}\n")
    cli.refuse_a_run_dir_of_another_app([app, f"hydra.run.dir={run}"])
    cli.refuse_a_run_dir_of_another_app([app, f"hydra.run.dir={tmp_path / 'new'}"])
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: other\n")
    cli.refuse_a_run_dir_of_another_app([app, "-m", f"hydra.run.dir={run}"])


def test_a_missing_checkpoint_is_left_to_resume_argv_to_name(tmp_path):
    run = _used_run_dir(tmp_path, "ok", ["last.ckpt"])
    cli.refuse_a_used_run_dir(["train.py", f"ckpt_path={tmp_path}/nope", f"hydra.run.dir={run}"])


@pytest.mark.parametrize("status, results", [("failed", None), ("interrupted", None), (None, "{not json"),
                                             (None, "[1]"), (None, None)])
def test_a_run_that_failed_on_bad_input_may_be_started_again_in_its_dir(tmp_path, status, results):
    # also one stopped before its first checkpoint: its results.json says to start the same command again
    run = _used_run_dir(tmp_path, status)
    if results is not None:
        (run / "results.json").write_text(results)
    cli.refuse_a_used_run_dir(["train.py", f"hydra.run.dir={run}", "ckpt_path=null"])


def test_run_app_keeps_the_traceback_a_user_asked_for(app_env, tmp_path, capsys):
    from hydra.errors import MissingConfigException

    app_env.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingConfigException):
        cli.run_app(lambda: compose_config(["optim=adamw"], tmp_path))
    with pytest.raises(ValueError):
        cli.run_app(lambda: compose_config(["model.hidden_sizes.x=3"], tmp_path))
    assert error_lines(capsys) == []


def _refused_sweep(sweep_dir, *other_files):
    """What Hydra leaves when a multirun is refused before its first job: the dir, multirun.yaml."""
    from omegaconf import OmegaConf

    from src import hydra_callbacks

    def main():
        hydra_callbacks.EmptySweepGuard().on_multirun_start(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for name in ("multirun.yaml", *other_files):
            (sweep_dir / name).write_text("x")
        raise ConfigError("refused")
    return main


def test_a_refused_multirun_takes_back_the_folders_it_made(app_env, tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    main = _refused_sweep(tmp_path / "logs" / "multiruns" / "2026-11-30")
    with pytest.raises(SystemExit) as info:
        cli.run_app(main)
    assert info.value.code == 2 and error_lines(capsys) == ["error: refused"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["logs"]  # the folder that was there stays


def test_a_refused_multirun_takes_back_what_it_made_after_a_crash_too(app_env, tmp_path):
    from src import hydra_callbacks

    main = _refused_sweep(tmp_path / "a" / "b")
    with pytest.raises(ConfigError):  # the user asked for the traceback: it is kept, the folders go
        app_env.setenv("HYDRA_FULL_ERROR", "1")
        cli.run_app(main)
    assert list(tmp_path.iterdir()) == []
    assert hydra_callbacks.forget_sweep_that_started_no_job() is None  # nothing left to take back


@pytest.mark.parametrize("there_before, other", [(True, ()), (False, ("0_optim=sgd",)), (False, (".hydra",))])
def test_a_refused_multirun_leaves_a_dir_that_was_there_or_holds_more(app_env, tmp_path, there_before, other):
    sweep_dir = tmp_path / "sweep"
    if there_before:  # the same sweep continued: hydra.sweep.dir=<its dir>
        sweep_dir.mkdir()
    main = _refused_sweep(sweep_dir, *other)
    with pytest.raises(SystemExit):
        cli.run_app(main)
    assert sorted(p.name for p in sweep_dir.iterdir()) == sorted(["multirun.yaml", *other])


def test_what_a_sweep_made_is_taken_back_even_before_multirun_yaml(tmp_path):
    from src import hydra_callbacks

    sweep_dir = tmp_path / "made" / "sweep"
    hydra_callbacks.EmptySweepGuard().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    sweep_dir.mkdir(parents=True)  # a launcher that failed between the mkdir and multirun.yaml
    assert hydra_callbacks.forget_sweep_that_started_no_job() == tmp_path / "made"
    assert list(tmp_path.iterdir()) == []


def test_a_later_app_does_not_take_back_an_earlier_apps_sweep(app_env, tmp_path):
    with pytest.raises(ConfigError):
        _refused_sweep(tmp_path / "sweep")()  # an earlier app of this process, outside run_app
    with pytest.raises(SystemExit):
        cli.run_app(lambda: compose_config(["optim=adamw"], tmp_path))
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()


def test_a_refused_multirun_whose_folder_cannot_go_is_left(app_env, tmp_path, monkeypatch):
    from pathlib import Path

    main = _refused_sweep(tmp_path / "a" / "sweep")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "rmdir", refuse)
    with pytest.raises(SystemExit) as info:
        cli.run_app(main)
    assert info.value.code == 2  # the error line still comes, about the input, not the disk
    assert list((tmp_path / "a" / "sweep").iterdir()) == []


def _run(tmp_path, overrides=("optim=sgd", "seed=3", "ckpt_path=old"), checkpoint=True):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    if overrides is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run


def test_run_app_with_resume_rewrites_argv_before_hydra_reads_it(app_env, tmp_path, capsys):
    run = _run(tmp_path)
    app_env.setattr(sys, "argv", ["train.py", f"ckpt_path={run}"])
    seen = []
    cli.run_app(lambda: seen.append(list(sys.argv)), resume=True)
    assert seen == [["train.py", "optim=sgd", "seed=3", f"ckpt_path={run}", f"hydra.run.dir={run.resolve()}"]]
    seen.clear()
    app_env.setattr(sys, "argv", ["train.py", f"ckpt_path={run}"])
    cli.run_app(lambda: seen.append(list(sys.argv)))  # resume=False: argv as given
    assert seen == [["train.py", f"ckpt_path={run}"]]


def test_run_app_resume_of_a_run_without_checkpoint_is_one_line(app_env, tmp_path, capsys):
    run = _run(tmp_path, checkpoint=False)
    app_env.setattr(sys, "argv", ["train.py", f"ckpt_path={run}"])
    with pytest.raises(SystemExit) as info:
        cli.run_app(lambda: None, resume=True)
    assert info.value.code == 2
    assert error_lines(capsys) == [f"error: ckpt_path={run}: this run has no checkpoint yet; start it again with "
                                   "the same overrides: python train.py optim=sgd seed=3"]


# ---------------------------------------------------------------------------------------------
# resume_argv


def test_resume_a_run_dir_with_its_overrides_under_the_new_ones(tmp_path, capsys):
    run = _run(tmp_path, overrides=["optim=sgd", "seed=3", "+extra=1", "ckpt_path=old", "~gone"])
    argv = ["train.py", "--config-dir=x", "seed=5", "extra=2", f"ckpt_path={run}"]
    assert cli.resume_argv(argv) == ["train.py", "optim=sgd", "~gone", "--config-dir=x", "seed=5", "extra=2",
                                     f"ckpt_path={run}", f"hydra.run.dir={run.resolve()}"]
    ckpt = (run / "checkpoints" / "last.ckpt").resolve()
    assert capsys.readouterr().err == (f"resuming {ckpt} in {run.resolve()} with its overrides: optim=sgd ~gone\n")


def test_resume_the_checkpoint_file_itself_and_the_last_ckpt_path_given_wins(tmp_path, capsys):
    run = _run(tmp_path, overrides=None)
    ckpt = run / "checkpoints" / "last.ckpt"
    argv = ["train.py", "ckpt_path=/nonexistent", f"ckpt_path={ckpt}"]
    assert cli.resume_argv(argv) == [*argv, f"hydra.run.dir={run.resolve()}"]
    assert capsys.readouterr().err == f"resuming {ckpt.resolve()} in {run.resolve()}\n"  # no overrides.yaml


def test_resume_a_sweep_jobs_dir_whose_name_holds_equals_signs(tmp_path):
    job = tmp_path / "multirun" / "0_optim=sgd,seed=1"
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"")
    # quoted, as a stopped job prints it: unquoted, Hydra's parser stops at the second `=`
    argv = ["train.py", f"ckpt_path='{job}'"]
    assert cli.resume_argv(argv) == [*argv, f"hydra.run.dir='{job.resolve()}'"]


def test_a_bare_argument_is_not_an_override_to_keep(tmp_path):
    run = _run(tmp_path, overrides=["seed=3", "optim=sgd"])
    argv = ["train.py", "--config-dir", "seed", f"ckpt_path={run}"]  # a config dir named `seed`
    assert cli.resume_argv(argv) == ["train.py", "seed=3", "optim=sgd", *argv[1:], f"hydra.run.dir={run.resolve()}"]


def test_resume_keeps_a_run_dir_the_user_chose(tmp_path):
    run = _run(tmp_path, overrides=["optim=sgd", "hydra.run.dir=/old"])
    argv = ["train.py", f"ckpt_path={run}", "hydra.run.dir=/elsewhere"]
    assert cli.resume_argv(argv) == ["train.py", "optim=sgd", *argv[1:]]


def test_resume_a_checkpoint_outside_a_run_dir_in_a_new_run(tmp_path, capsys):
    ckpt = tmp_path / "weights.ckpt"
    ckpt.write_bytes(b"")
    argv = ["train.py", f"ckpt_path={ckpt}"]
    assert cli.resume_argv(argv) == argv
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [
    ["train.py", "optim=sgd"],
    ["train.py", "ckpt_path=null"],
    ["train.py", "ckpt_path="],
    ["train.py", "-m", "ckpt_path=/nonexistent"],
    ["train.py", "--multirun", "ckpt_path=/nonexistent"],
    ["train.py", "--ckpt_path=/nonexistent"],  # not an override: Hydra refuses it itself
])
def test_what_is_not_a_resume_is_left_alone(argv):
    assert cli.resume_argv(list(argv)) == argv


def test_resume_of_a_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=f"^ckpt_path={tmp_path}/nope does not exist"):
        cli.resume_argv(["train.py", f"ckpt_path={tmp_path}/nope"])


def test_key_strips_add_and_delete_prefixes():
    assert [cli.override_key(a) for a in ("seed=1", "+extra=2", "++x.y=3", "~gone", "~gone=1", "a=b=c", "+XLA=1")] == [
        "seed", "extra", "x.y", "gone", "gone", "a", "XLA"]


# ---------------------------------------------------------------------------------------------
# The start block


def test_start_line_of_the_default_run(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cli.start_line(cfg) == ("optim=adam lr=0.001 · init=kaiming · model relu [512,256,256,128] · "
                                   "40 epochs\n  accelerator=auto · seed 42")  # 80 columns a line


def test_start_line_names_every_choice_a_user_makes(tmp_path):
    cfg = compose_config(["optim=sgd_mom", "optim.weight_decay=0.0001", "init=normal", "init.std=0.05",
                          "model.act_fn=tanh", "model.hidden_sizes=[64, 32]", "trainer.max_epochs=3",
                          "trainer.accelerator=cpu", "seed=7"], tmp_path)
    assert cli.start_line(cfg) == ("optim=sgd_mom lr=0.1 momentum=0.9 weight_decay=0.0001 · init=normal std=0.05"
                                   "\n  model tanh [64,32] · 3 epochs · accelerator=cpu · seed 7")


def test_start_line_says_one_epoch_in_the_singular(tmp_path):
    cfg = compose_config(["trainer.max_epochs=1"], tmp_path)
    assert " · 1 epoch\n  accelerator=auto · " in cli.start_line(cfg)


def test_start_line_without_a_trainer_or_names():
    cfg = OmegaConf.create({"optim": {"lr": 1e-05, "weight_decay": 0.0, "_target_": "x"},
                            "init": {"_target_": "y", "gain": 2.0}, "model": {"act_fn": "relu"}, "seed": 0})
    assert cli.start_line(cfg) == "optim=? lr=1e-05 · init=? gain=2 · model relu [] · seed 0"


@pytest.mark.parametrize("mode", ["false", "none", "off", "False", False, None])
def test_print_start_off(tmp_path, capsys, mode):
    cfg = compose_config([], tmp_path)
    cfg.print_config = mode
    cli.print_start(cfg)
    assert capsys.readouterr().out == ""


def test_print_start_on_a_ddp_rank_other_than_0_prints_nothing(tmp_path, capsys, monkeypatch):
    """trainer=ddp_sim printed the start block twice, once per process."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    cfg = compose_config([], tmp_path)
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    cli.print_start(cfg)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    cli.print_start(cfg)
    assert capsys.readouterr().out.startswith("optim=")


def test_print_start_compact_is_two_lines(tmp_path, capsys):
    cfg = compose_config([], tmp_path)
    cli.print_start(cfg)
    assert capsys.readouterr().out == f"{cli.start_line(cfg)}\nrun dir: {tmp_path}\n"
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # no struct flag
    del cfg["print_config"]  # a config without the key (another entry script's): compact
    cli.print_start(cfg)
    assert capsys.readouterr().out == f"{cli.start_line(cfg)}\nrun dir: {tmp_path}\n"


def test_print_start_full_shows_every_group_resolved_then_the_line(tmp_path, capsys):
    cfg = compose_config(["print_config=full", "seed=11"], tmp_path)
    cli.print_start(cfg)
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # rich's colours, where it sees a terminal
    assert out.endswith(f"{cli.start_line(cfg)}\nrun dir: {tmp_path}\n")
    tree = out[:out.index(cli.start_line(cfg))]
    assert tree.startswith("config")
    for group in ("optim", "init", "model", "data", "trainer", "callbacks", "seed"):
        assert f"── {group}" in tree, group
    assert "shuffle_seed: 11" in tree  # resolved: data.shuffle_seed is ${seed}
    assert re.search(r"── seed\n\W*└── 11\n", tree), tree  # a plain value: itself


# ---------------------------------------------------------------------------------------------
# src/errors.py: a constructor's complaint said in config keys


@pytest.mark.parametrize("message, line", [
    ("Invalid learning rate lr=0: must be > 0", "optim.lr=0: must be > 0"),  # our constructors' style
    ("Invalid lr=abc: must be a number", "optim.lr=abc: must be a number"),
    ("Invalid betas[1]='abc': must be a number", "optim.betas[1]='abc': must be a number"),  # was `optim: Invalid ...`
    ("optim.lr=0 is out of range", "optim.lr=0 is out of range"),  # already in config keys
    ("optim=x is unknown", "optim=x is unknown"),
    ("optimizer got an unexpected keyword", "optim: optimizer got an unexpected keyword"),  # `optim.` only
    ("first line\nInvalid eps=0: must be > 0", "optim.eps=0: must be > 0"),  # the last line counts
    ("Invalid: nothing to name", "optim: Invalid: nothing to name"),
])
def test_in_group(message, line):
    from src.errors import in_group

    assert in_group("optim", ValueError(message)) == line


def test_in_group_reads_the_root_cause_and_last_line_falls_back_to_the_type():
    from src.errors import in_group, last_line, root_cause

    outer = chained(ValueError("Invalid std=-1: must be > 0"), RuntimeError("Error in call to target"))
    assert root_cause(outer).args == ("Invalid std=-1: must be > 0",)
    assert in_group("init", outer) == "init.std=-1: must be > 0"
    assert last_line(ValueError("  \n ")) == "ValueError"
    assert last_line(ValueError("a\n  b  \n")) == "b"


@pytest.mark.parametrize("value", ["/tmp/x/run", "/tmp/a:b/c", "/tmp/~x", "/tmp/a+b", "/tmp/it's", "/tmp/sp ace",
                                   "/tmp/p/1_callbacks=essential,data.batch_size=64,seed=1", 'a"b', "$HOME/x"])
def test_a_printed_override_reads_back_as_the_value_in_hydra_and_the_shell(value):
    """A sweep job's dir (`1_optim=sgd,seed=1`) given unquoted to ckpt_path= was a Hydra parse
    error: the resume command a stopped sweep job printed did not run."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    word = cli.override("ckpt_path", value)
    assert OverridesParser.create().parse_override(word).value() == value
    assert cli._value(word) == value  # as resume_argv reads it
    assert shlex.split(cli.shell_words("python", "train.py", word)) == ["python", "train.py", word]
    assert cli.override("ckpt_path", "/tmp/plain/run") == "ckpt_path=/tmp/plain/run"  # nothing to quote


# ---------------------------------------------------------------------------------------------
# A sweeper that gives up (Optuna with no finished trial), and whether a task finished here


def _raise_in(module: str, message: str) -> BaseException:
    """An exception whose innermost frame is in `module` (e.g. optuna's), as the sweeper raises it."""
    scope = {"__name__": module}
    exec(compile(f"def boom():\n    raise ValueError({message!r})", f"<{module}>", "exec"), scope)
    try:
        scope["boom"]()
    except ValueError as e:
        return e
    raise AssertionError("not raised")


def _stopped_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    for name, status in (("0_optim.lr=100", "diverged"), ("1_optim.lr=300", "diverged"), ("2_optim.lr=x", "failed")):
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / "results.json").write_text(json.dumps({"status": status}))
    return sweep


@pytest.mark.parametrize("report", [True, False])
def test_a_sweeper_that_gave_up_gets_its_report_and_one_line(tmp_path, monkeypatch, report):
    sweep = _stopped_sweep(tmp_path)
    guard = SimpleNamespace(started_sweep={"dir": sweep, "report": report, "tolerance_pt": 1.0})
    monkeypatch.setattr(cli, "_sweep_guard", lambda: guard)
    e = _raise_in("optuna.study.study", "No trials are completed yet.")
    where = f"report: {sweep / 'summary.md'}" if report else f"its jobs are in {sweep}"
    assert cli.report_of_a_stopped_sweep(e) == (
        "the sweeper stopped: no trial finished with a value (a diverged or failed trial has none), so Optuna "
        f"has no best one; the sweep dir holds 3 jobs (2 diverged, 1 failed), {where}")
    assert (sweep / "summary.md").is_file() is report
    other = _raise_in("hydra_plugins.hydra_optuna_sweeper._impl", "the search space is empty")
    assert cli.report_of_a_stopped_sweep(other).startswith("the sweeper stopped: ValueError: the search space is empty; ")


def test_not_a_sweeper_that_gave_up(tmp_path, monkeypatch):
    sweep = _stopped_sweep(tmp_path)
    by_optuna = _raise_in("optuna.study.study", "No trials are completed yet.")
    monkeypatch.setattr(cli, "_sweep_guard", lambda: None)  # no Hydra app loaded the callbacks
    assert cli.report_of_a_stopped_sweep(by_optuna) is None
    guard = SimpleNamespace(started_sweep={})
    monkeypatch.setattr(cli, "_sweep_guard", lambda: guard)
    assert cli.report_of_a_stopped_sweep(by_optuna) is None  # no sweep started
    guard.started_sweep = {"dir": sweep}
    assert cli.report_of_a_stopped_sweep(_raise_in("src.training", "x")) is None  # a job's own error
    assert cli.report_of_a_stopped_sweep(_raise_in("hydra._internal.utils", "x")) is None  # composition
    assert not cli._raised_by_the_sweeper(ValueError("never raised"))  # no traceback
    guard.started_sweep = {"dir": tmp_path / "none"}
    assert cli.report_of_a_stopped_sweep(by_optuna) is None  # the dir was never made
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)  # a dir, but no job dir (no .hydra/) in it
    guard.started_sweep = {"dir": empty}
    assert cli.report_of_a_stopped_sweep(by_optuna) is None
    assert not (sweep / "summary.md").exists()


def test_finished_here_means_a_finished_results_json_written_since(tmp_path):
    import time

    since = time.time()
    assert not cli._finished_here(tmp_path, since)  # none
    for status, finished in (("ok", True), ("diverged", True), ("failed", False), ("interrupted", False)):
        (tmp_path / "results.json").write_text(json.dumps({"status": status}))
        assert cli._finished_here(tmp_path, since) is finished, status
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok"}))
    os.utime(tmp_path / "results.json", (since - 0.5, since - 0.5))
    assert cli._finished_here(tmp_path, since)  # within the second before: file times are coarse
    os.utime(tmp_path / "results.json", (since - 5, since - 5))
    assert not cli._finished_here(tmp_path, since)  # an earlier task's



def test_a_checkpoint_path_with_the_override_grammars_characters_is_quoted_for_hydra(tmp_path):
    """A sweep job's dir (`6_init=kaiming,optim=adam`) given as `ckpt_path=` unquoted: Hydra's
    override grammar split it (`error: cannot parse an override`), after train.py had already
    said it was resuming it; landscape.py's `run=` took the same dir (one helper for both now)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    job, other = tmp_path / "6_init=kaiming,optim=adam", tmp_path / "7_init=xavier,optim=sgd"
    job.mkdir()
    other.mkdir()
    argv = ["train.py", f"ckpt_path={job}", "optim.lr=0.1", f"+ckpt_path={job}", f"ckpt_path='{job}'",
            f"ckpt_path={tmp_path}/missing=1", "ckpt_path=plain/path.ckpt"]
    quoted = cli.quote_path_values(argv, ("ckpt_path",))
    # a missing path is quoted too: its own one line ("does not exist") instead of a parse error
    assert quoted == ["train.py", f"ckpt_path='{job}'", "optim.lr=0.1", f"+ckpt_path='{job}'", f"ckpt_path='{job}'",
                      f"ckpt_path='{tmp_path}/missing=1'", "ckpt_path=plain/path.ckpt"]
    assert OverridesParser.create().parse_overrides(quoted[1:2])[0].value() == str(job)
    # eval.py -m: one job dir stays one value, two are a sweep over them
    assert cli.quote_path_values(["eval.py", "-m", f"ckpt_path={job}"], ("ckpt_path",))[2] == f"ckpt_path='{job}'"
    assert cli.quote_path_values(["eval.py", "-m", f"ckpt_path={job},{other}"], ("ckpt_path",))[2] == \
        f"ckpt_path='{job}','{other}'"
    assert cli.quote_path_values(["landscape.py", f"run={job}"], ("ckpt_path",))[1] == f"run={job}"  # not its key


def test_a_signal_between_a_finished_run_and_the_exit_does_not_turn_it_into_a_killed_one():
    """Python's shutdown after a finished run takes ~1.5 s with torch loaded; a SIGTERM there
    exited 143 with no line, a run cut short to a scheduler though all was written."""
    import subprocess

    from tests.conftest import PYTHON, ROOT

    code = ("from src.cli import let_a_finished_run_exit; let_a_finished_run_exit(); import os, signal, torch; "
            "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT); print('on')")
    res = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout, res.stderr) == (0, "on\n", "")


def test_only_a_script_run_as_the_process_ignores_late_signals(monkeypatch):
    """A test running landscape.py with runpy made the pytest process ignore SIGTERM and Ctrl-C
    from there on (__main__ was landscape.py's): a later test's SIGTERM did nothing."""
    import types

    from src.config import ROOT

    script = types.ModuleType("__main__")
    script.__file__ = str(ROOT / "landscape.py")
    monkeypatch.setitem(sys.modules, "__main__", script)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "pytest", "tests/test_landscape.py"])
    assert not cli._this_process_is_a_script_of_ours()
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-X", "importtime", str(ROOT / "landscape.py"), "run=x"])
    assert cli._this_process_is_a_script_of_ours()
    script.__file__ = "/elsewhere/landscape.py"
    assert not cli._this_process_is_a_script_of_ours()
