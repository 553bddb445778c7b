"""src/evaluation.py (eval.py) in-process: which checkpoint a run dir means, each wrong input as
one line, and the accuracy and loss it reports against a plain forward pass over the same split
with the same weights. test_cli.py runs eval.py on a trained run against its own test_acc."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from src.checkpointing import HINT
from src.data import load_split_tensors, split_indices
from src.errors import CheckpointError, ConfigError
from src.evaluation import best_checkpoint, evaluate
from src.model import BaseNetwork
from src.module import ClassifierModule
from tests.conftest import compose
from tests.test_checkpointing import NotWeights


def test_the_trainer_is_one_device_no_logger_no_checkpoints(tmp_path, monkeypatch):
    """First in this file: a Trainer of devices=2 would start DDP, which runs the command line
    again (under mutation testing, the test runner itself, left running as an orphan)."""
    import pytorch_lightning as pl

    seen = {}

    class Stop(Exception):
        pass

    def trainer(**kwargs):
        seen.update(kwargs)
        raise Stop

    _checkpoint(tmp_path / "net.ckpt")
    monkeypatch.setattr(pl, "Trainer", trainer)
    with pytest.raises(Stop):
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'net.ckpt'}"))
    assert seen == {"accelerator": "cpu", "devices": 1, "precision": "32-true", "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
                    "deterministic": True}


def test_best_checkpoint_of_a_run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError) as e:
        best_checkpoint(str(run))
    assert str(e.value) == f"ckpt_path={run} has no best-*.ckpt in checkpoints/; {HINT}"
    # a run that ended without one says how it ended, not which file to pass
    (run / "results.json").write_text(json.dumps({"status": "diverged", "error": "loss became nan at step 4"}))
    with pytest.raises(CheckpointError) as e:
        best_checkpoint(str(run))
    assert str(e.value) == (f"ckpt_path={run}: the run ended diverged with no best-val checkpoint: loss became "
                            "nan at step 4; it has no weights to test")
    (run / "results.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(CheckpointError, match=r": the run ended interrupted with no best-val checkpoint; it has no"):
        best_checkpoint(str(run))
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")  # then there are weights: pass that file
    with pytest.raises(CheckpointError) as e:
        best_checkpoint(str(run))
    assert str(e.value) == (f"ckpt_path={run} has no best-*.ckpt in checkpoints/ (no validation chose one); "
                            f"to test its last weights, pass the file: ckpt_path={run}/checkpoints/last.ckpt")
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "results.json").unlink()
    for name in ("best-epoch=02.ckpt", "best-epoch=10.ckpt", "best-epoch=05.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"x")
    assert best_checkpoint(str(run)) == run / "checkpoints" / "best-epoch=10.ckpt"  # the last by name
    chosen = run / "checkpoints" / "best-epoch=02.ckpt"
    (run / "results.json").write_text(json.dumps({"best_checkpoint": str(chosen)}))
    assert best_checkpoint(str(run)) == chosen  # the one results.json names
    (run / "results.json").write_text(json.dumps({"best_checkpoint": str(run / "gone.ckpt")}))
    assert best_checkpoint(str(run)) == run / "checkpoints" / "best-epoch=10.ckpt"
    (run / "results.json").write_text(json.dumps({"status": "failed"}))
    assert best_checkpoint(str(run)) == run / "checkpoints" / "best-epoch=10.ckpt"
    assert best_checkpoint(str(chosen)) == chosen  # a file as given
    for broken in ('{"status": "ok", ', "[1]", '{"best_checkpoint": 3}'):  # unreadable: as if none
        (run / "results.json").write_text(broken)
        assert best_checkpoint(str(run)) == run / "checkpoints" / "best-epoch=10.ckpt"
    (run / "checkpoints" / "best-epoch=100.ckpt").write_bytes(b"x")
    assert best_checkpoint(str(run)) == run / "checkpoints" / "best-epoch=100.ckpt"  # by number, not name


def test_of_several_best_checkpoints_the_highest_val_acc_wins(tmp_path):
    # save_top_k=3 and a run killed before its results.json: the best is in the names
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best-epoch=03-val_acc=0.8812.ckpt", "best-epoch=07-val_acc=0.8850.ckpt",
                 "best-epoch=09-val_acc=0.8850.ckpt", "best-epoch=12-val_acc=0.8790.ckpt",
                 "best-epoch=20.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"x")
    assert best_checkpoint(str(run)).name == "best-epoch=07-val_acc=0.8850.ckpt"  # the first of a tie
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    for name in ("best-epoch=00.ckpt", "best-by-hand.ckpt"):  # a name without an epoch comes first
        (other / "checkpoints" / name).write_bytes(b"x")
    assert best_checkpoint(str(other)).name == "best-epoch=00.ckpt"


def test_a_copied_run_dir_tests_its_own_checkpoint_not_the_originals(tmp_path):
    """results.json names its best checkpoint by absolute path: in a copy of the run dir that is
    the original's file, which eval.py tested while the original was there."""
    import shutil

    original = tmp_path / "original"
    (original / "checkpoints").mkdir(parents=True)
    best = original / "checkpoints" / "best-epoch=03-val_acc=0.8800.ckpt"
    best.write_bytes(b"original")
    (original / "checkpoints" / "best-epoch=01-val_acc=0.8900.ckpt").write_bytes(b"x")  # kept by hand, not the run's
    (original / "results.json").write_text(json.dumps({"best_checkpoint": str(best)}))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert best_checkpoint(str(original)) == best
    assert best_checkpoint(str(copy)) == copy / "checkpoints" / best.name  # the copy's file of that name
    (copy / "checkpoints" / best.name).unlink()  # not in the copy: the copy's best by name, never the original's
    assert best_checkpoint(str(copy)) == copy / "checkpoints" / "best-epoch=01-val_acc=0.8900.ckpt"


def test_a_best_checkpoint_named_outside_the_run_dir(tmp_path):
    """results.json may name a file under a checkpoint dirpath set outside any run dir (taken as
    named), or in another run's checkpoints/ (never taken: this run's own best is)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    own = run / "checkpoints" / "best-epoch=01.ckpt"
    own.write_bytes(b"x")
    elsewhere = tmp_path / "my_ckpts" / "best-epoch=04.ckpt"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")
    (run / "results.json").write_text(json.dumps({"best_checkpoint": str(elsewhere)}))
    assert best_checkpoint(str(run)) == elsewhere
    other = tmp_path / "other" / "checkpoints" / "best-epoch=07.ckpt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    (run / "results.json").write_text(json.dumps({"best_checkpoint": str(other)}))
    assert best_checkpoint(str(run)) == own


def test_a_failed_run_without_checkpoints_says_how_it_ended(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"status": "failed", "error": "first line\nsecond line"}))
    with pytest.raises(CheckpointError) as e:
        best_checkpoint(str(run))
    assert str(e.value) == (f"ckpt_path={run}: the run ended failed with no best-val checkpoint: first line; "
                            "it has no weights to test")


def test_paths_that_are_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as e:
        best_checkpoint(str(tmp_path / "nope"))
    assert str(e.value) == f"ckpt_path={tmp_path / 'nope'} does not exist; {HINT}"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # exists, but neither a file nor a directory
    with pytest.raises(CheckpointError) as e:
        best_checkpoint(str(fifo))
    assert str(e.value) == f"ckpt_path={fifo} is neither a checkpoint file nor a run dir; {HINT}"


def _checkpoint(path):
    torch.manual_seed(5)
    net = BaseNetwork(hidden_sizes=[32, 16])
    torch.save({"hyper_parameters": {"model": net.config}, "state_dict": ClassifierModule(net).state_dict()}, path)
    return net


def _cfg(tmp_path, *overrides, out="out"):
    return compose(["accelerator=cpu", "data.eval_batch_size=4096", *overrides], tmp_path / out, config_name="eval")


def test_bad_split_and_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(ConfigError) as e:
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path}", "split=train"))
    assert str(e.value) == "split='train' is not one of: test, val"
    # `ckpt_path=` was read as "." (the current dir's checkpoints), null as a path "None"; a bad
    # seed was named data.shuffle_seed, which the user never typed
    for given, said in (("", "ckpt_path= names no checkpoint"), ("null", "ckpt_path=null names no checkpoint")):
        with pytest.raises(ConfigError) as e:
            evaluate(_cfg(tmp_path, f"ckpt_path={given}"))
        assert str(e.value) == f"{said}; {HINT}"
    with pytest.raises(ValueError, match=r"^seed=-1 must be an integer"):
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path}", "seed=-1"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        evaluate(_cfg(tmp_path, f"ckpt_path={junk}"))
    assert str(e.value) == f"ckpt_path={junk}: {junk} is not a checkpoint of this app (UnpicklingError); {HINT}"
    torch.save({"hyper_parameters": {"model": {}}, "state_dict": {}, "x": NotWeights()}, tmp_path / "code.ckpt")
    with pytest.raises(CheckpointError, match=r"is not a checkpoint of this app \(UnpicklingError\)"):
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'code.ckpt'}"))  # refused, not run
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")  # no hyperparameters: another app's
    with pytest.raises(CheckpointError, match=r"is not a checkpoint of this app \(KeyError\)"):
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'other.ckpt'}"))
    # loads, but its inside is not train.py's: each was a traceback (exit 1)
    model = {"act_fn": "relu", "input_size": 784, "num_classes": 10, "hidden_sizes": [8]}
    for name, state, error in (
            ("string_model", {"hyper_parameters": {"model": "mlp"}, "state_dict": {}}, "TypeError"),
            ("no_weights", {"hyper_parameters": {"model": model}}, "KeyError"),
            ("other_sizes", {"hyper_parameters": {"model": model},
                             "state_dict": {"net.layers.0.weight": torch.zeros(3, 3)}}, "RuntimeError")):
        torch.save(state, tmp_path / f"{name}.ckpt")
        with pytest.raises(CheckpointError) as e:
            evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / name}.ckpt"))
        assert str(e.value).startswith(f"ckpt_path={tmp_path / name}.ckpt: {tmp_path / name}.ckpt is not a "
                                       f"checkpoint of this app ({error}: ") and "\n" not in str(e.value)
        if name == "other_sizes":  # torch's reason, its whitespace folded to one line and cut
            why = str(e.value).split("(RuntimeError: ", 1)[1].rsplit("); ", 1)[0]
            assert why.startswith("Error(s) in loading state_dict for ClassifierModule: Missing key(s)")
            assert len(why) == 200 and "  " not in why
    # the weights of a diverged run: chance level and a NaN loss reported `ok` before
    nan = {"hyper_parameters": {"model": model}, "state_dict": {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in ClassifierModule(BaseNetwork(**model)).state_dict().items()}}
    torch.save(nan, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"nan.ckpt's weights hold NaN or inf \(the run diverged\); test a checkpoint"):
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'nan.ckpt'}"))
    assert not (tmp_path / "out" / "eval.json").exists()


@pytest.mark.parametrize("accelerator, message", [
    # Lightning's own refusals were a crash (tpu: ModuleNotFoundError, exit 1 with a traceback)
    ("banana", "accelerator: You selected an invalid accelerator name: `accelerator='banana'`. Available names are:"),
    ("tpu", "accelerator: Requirement 'torch_xla"),
])
def test_an_accelerator_lightning_refuses_is_a_config_error(tmp_path, accelerator, message):
    _checkpoint(tmp_path / "net.ckpt")
    with pytest.raises(ConfigError) as e:
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'net.ckpt'}", f"accelerator={accelerator}"))
    assert str(e.value).startswith(message), str(e.value)


def test_a_precision_lightning_refuses_is_a_config_error(tmp_path):
    _checkpoint(tmp_path / "net.ckpt")
    with pytest.raises(ConfigError) as e:
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'net.ckpt'}", "precision=17"))
    assert str(e.value).startswith("precision: Precision 17 is invalid. Allowed precision values: ("), str(e.value)
    assert not (tmp_path / "out" / "eval.json").exists()


def test_gpu_without_cuda_says_so(tmp_path, monkeypatch):
    _checkpoint(tmp_path / "net.ckpt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        evaluate(_cfg(tmp_path, f"ckpt_path={tmp_path / 'net.ckpt'}", "accelerator=cuda"))
    assert str(e.value) == ("accelerator=cuda but CUDA is not available on this machine "
                            "(torch.cuda.is_available() is False); use accelerator=cpu or auto")


@pytest.mark.parametrize("split", ["test", "val"])
def test_accuracy_and_loss_equal_a_plain_forward_pass(tmp_path, data_dir, capsys, monkeypatch, split):
    ckpt = tmp_path / "model.ckpt"
    net = _checkpoint(ckpt)
    cfg = _cfg(tmp_path, f"ckpt_path={ckpt}", f"split={split}", out="runs/eval")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    acc = evaluate(cfg)  # its run dir made, parents included
    assert list(work.iterdir()) == []  # no logger, no lightning_logs/ wherever it was started
    assert [p.name for p in (tmp_path / "runs" / "eval").iterdir()] == ["eval.json"]
    evaluate(cfg)  # the run dir already there (Hydra makes it first): fine
    capsys.readouterr()
    acc = evaluate(cfg)
    if split == "test":
        x, y = load_split_tensors(data_dir, train=False)
    else:  # the validation split the run chose its best checkpoint on (split seed 42)
        x, y = load_split_tensors(data_dir, train=True)
        _, val = split_indices(seed=42)
        x, y = x[val], y[val]
    with torch.no_grad():
        logits = net(x)
    expected_acc = (logits.argmax(1) == y).double().mean().item()
    expected_loss = F.cross_entropy(logits, y).item()
    assert acc == pytest.approx(expected_acc, abs=1e-6)
    record = json.loads((tmp_path / "runs" / "eval" / "eval.json").read_text())
    assert record["status"] == "ok" and record["split"] == split and record["checkpoint"] == str(ckpt)
    assert record["split_seed"] == 42 and record["precision"] == "32-true"
    assert record["acc"] == acc and record["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert capsys.readouterr().out.strip().splitlines() == [
        f"{split} acc {100 * acc:.2f} %  (loss {record['loss']:.4f})  {ckpt}",
        f"results: {tmp_path / 'runs' / 'eval' / 'eval.json'}"]
