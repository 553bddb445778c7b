"""landscape.py labels a run and rebuilds its initial weights from what the drawn checkpoint was
trained with (its `run` stamp, src/training.py), not from the run's latest config: a resume with
another seed, init= or optim.lr, or one that diverged before writing a checkpoint, changes the
latest config but neither the checkpoint's weights nor the init they came from. The stamp's
`first` carries the first try's seed and init across resumes.

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
from src.landscape import first_seed_and_init, landscape, load_run, run_config, was_resumed
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
    # the second try's checkpoint carries the first try's seed and init, its own config the second's
    stamp = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["run"]
    assert stamp["first"] == {"seed": 42, "init": {"_target_": "src.init.Kaiming"}, "init_name": "kaiming"}
    assert (stamp["seed"], stamp["config"]["init_name"]) == (7, "xavier")
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


def test_the_init_is_the_first_trys_and_the_label_the_checkpoints(resumed_run, tmp_path, monkeypatch):
    run, recorded = resumed_run
    import src.landscape

    def unused(run_dir):
        raise AssertionError("a stamped checkpoint is drawn from its stamp, not the run's config")

    monkeypatch.setattr(src.landscape, "run_config", unused)
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


def test_an_old_checkpoint_of_a_resume_that_changed_its_config_has_an_unknown_init(resumed_run, tmp_path, caplog):
    """A checkpoint stamped before `first`, by a resume that changed its config (seed=7 init=xavier
    here): which seed and init made its initial weights is not known, and not guessed."""
    run = _copy(resumed_run[0], tmp_path / "run", path=False)
    _restamp(run, lambda s: {k: v for k, v in s.items() if k != "first"})
    out = tmp_path / "out"
    record = landscape(compose([f"run={run}", *FAST_LANDSCAPE], out, config_name="landscape"))
    r = record["runs"][0]
    why = ("its checkpoint predates the record of the first try's seed and init and was resumed with a "
           "changed config")
    warning = (f"the initial weights cannot be recreated faithfully: {why}, and the run recorded no weight path "
               "from step 0; the interpolation is left out")
    assert r["interpolation"] is None and r["warnings"] == [warning]
    assert r["trained_with"]["why_no_init"] == why and r["trained_with"]["first_seed"] is None
    assert r["label"] == "sgd lr=0.1 · unknown init · relu"
    assert not (out / "interpolation.png").exists()
    assert [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"] == [f"{run}: {warning}"]
    # its recorded path still gives the init: the path's first point is the truth
    with_path = _copy(resumed_run[0], tmp_path / "with_path")
    _restamp(with_path, lambda s: {k: v for k, v in s.items() if k != "first"})
    loaded = load_run(with_path)
    assert loaded.init_source == "the recorded path's first point (float16)" and loaded.warnings == []


def test_an_old_checkpoint_no_resume_changed_is_the_first_trys(resumed_run, tmp_path):
    """A checkpoint stamped before `first` with no changes: its own seed and config are the first
    try's (here the first try's stamp, as it was before the resume)."""
    run = _copy(resumed_run[0], tmp_path / "run", path=False)
    first = {"seed": 42, "init": {"_target_": "src.init.Kaiming"}, "init_name": "kaiming"}
    _restamp(run, lambda s: {**{k: v for k, v in s.items() if k != "first"}, "seed": 42, "changes": [],
                             "config": {**s["config"], "init": first["init"], "init_name": "kaiming"}})
    loaded = load_run(run)
    assert (loaded.trained.seed, loaded.trained.init, loaded.trained.init_name) == (42, first["init"], "kaiming")
    assert torch.equal(loaded.init.half().float(), resumed_run[1]) and loaded.warnings == []
    assert loaded.label == "sgd lr=0.1 · kaiming init · relu"


def test_the_first_trys_seed_and_init_from_a_stamp():
    kaiming, xavier = {"_target_": "src.init.Kaiming"}, {"_target_": "src.init.Xavier"}
    first = {"seed": 42, "init": kaiming, "init_name": "kaiming"}
    later = {"seed": 7, "config": {"init": xavier, "init_name": "xavier"}, "changes": ["resumed at step 7 ..."]}
    assert first_seed_and_init({**later, "first": first}) == (42, kaiming, "kaiming")
    assert first_seed_and_init({**later, "first": {**first, "init_name": None}}) == (42, kaiming, None)
    # stamped before `first`: its own when no resume changed its config
    assert first_seed_and_init({**later, "changes": []}) == (7, xavier, "xavier")
    with pytest.raises(ValueError, match="^its checkpoint predates .* and was resumed with a changed config$"):
        first_seed_and_init(later)
    with pytest.raises(ValueError, match="^its checkpoint predates .* and holds no history of resumes$"):
        first_seed_and_init({k: v for k, v in later.items() if k != "changes"})
    with pytest.raises(ValueError, match="^the run was resumed from a checkpoint that holds no record of"):
        first_seed_and_init({**later, "first": None})
    for bad in ({**first, "seed": None}, {**first, "seed": True}, {**first, "init": "kaiming"}, ["not", "a", "dict"]):
        with pytest.raises(ValueError, match="names no seed or no init of the first try"):
            first_seed_and_init({**later, "first": bad})


@pytest.mark.parametrize("given, resumed", [
    ("ckpt_path=/r/last.ckpt", True), ("+ckpt_path=/r/last.ckpt", True), ("++ckpt_path=/r/last.ckpt", True),
    ("ckpt_path=null", False), ("++ckpt_path=null", False), ("seed=7", False)])
def test_was_resumed_reads_every_form_of_the_ckpt_path_override(tmp_path, given, resumed):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["optim=sgd", given]))
    assert was_resumed(tmp_path) is resumed


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
