"""The command line: Hydra's own composition (a user's config dir, search path), one `error:`
line for every kind of bad input on every entry point, and eval.py against a run's test_acc."""

from __future__ import annotations

import json
import os

import pytest

from src.cli import EXIT_USER_ERROR
from tests.conftest import FAST, ROOT, at_once, run_script

MY_SGD = '''
import torch

class MySGD(torch.optim.SGD):
    """A user's optimizer, outside the repo."""
'''


def one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return lines[0]


# Refused by Hydra's composition: checked through train.py itself (no torch import, ~1 s each).
BAD_VALUES = [
    (["callbacks.model_checkpoint.monitr=val/loss"], "callbacks.model_checkpoint.monitr is not a key"),
    (["optim=adamw"], "available: adam, sgd, sgd_mom"),
    (["hydra.run.dir=/proc/nope/run"], "/proc/nope"),
    (["+trainer.precision=banana"], "trainer.precision"),  # the key exists: `+` is refused
    (["init=normal", "init.std=-0.1"], "init.std=-0.1"),  # a constructor's error, through the CLI
]
ENTRY_POINTS = [
    ("probe.py", ["init=xyz"], "init=xyz is not an available option"),
    ("probe.py", ["init=normal", "init.std=-1"], "init.std=-1"),
    ("eval.py", ["ckpt_path=/nonexistent"], "/nonexistent does not exist"),
    ("eval.py", ["ckpt_path=/dev/null"], "/dev/null is neither a checkpoint file nor a run dir"),
]


def _users_own_optimizer(tmp_path):
    """`--config-dir <tmp_path>/conf optim=my_sgd`, its optimizer in <tmp_path>/my_pkg."""
    (tmp_path / "conf" / "optim").mkdir(parents=True)
    (tmp_path / "conf" / "optim" / "my_sgd.yaml").write_text(
        "_target_: my_pkg.MySGD\n_partial_: true\nlr: 0.05\n")
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text(MY_SGD)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")]))}
    return run_script("train.py", "--config-dir", str(tmp_path / "conf"), "optim=my_sgd", *FAST,
                      f"hydra.run.dir={tmp_path / 'run'}", env=env)


@pytest.fixture(scope="module")
def processes(tmp_path_factory, data_dir):
    """The train.py, probe.py and eval.py processes of this file's tests, two at a time:
    {key: (the test's tmp dir, its process)}, keyed by the test's parameters."""
    calls = {}
    for overrides, _ in BAD_VALUES:
        tmp = tmp_path_factory.mktemp("bad_value")
        args = [*FAST, *overrides]
        if not any(o.startswith("hydra.run.dir") for o in overrides):
            args.append(f"hydra.run.dir={tmp / 'run'}")
        calls[("train.py", *overrides)] = (tmp, lambda args=args: run_script("train.py", *args, timeout=120))
    for script, overrides, _ in ENTRY_POINTS:
        tmp = tmp_path_factory.mktemp("entry_point")
        calls[(script, *overrides)] = (tmp, lambda script=script, overrides=overrides, tmp=tmp: run_script(
            script, *overrides, f"hydra.run.dir={tmp / 'run'}", timeout=120))
    tmp = tmp_path_factory.mktemp("own_optimizer")
    calls["own optimizer"] = (tmp, lambda tmp=tmp: _users_own_optimizer(tmp))
    # eval.py of a run trained here first
    from src.training import train
    from tests.conftest import compose

    tmp = tmp_path_factory.mktemp("eval")
    train(compose([*FAST, "trainer.max_epochs=2", "trainer.limit_test_batches=null"], tmp / "run"))
    calls["eval"] = (tmp, lambda tmp=tmp: run_script("eval.py", f"ckpt_path={tmp / 'run'}", "data.eval_batch_size=1024",
                                                     f"hydra.run.dir={tmp / 'eval'}"))
    done = at_once(*(call for _, call in calls.values()))
    return {key: (tmp, res) for (key, (tmp, _)), res in zip(calls.items(), done, strict=True)}


def test_a_users_own_optimizer_config_trains(processes):
    """`--config-dir ~/my_conf optim=my_sgd` with `_target_: my_pkg.MySGD`: Hydra's search path
    decides what an option is, not a copy of its rules."""
    tmp_path, res = processes["own optimizer"]
    out = tmp_path / "run"
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "ok" and r["config"]["optim"]["_target_"] == "my_pkg.MySGD"
    assert r["global_step"] == 10


@pytest.mark.parametrize("overrides, named", BAD_VALUES)
def test_bad_values_are_one_line_with_exit_2(processes, overrides, named):
    tmp_path, res = processes[("train.py", *overrides)]
    out = tmp_path / "run"
    assert res.returncode == EXIT_USER_ERROR, res.stderr[-2000:]
    assert named in one_error_line(res)
    if out.exists():  # the run dir exists: it says the run failed, and holds no checkpoint
        assert json.loads((out / "results.json").read_text())["status"] == "failed"
        assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


# Refused by a constructor or a run check: the same wrapper train.py calls, in-process (fast).
@pytest.mark.parametrize("overrides, named", [
    (["init=const", "init.fill=abc"], "init"),
    (["init=kaiming_gain", "init.nonlinearity=banana"], "banana"),
    (["seed=-1"], "seed=-1"),
    (["checkpoint.every_n_train_steps=-1"], "every_n_train_steps=-1"),
    (["checkpoint.every_n_train_steps=abc"], "every_n_train_steps='abc'"),
    (["trainer.precision=banana"], "banana"),
    (["data.batch_size=100000"], "the largest that works is 50000"),
])
def test_bad_values_in_process_are_one_line_with_exit_2(tmp_path, capsys, overrides, named, data_dir):
    from src.cli import run_task
    from src.training import train
    from tests.conftest import compose

    out = tmp_path / "run"
    out.mkdir()  # as Hydra makes it before the task starts
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, compose([*FAST, *overrides], out))
    assert exit_info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and named in lines[0], err
    assert json.loads((out / "results.json").read_text())["status"] == "failed"
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


@pytest.mark.parametrize("script, overrides, named", ENTRY_POINTS)
def test_other_entry_points_say_one_line_too(processes, script, overrides, named):
    _, res = processes[(script, *overrides)]
    assert res.returncode == EXIT_USER_ERROR, res.stderr[-2000:]
    assert named in one_error_line(res)


def test_eval_gives_the_runs_test_acc(processes):
    tmp_path, res = processes["eval"]  # the run trained in-process, then eval.py
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res.returncode == 0, res.stderr[-2000:]
    e = json.loads((tmp_path / "eval" / "eval.json").read_text())
    # the whole test split, the run's best checkpoint: the run's own test_acc, to the bit
    assert e["checkpoint"] == r["best_checkpoint"]
    assert e["acc"] == r["test_acc"] and f"test acc {100 * e['acc']:.2f} %" in res.stdout
