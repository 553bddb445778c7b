"""Every bad input: one clear line naming the bad value, exit status 2 (Hydra's own: 1), no
traceback, and no run dir with partial results (a run dir that exists says status: failed).

Hydra-level mistakes (unknown option/key, wrong type, a missing ckpt_path) go through
`train.py` as subprocesses; the value checks run `run_task(train, cfg)` in-process, which is
what train.py calls, to keep the file fast.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import torch

from src.cli import EXIT_USER_ERROR, run_task
from src.training import train
from tests.conftest import DATA_DIR, FAST, at_once, compose, run_script


def assert_clean_failure(out: Path, text: str, bad: str) -> None:
    assert bad in text, f"{bad!r} not named in: {text[-1500:]}"
    assert "Traceback" not in text, text[-3000:]
    if out.exists() and any(out.iterdir()):  # Hydra made the run dir: it must say it failed
        results = out / "results.json"
        assert results.exists(), sorted(p.name for p in out.iterdir())
        assert json.loads(results.read_text())["status"] == "failed"
        assert not (out / "checkpoints").exists()


CLI_ERRORS = [
    (["optim=adamw"], "adamw"),  # lists the available ones too
    (["optim.lrr=0.1"], "optim.lrr"),
    (["optim.lr=abc"], "abc"),
    (["ckpt_path=/nonexistent/run/checkpoints/last.ckpt"], "/nonexistent/run/checkpoints/last.ckpt"),
]


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory):
    """test_cli_errors' train.py processes, two at a time: {overrides: (its run dir, its process)}."""
    outs = {tuple(overrides): tmp_path_factory.mktemp("cli_error") / "run" for overrides, _ in CLI_ERRORS}
    done = at_once(*(lambda overrides=overrides, out=out: run_script("train.py", *FAST, *overrides,
                                                                     f"hydra.run.dir={out}", timeout=120)
                     for overrides, out in outs.items()))
    return {overrides: (out, res) for (overrides, out), res in zip(outs.items(), done, strict=True)}


@pytest.mark.parametrize("overrides, bad", CLI_ERRORS)
def test_cli_errors(cli_errors, overrides, bad):
    out, res = cli_errors[tuple(overrides)]
    assert res.returncode != 0
    assert_clean_failure(out, res.stderr, bad)
    if overrides == ["optim=adamw"]:
        assert res.returncode == EXIT_USER_ERROR
        assert "available: adam, sgd, sgd_mom" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1  # one line, not Hydra's dozen
    if overrides == ["optim.lrr=0.1"]:
        assert res.returncode == EXIT_USER_ERROR
        assert "its keys: betas, eps, lr, weight_decay" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["train.py", "surfaces.py"])
def test_a_multirun_refused_before_its_first_job_leaves_no_sweep_dir(tmp_path, script):
    # Hydra makes the sweep dir and writes multirun.yaml before it composes the jobs.
    res = run_script(script, "-m", "optim=sgd,adamw", f"hydra.sweep.dir={tmp_path}/multiruns/day", timeout=120)
    assert res.returncode == EXIT_USER_ERROR, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == ["error: optim=adamw is not an available option; available: adam, sgd, "
                                               "sgd_mom, torch_adam, torch_sgd, torch_sgd_mom"]
    assert list(tmp_path.iterdir()) == []


def _fake_checkpoint(path: Path, hidden_sizes: list[int]) -> Path:
    """The parts of a Lightning checkpoint that check_checkpoint reads, for another architecture."""
    torch.save({"state_dict": {}, "loops": {}, "hyper_parameters": {
        "model": {"act_fn": "relu", "input_size": 784, "num_classes": 10, "hidden_sizes": hidden_sizes},
        "optim_cfg": {"_target_": "src.optim.Adam"}}}, path)
    return path


def _truncated_data_dir(tmp: Path) -> Path:
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (DATA_DIR / "FashionMNIST" / "raw").glob("*-ubyte"):
        if f.name == "train-labels-idx1-ubyte":
            (raw / f.name).write_bytes(f.read_bytes()[:1000])
        else:
            os.symlink(f, raw / f.name)
    return tmp


def _corrupt_system_dir(tmp: Path) -> Path:
    system = tmp / "system"
    system.mkdir()
    from src.data import RAW_FILES

    for name in RAW_FILES:  # gzip files cut in the middle
        (system / f"{name}.gz").write_bytes(gzip.compress(b"\0" * 100_000)[:200])
    return system


CASES = {
    "lr_zero": (["optim.lr=0"], "optim.lr=0"),
    "lr_negative": (["optim.lr=-1"], "optim.lr=-1"),
    "momentum_one": (["optim=sgd_mom", "optim.momentum=1.0"], "optim.momentum=1.0"),
    "beta2_one": (["optim=adam", "optim.betas=[0.9,1.0]"], "1.0"),
    "eps_zero": (["optim=adam", "optim.eps=0"], "optim.eps=0"),
    "batch_size_zero": (["data.batch_size=0"], "data.batch_size=0"),
    "max_epochs_negative": (["trainer.max_epochs=-1"], "trainer.max_epochs=-1"),
    "hidden_sizes_empty": (["model.hidden_sizes=[]"], "model.hidden_sizes=[]"),
    "hidden_sizes_zero": (["model.hidden_sizes=[64,0]"], "[64, 0]"),
    "act_fn_unknown": (["model.act_fn=swish"], "swish"),
    "gpu_without_cuda": (["trainer.accelerator=gpu"], "trainer.accelerator=gpu"),
    # refused before the first step, not after the last epoch when results.json resolves the config
    "interpolation_unresolvable": (["+note=${{nope}}"], "note: Interpolation key 'nope' not found"),
    "interpolation_in_a_group": (["optim=adam", "optim.lr=${{optim.momentum}}"],
                                 "optim.lr: Interpolation key 'optim.momentum' not found"),
    "num_workers_negative": (["data.pipeline=torchvision", "data.num_workers=-1"], "data.num_workers=-1"),
    "group_callbacks_not_bool": (["group_callbacks=maybe"], "group_callbacks='maybe'"),
    # root ignores chmod: a path under a regular file can never be created, even by root
    "data_dir_unwritable": (["data.data_dir=/etc/hostname/fmnist"], "/etc/hostname/fmnist"),
    "data_missing": (["data.data_dir={tmp}/empty", "data.system_dir=null", "data.allow_download=false"],
                     "{tmp}/empty"),
    "data_truncated": (["data.data_dir={truncated}", "data.system_dir=null", "data.allow_download=false"],
                       "train-labels-idx1-ubyte"),
    "system_gz_corrupt": (["data.data_dir={tmp}/empty", "data.system_dir={system}", "data.allow_download=false"],
                          ".gz"),
    "ckpt_missing": (["ckpt_path={tmp}/nope.ckpt"], "{tmp}/nope.ckpt"),
    "ckpt_not_a_checkpoint": (["ckpt_path={tmp}/notes.txt"], "{tmp}/notes.txt"),
    "ckpt_not_a_file": (["ckpt_path=/dev/null"], "/dev/null is neither a checkpoint file nor a run dir"),
    "ckpt_other_architecture": (["ckpt_path={tmp}/small.ckpt"], "hidden_sizes=[32]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_value_errors(case, tmp_path, capsys, data_dir):
    if case == "gpu_without_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    overrides, bad = CASES[case]
    fill = {"tmp": tmp_path}
    if case == "data_truncated":
        fill["truncated"] = _truncated_data_dir(tmp_path / "truncated")
    if case == "system_gz_corrupt":
        fill["system"] = _corrupt_system_dir(tmp_path)
    if case == "ckpt_not_a_checkpoint":
        (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    if case == "ckpt_other_architecture":
        _fake_checkpoint(tmp_path / "small.ckpt", [32])
    overrides = [o.format(**fill) for o in overrides]
    bad = bad.format(**fill)
    out = tmp_path / "run"
    cfg = compose([*FAST, *overrides], out)
    with pytest.raises(SystemExit) as exit_info:
        run_task(train, cfg)
    assert exit_info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert_clean_failure(out, lines[0], bad)
