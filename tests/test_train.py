"""A short real training run through train(cfg) and through train.py."""

import json

import pytest
import torch

from src.training import train
from tests.conftest import FAST, at_once, compose, run_script


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run")
    cfg = compose([*FAST, "trainer.max_epochs=2"], out)
    test_acc = train(cfg)
    return out, test_acc


def test_results_json_has_the_tutorials_keys(short_run):
    out, test_acc = short_run
    r = json.loads((out / "results.json").read_text())
    for key in ("test_acc", "val_scores", "train_scores", "train_losses", "best_val_epoch",
                "epochs", "seconds", "config", "status"):
        assert key in r, key
    assert r["status"] == "ok"
    assert r["epochs"] == 2 and len(r["val_scores"]) == 2 and len(r["train_scores"]) == 2
    assert len(r["train_losses"]) == 2 * 10  # one per step
    assert r["best_val_epoch"] == max(range(2), key=lambda i: (r["val_scores"][i], -i))
    assert 0.1 < r["test_acc"] <= 1.0
    assert r["config"]["model"]["hidden_sizes"] == [512, 256, 256, 128]


def test_checkpoints_best_and_last(short_run):
    out, _ = short_run
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts
    assert any(n.startswith("best-epoch=") for n in ckpts)
    assert not any(n.endswith(".tmp") for n in ckpts)
    # Plain containers only: loads with torch's safe loader, and carries the model config.
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["hidden_sizes"] == [512, 256, 256, 128]
    assert ckpt["hyper_parameters"]["optim_cfg"]["_target_"] == "src.optim.Adam"
    # stamped with what it was trained with: a sweep started again resumes only its own config's
    results = json.loads((out / "results.json").read_text())
    assert (ckpt["run"]["config_hash"], ckpt["run"]["seed"]) == (results["provenance"]["config_hash"],
                                                                 results["config"]["seed"])
    assert ckpt["run"]["config"]["optim"] == results["config"]["optim"] and ckpt["run"]["changes"] == []
    assert "seed" not in ckpt["run"]["config"] and "paths" not in ckpt["run"]["config"]  # as the hash


def test_tensorboard_written(short_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = short_run
    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    # the loss curve has one point per optimizer step, though it is written once per epoch
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(20))
    for tag in ("train/acc", "val/acc", "val/loss", "test/acc", "hp/test_acc"):
        assert tag in ea.Tags()["scalars"], tag


@pytest.fixture(scope="module")
def train_py(tmp_path_factory, data_dir):
    """This file's two train.py processes, run at once: {name: (its run dir, its process)}."""
    tmp = tmp_path_factory.mktemp("train_py")
    runs = {"overrides": [*FAST, "optim=sgd_mom", "init=xavier", "optim.lr=0.05"],
            "gpu": ["trainer.accelerator=gpu", "print_config=false"]}
    if torch.cuda.is_available():
        del runs["gpu"]
    done = at_once(*(lambda name=name, args=args: run_script("train.py", *args, f"hydra.run.dir={tmp / name / 'run'}")
                     for name, args in runs.items()))
    return {name: (tmp / name / "run", res) for name, res in zip(runs, done, strict=True)}


def test_train_py_subprocess_with_overrides(train_py):
    out, res = train_py["overrides"]
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    assert r["config"]["optim"]["lr"] == 0.05 and r["config"]["optim"]["_target_"] == "src.optim.SGDMomentum"
    assert (out / ".hydra" / "config.yaml").exists()
    assert str(out) in res.stdout + res.stderr  # the run says where its outputs are


def test_gpu_without_cuda_is_one_clear_line(train_py):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out, res = train_py["gpu"]
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "trainer.accelerator=gpu" in lines[0] and "CUDA" in lines[0]
    assert json.loads((out / "results.json").read_text())["status"] == "failed"


def test_run_dirs_have_sub_second_timestamps():
    import yaml

    from tests.conftest import ROOT

    hydra_cfg = yaml.safe_load((ROOT / "conf" / "hydra" / "default.yaml").read_text())
    assert hydra_cfg["run"]["dir"].endswith("%f}") and hydra_cfg["sweep"]["dir"].endswith("%f}")


def test_testing_an_earlier_best_checkpoint_keeps_the_whole_history(tmp_path, data_dir):
    """trainer.test(ckpt_path=best) loads an earlier epoch's checkpoint: the run's history (and
    its RNG) must stay the whole run's, not be cut back to that epoch."""
    out = tmp_path / "run"
    # monitor val/loss with mode=max: the "best" checkpoint is the worst epoch, epoch 0
    train(compose([*FAST, "trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=val/loss",
                   "callbacks.model_checkpoint.mode=max"], out))
    r = json.loads((out / "results.json").read_text())
    assert "epoch=00" in r["best_checkpoint"]
    assert len(r["train_scores"]) == 2 and len(r["val_scores"]) == 2 and len(r["train_losses"]) == 20


@pytest.mark.parametrize("there_before", [False, True])
def test_a_setting_lightning_refuses_at_fit_start_leaves_no_empty_logs(tmp_path, data_dir, there_before):
    """`limit_train_batches=0.001` is refused by Lightning only inside fit, after the loggers made
    their folders: an events file with nothing in it, listed by TensorBoard as a run. A folder
    that was there before is not this run's to remove."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from src.training import train
    from tests.conftest import compose

    out = tmp_path / "run"
    if there_before:
        (out / "tensorboard").mkdir(parents=True)
        (out / "tensorboard" / "events.out.tfevents.earlier").write_bytes(b"kept")
    cfg = compose([*FAST, "trainer.limit_train_batches=0.001", "data.train_subset=2560",
                   "logger=[tensorboard,csv]"], out)
    with pytest.raises(MisconfigurationException, match="limit_train_batches"):
        train(cfg)
    assert not (out / "csv").exists()
    assert (out / "tensorboard").exists() == there_before
    if there_before:
        assert [p.name for p in (out / "tensorboard").iterdir()] == ["events.out.tfevents.earlier"]


def test_a_resume_lightning_refuses_at_fit_start_adds_no_empty_events_file(tmp_path, data_dir):
    """The same refusal on a resume: the run's TensorBoard got an empty events file (a run with
    nothing in it), since the clean-up was only for fresh runs."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    out = tmp_path / "run"
    train(compose([*FAST, "data.train_subset=2560"], out))
    before = sorted(p.name for p in (out / "tensorboard").iterdir())
    cfg = compose([*FAST, "trainer.max_epochs=2", "trainer.limit_train_batches=0.001", "data.train_subset=2560",
                   f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"], out)
    with pytest.raises(MisconfigurationException, match="limit_train_batches"):
        train(cfg)
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == before


@pytest.mark.parametrize("logger", ["csv", "[csv,tensorboard]"])
def test_a_csv_logged_run_ends_ok_with_its_hyperparameters_and_scores(tmp_path, logger):
    """`logger=csv` failed every run at its very end (CSVLogger.log_hyperparams takes no metrics):
    results.json said `failed` with no test_acc after training and testing had finished."""
    import csv

    import yaml

    out = tmp_path / "run"
    train(compose([*FAST, f"logger={logger}"], out))
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "ok" and results["test_acc"] is not None
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["optim"] == "adam" and hparams["status"] == "ok"
    with open(out / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["hp/test_acc"]) for r in rows if r.get("hp/test_acc")] == [results["test_acc"]]


def test_a_run_says_the_probes_verdict_before_its_first_epoch(tmp_path, capsys):
    """The student's question (does the signal keep its size with depth?) was answered only in
    probe.png; the terminal now says it at the start, from the same probe.json."""
    from callbacks.variance_probe import trends

    out = tmp_path / "run"
    train(compose([*FAST, "callbacks=default", "callbacks.variance_probe.draws=2", "init=normal",
                   "init.std=0.1", "model.act_fn=identity"], out))
    lines = capsys.readouterr().out.splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("at init")]
    assert len(said) == 1 and lines[said[0]] == "at init (probe.png):"
    forward, backward = lines[said[0] + 1], lines[said[0] + 2]
    report = json.loads((out / "probe.json").read_text())["variance"]
    verdicts = trends(report)
    assert verdicts["forward"].startswith("Forward variance grows ×") and verdicts["forward"].endswith(": exploding.")
    forward_factor = verdicts["forward"].split("×")[1].split()[0]  # "3.17": the per-layer factor
    assert forward == f"  forward variance grows ×{forward_factor} per layer with depth: exploding"
    assert backward.startswith("  backward variance ") and "(×" not in backward
    assert backward.endswith(verdicts["backward"].rsplit(": ", 1)[-1].rstrip("."))
    assert max(len(line) for line in lines[said[0]:said[0] + 3]) <= 80  # fits a terminal
    assert said[0] < next(i for i, line in enumerate(lines) if line.startswith("epoch 0/"))
