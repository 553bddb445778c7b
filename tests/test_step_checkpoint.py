"""callbacks/checkpoint.py's pieces without a training run: the step checkpoint turned off (0),
and EpochCheckpoint's state loaded from a run dir that was moved, or resumed into another run dir
(test_resume.py resumes both ways through train() and checks the scores a run ends with; here the
state dict is loaded directly, each path, copy and score checked, in 0.1 s, which is what the
mutation runs need). test_checkpointing.py has the step checkpoint's saves and the epoch
checkpoint's writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.checkpoint import EpochCheckpoint, StepCheckpoint


def test_a_step_checkpoint_at_0_saves_at_no_step_and_lets_the_run_train(tmp_path):
    """0 turns the step saves off (train() leaves it out; a Trainer given one anyway must not fail
    on `% 0`). Only Lightning's own end-of-fit last.ckpt may appear."""
    from src.model import BaseNetwork
    from src.module import ClassifierModule
    from src.optim import SGD

    torch.manual_seed(0)
    net = BaseNetwork(input_size=4, hidden_sizes=[5], num_classes=3)
    module = ClassifierModule(net, SGD(net.parameters(), lr=0.1))
    data = TensorDataset(torch.randn(24, 4), torch.randint(0, 3, (24,)))
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, accelerator="cpu",
                         callbacks=[StepCheckpoint(dirpath=str(tmp_path / "steps"), every_n_train_steps=0)],
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(data, batch_size=6))
    # Lightning 2.6's ModelCheckpoint.on_train_end writes last.ckpt at the fit's end when nothing
    # else wrote it in the fit (save_last); nothing before that
    written = [torch.load(p, weights_only=True)["global_step"] for p in (tmp_path / "steps").glob("*.ckpt")]
    assert trainer.global_step == 4 and written in ([], [4])


def _run_dir(path: Path, names=("best-epoch=00.ckpt", "best-epoch=01.ckpt", "last.ckpt")) -> Path:
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_bytes(name.encode())
    return path


def _state(old: Path) -> dict:
    """ModelCheckpoint's state at save_top_k=2 after epochs 0 (val acc 0.8) and 1 (0.7)."""
    best, second = str(old / "best-epoch=00.ckpt"), str(old / "best-epoch=01.ckpt")
    return {"monitor": "val/acc", "best_model_score": torch.tensor(0.8), "best_model_path": best,
            "current_score": torch.tensor(0.7), "dirpath": str(old),
            "best_k_models": {best: torch.tensor(0.8), second: torch.tensor(0.7)},
            "kth_best_model_path": second, "kth_value": torch.tensor(0.7), "last_model_path": str(old / "last.ckpt")}


def _loaded(dirpath: Path, state: dict) -> EpochCheckpoint:
    checkpoint = EpochCheckpoint(dirpath=str(dirpath), monitor="val/acc", mode="max", save_top_k=2, save_last=True)
    checkpoint.load_state_dict(state)
    return checkpoint


def _as_loaded(checkpoint: EpochCheckpoint) -> dict:
    return {"dirpath": checkpoint.dirpath, "best_model_path": checkpoint.best_model_path,
            "best_model_score": checkpoint.best_model_score, "kth_best_model_path": checkpoint.kth_best_model_path,
            "kth_value": checkpoint.kth_value, "best_k_models": checkpoint.best_k_models,
            "last_model_path": checkpoint.last_model_path}


def test_a_resume_into_another_run_dir_copies_the_best_checkpoints_and_keeps_their_scores(tmp_path):
    """The new run dir (its parent not made yet) gets copies of the top-k files, whose paths and
    scores the state now names; the other run's last.ckpt is neither named nor copied (the new
    run writes its own), and the other run's files stay as they were."""
    old = _run_dir(tmp_path / "first" / "checkpoints")
    new = tmp_path / "sweep" / "second" / "checkpoints"
    loaded = _as_loaded(_loaded(new, _state(old)))
    best, second = str(new / "best-epoch=00.ckpt"), str(new / "best-epoch=01.ckpt")
    assert loaded == {"dirpath": str(new), "best_model_path": best, "best_model_score": torch.tensor(0.8),
                      "kth_best_model_path": second, "kth_value": torch.tensor(0.7),
                      "best_k_models": {best: torch.tensor(0.8), second: torch.tensor(0.7)}, "last_model_path": ""}
    assert sorted(p.name for p in new.iterdir()) == ["best-epoch=00.ckpt", "best-epoch=01.ckpt"]
    assert (new / "best-epoch=00.ckpt").read_bytes() == b"best-epoch=00.ckpt"
    assert sorted(p.name for p in old.iterdir()) == ["best-epoch=00.ckpt", "best-epoch=01.ckpt", "last.ckpt"]


def test_a_moved_run_dir_names_its_files_where_they_are_now(tmp_path):
    """The whole dir moved: every path is rebased onto the new place (last.ckpt included, which is
    there), nothing copied, the scores kept."""
    old = tmp_path / "before" / "checkpoints"
    state = _state(old)
    new = _run_dir(tmp_path / "after" / "checkpoints")
    loaded = _as_loaded(_loaded(new, state))
    best, second = str(new / "best-epoch=00.ckpt"), str(new / "best-epoch=01.ckpt")
    assert loaded == {"dirpath": str(new), "best_model_path": best, "best_model_score": torch.tensor(0.8),
                      "kth_best_model_path": second, "kth_value": torch.tensor(0.7),
                      "best_k_models": {best: torch.tensor(0.8), second: torch.tensor(0.7)},
                      "last_model_path": str(new / "last.ckpt")}
    assert not old.exists()


def test_a_best_checkpoint_gone_everywhere_leaves_no_best_score_to_beat(tmp_path):
    """Its file is in neither dir: the best path and score are cleared (the next epoch becomes the
    best), the top-k keeps what is there, and names that were empty stay empty."""
    old = _run_dir(tmp_path / "first" / "checkpoints", names=("best-epoch=01.ckpt",))
    new = tmp_path / "second" / "checkpoints"
    second = str(new / "best-epoch=01.ckpt")
    loaded = _as_loaded(_loaded(new, _state(old)))
    assert loaded["best_model_path"] == "" and loaded["best_model_score"] is None
    assert loaded["best_k_models"] == {second: torch.tensor(0.7)} and loaded["kth_best_model_path"] == second
    assert loaded["last_model_path"] == ""
    empty = {**_state(old), "best_model_path": "", "best_model_score": None, "kth_best_model_path": "",
             "best_k_models": {}, "last_model_path": ""}
    loaded = _as_loaded(_loaded(tmp_path / "third", empty))
    assert (loaded["best_model_path"], loaded["kth_best_model_path"], loaded["last_model_path"],
            loaded["best_k_models"]) == ("", "", "", {})


@pytest.mark.parametrize("where", ["same", "none"])
def test_a_state_of_this_dir_or_of_no_dir_is_lightnings_to_load(tmp_path, where):
    """The run's own dir: loaded as Lightning loads it. A state without a dir: Lightning's own
    rule too (only the best path, nothing rebased or copied)."""
    old = _run_dir(tmp_path / "run" / "checkpoints")
    state = _state(old)
    if where == "none":
        state["dirpath"] = None
        with pytest.warns(UserWarning, match="dirpath has changed"):
            loaded = _as_loaded(_loaded(tmp_path / "other", state))
        assert loaded["best_model_path"] == state["best_model_path"] and loaded["best_model_score"] is None
        assert not (tmp_path / "other").exists()
    else:
        loaded = _as_loaded(_loaded(old, state))
        assert loaded == {k: state[k] for k in loaded}
