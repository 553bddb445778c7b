"""landscape.py labels a run and rebuilds its initial weights from what the drawn checkpoint was
trained with (its `run` stamp, src/training.py), not from the run's latest config: a resume with
another seed, init= or optim.lr, or one that diverged before writing a checkpoint, changes the
latest config but neither the checkpoint's weights nor the init they came from.

One module fixture trains a tiny SGD run with its path recorded (seed 42, kaiming), resumes it
with seed=7 init=xavier, then resumes it again with optim.lr=1e6, which diverges at once and
writes no checkpoint (three train.py subprocesses)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from callbacks.weight_path import load_path
from src.landscape import initial_seed_and_init, landscape, load_run, run_config
from tests.conftest import compose, run_script

FIRST = ["optim=sgd", "trainer.max_epochs=1", "data.train_subset=1280", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.accelerator=cpu", "callbacks=with_path",
         *(f"~callbacks.{name}" for name in ("activation_stats", "gradient_stats", "weight_stats",
                                             "distribution_figures")),
         "print_config=false"]
FAST_LANDSCAPE = ["directions=random", "landscape.resolution=3", "landscape.subset=256", "landscape.alpha_points=3",
                  "landscape.device=cpu"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, data_dir):
    """(run dir, the recorded initial weights): trained with seed 42 and kaiming, resumed with seed
    7 and xavier (trained on), resumed with optim.lr=1e6 (diverged, no checkpoint written)."""
    run = tmp_path_factory.mktemp("landscape_config") / "run"
    first = run_script("train.py", *FIRST, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    init = load_path(run)["weights"][0]
    second = run_script("train.py", f"ckpt_path={run}", "seed=7", "init=xavier", "trainer.max_epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    ckpt = (run / "checkpoints" / "last.ckpt").read_bytes()
    third = run_script("train.py", f"ckpt_path={run}", "optim.lr=1000000", "trainer.max_epochs=3")
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "diverged", third.stderr[-3000:]
    # the premise: the latest config is the diverged try's, the checkpoint the second try's
    assert (results["config"]["seed"], results["config"]["init_name"], results["config"]["optim"]["lr"]) == \
        (7, "xavier", 1e6)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == ckpt
    return run, init


def _copy(run, dest, path=True):
    shutil.copytree(run, dest, ignore=None if path else shutil.ignore_patterns("weight_path"))
    return dest


def _restamp(run, change) -> None:
    """Edit the `run` stamp of the run's last.ckpt (change(stamp) -> new stamp, None: no stamp)."""
    file = run / "checkpoints" / "last.ckpt"
    state = torch.load(file, weights_only=True)
    stamp = change(dict(state["run"]))
    state = {k: v for k, v in state.items() if k != "run"} | ({"run": stamp} if stamp is not None else {})
    torch.save(state, file)


def test_the_init_is_the_first_trys_and_the_label_the_checkpoints(resumed_run, tmp_path):
    run, recorded = resumed_run
    own = load_run(run)  # with its recorded path: the rebuild from seed 42 and kaiming equals its first point
    assert own.init_source == ("recreated from the first try's seed 42 and init (kaiming); equals the "
                               "recorded path's first point")
    assert own.label == "sgd lr=0.1 · kaiming init · relu" and own.warnings == []
    # without the path only the rebuild is there: it is still the recorded init (was seed 7's xavier)
    bare = _copy(run, tmp_path / "bare", path=False)
    loaded = load_run(bare)
    assert torch.equal(loaded.init.half().float(), recorded)
    assert torch.equal(loaded.init, own.init)
    assert loaded.label == "sgd lr=0.1 · kaiming init · relu"  # was `sgd lr=1e+06 · xavier init · relu`
    record = landscape(compose([f"run={bare}", *FAST_LANDSCAPE], tmp_path / "out", config_name="landscape"))
    r = record["runs"][0]
    assert r["interpolation"]["init_source"] == ("recreated from the first try's seed 42 and init (kaiming) (no "
                                                 "recorded path to check it against)")
    assert r["trained_with"] == {"source": "the checkpoint's own record", "first_seed": 42,
                                 "init": {"_target_": "src.init.Kaiming"}, "init_source": r["interpolation"]["init_source"],
                                 "why_no_init": None}
    assert r["warnings"] == [] and r["checks"]["passed"]


def test_an_init_the_history_cannot_tell_is_not_drawn_and_is_said(resumed_run, tmp_path, caplog):
    run = _copy(resumed_run[0], tmp_path / "run", path=False)
    _restamp(run, lambda s: {k: v for k, v in s.items() if k != "changes"})  # a stamp without its history
    out = tmp_path / "out"
    record = landscape(compose([f"run={run}", *FAST_LANDSCAPE], out, config_name="landscape"))
    r = record["runs"][0]
    warning = ("the initial weights cannot be recreated faithfully: its checkpoint's record has no history of "
               "resumes, and the run recorded no weight path from step 0; the interpolation is left out")
    assert r["interpolation"] is None and r["warnings"] == [warning]
    assert r["trained_with"]["why_no_init"] == "its checkpoint's record has no history of resumes"
    assert r["label"] == "sgd lr=0.1 · unknown init · relu"
    assert not (out / "interpolation.png").exists()
    assert [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"] == [f"{run}: {warning}"]
    # its recorded path still gives the init: the path's first point is the truth
    with_path = _copy(resumed_run[0], tmp_path / "with_path")
    _restamp(with_path, lambda s: {k: v for k, v in s.items() if k != "changes"})
    loaded = load_run(with_path)
    assert loaded.init_source == "the recorded path's first point (float16)" and loaded.warnings == []


def test_a_resumed_run_without_a_stamp_is_drawn_from_its_latest_config_and_flagged(resumed_run, tmp_path):
    run = _copy(resumed_run[0], tmp_path / "run", path=False)
    _restamp(run, lambda s: None)  # a checkpoint from before stamps: the run's config is all there is
    loaded = load_run(run)
    assert loaded.warnings == [
        "the initial weights may not be the run's: the checkpoint holds no record of what it was trained with, "
        "and the run was resumed: its config is the latest try's, whose seed or init may not be the first "
        "try's; the interpolation starts from them"]
    assert loaded.trained.seed == 7 and loaded.label == "sgd lr=1e+06 · xavier init · relu"
    assert loaded.init_source.startswith("recreated from the run config's seed 7 and init (xavier) (no recorded")


def test_an_init_that_cannot_be_rebuilt_is_said_in_landscape_json(resumed_run, tmp_path, monkeypatch, caplog):
    import src.training

    def broken(cfg):
        raise RuntimeError("no such layer")

    monkeypatch.setattr(src.training, "build_module", broken)
    loaded = load_run(_copy(resumed_run[0], tmp_path / "run", path=False))
    assert loaded.init is None and loaded.warnings == [
        "the initial weights could not be rebuilt from the first try's seed 42 and init (kaiming), and the run "
        "recorded no weight path from step 0; the interpolation is left out"]
    assert "cannot recreate the initial weights from the run's config (no such layer)" in caplog.text


def test_an_unresolved_lr_of_a_run_config_is_resolved_with_the_runs_own_choices(resumed_run, tmp_path, caplog):
    """experiment=lr_sensitivity: .hydra/config.yaml holds optim.lr as `${lr_around:${optim_name},
    ${lr_decade}}`, optim_name as `${hydra:runtime.choices.optim}` (landscape.py's own Hydra would
    answer that with its choices): resolved with the run's hydra.yaml."""
    run = _copy(resumed_run[0], tmp_path / "run", path=False)
    _restamp(run, lambda s: None)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["optim_name"] == "${hydra:runtime.choices.optim}"
    config["optim"]["lr"] = "${lr_around:${optim_name},${lr_decade}}"
    config["lr_decade"] = -1
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_config(run)["optim"]["lr"] == 0.01 and run_config(run)["optim_name"] == "sgd"
    loaded = load_run(run)
    assert loaded.label == "sgd lr=0.01 · xavier init · relu" and loaded.init is not None  # was `sgd · xavier ...`
    assert "cannot recreate" not in caplog.text


def _sentence(tmp_path, before: dict, after: dict, step: int = 7, changes=()) -> list[str]:
    """The stamp's `changes` after a resume from a checkpoint stamped `before` with config `after`,
    as src/training.py writes them ({"seed": .., **config} each)."""
    from src.training import changes_on_resume

    file = tmp_path / f"step{step}.ckpt"
    torch.save({"run": {"seed": before["seed"], "config": {k: v for k, v in before.items() if k != "seed"},
                        "changes": list(changes)}, "global_step": step}, file)
    return changes_on_resume(str(file), {"seed": after["seed"],
                                         "config": {k: v for k, v in after.items() if k != "seed"}})


def test_the_first_trys_seed_and_init_from_the_history_of_resumes(tmp_path):
    kaiming = {"_target_": "src.init.Kaiming"}
    first = {"seed": 42, "init": kaiming, "init_name": "kaiming", "optim": {"lr": 0.1},
             "trainer": {"max_epochs": 1, "devices": [0, 1]}}
    assert initial_seed_and_init(42, first, []) == (42, kaiming, "kaiming")
    # seed=7 init=normal init.std=0.5 trainer.devices=[2, 3] (a value with ", " in it), then seed=9
    second = {**first, "seed": 7, "init": {"_target_": "src.init.Normal", "std": 0.5}, "init_name": "normal",
              "trainer": {"max_epochs": 2, "devices": [2, 3]}}
    changes = _sentence(tmp_path, first, second)
    assert "seed 42 → 7" in changes[0] and "init.std (none) → 0.5" in changes[0]
    third = {**second, "seed": 9, "init": {**second["init"], "std": 0.25}}
    changes = _sentence(tmp_path, second, third, step=14, changes=changes)
    assert len(changes) == 2
    assert initial_seed_and_init(9, third, changes) == (42, kaiming, "kaiming")
    # more than 8 changes before `seed`: config_changes cuts the rest, the seed's may be among them
    many = {**second, "a": {f"k{i}": i for i in range(9)}}
    cut = _sentence(tmp_path, {**first, "a": {}}, many)
    assert cut[0].split("; ")[0].endswith("more")
    with pytest.raises(ValueError, match="cut short before `seed`"):
        initial_seed_and_init(7, many, cut)
    with pytest.raises(ValueError, match="no history of resumes"):
        initial_seed_and_init(7, second, None)
    with pytest.raises(ValueError, match="unreadable"):
        initial_seed_and_init(7, second, ["resumed somehow"])
    # init replaced as a whole (a section added): what it was is not in the history
    with pytest.raises(ValueError, match="replaced the whole init section"):
        initial_seed_and_init(7, second, _sentence(tmp_path, {k: v for k, v in first.items() if k != "init"}, second))

