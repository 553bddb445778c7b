"""callbacks/weight_path.py in-process, on a 4 -> 3 linear model (15 parameters, 5 batches an
epoch): which steps are recorded, that each point is the weights at its step, the files and their
metadata, the resume's clean-up, bad arguments. test_landscape.py checks the same recorder through
a real train.py run killed and resumed (subprocesses: too slow to run per mutant)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.weight_path import DTYPES, WeightPath, load_path, point_file, recorded_steps


class Line(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Snapshots(pl.Callback):
    """The weights after each optimizer step, by global step (0: before training)."""

    def __init__(self):
        self.by_step = {}

    @staticmethod
    def _flat(module):
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()

    def on_train_start(self, trainer, pl_module):
        self.by_step.setdefault(trainer.global_step, self._flat(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.by_step[trainer.global_step] = self._flat(pl_module)


def fit(root, recorder: WeightPath, max_epochs=2, max_steps=-1) -> Snapshots:
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(20, 4, generator=gen), torch.randint(0, 3, (20,), generator=gen))
    snaps = Snapshots()
    trainer = pl.Trainer(max_epochs=max_epochs, max_steps=max_steps, default_root_dir=root, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[recorder, snaps])
    trainer.fit(Line(), DataLoader(data, batch_size=4))
    return snaps


def fake_trainer(root, step=0, batches=5, epoch=0, rank0=True, max_epochs=2):
    return SimpleNamespace(is_global_zero=rank0, default_root_dir=str(root), num_training_batches=batches,
                           max_epochs=max_epochs, global_step=step, current_epoch=epoch)


def test_every_n_steps_and_every_epoch_record_the_weights_of_that_step(tmp_path, caplog):
    recorder = WeightPath(every_n_steps=2, every_n_epochs=1, dtype="float32")
    with caplog.at_level(logging.INFO, logger="callbacks.weight_path"):
        snaps = fit(tmp_path, recorder)
    directory = tmp_path / "weight_path"
    # steps 2, 4, ... and each epoch's last step (5, 10); the initial weights; no duplicate at 10
    assert recorded_steps(directory) == recorder.steps == [0, 2, 4, 5, 6, 8, 10]
    for step in recorder.steps:
        point = torch.load(point_file(directory, step), weights_only=True)
        assert point["step"] == step and point["epoch"] == step / 5
        assert point["weights"].dtype == torch.float32
        assert torch.equal(point["weights"], snaps.by_step[step]), step
    assert not torch.equal(snaps.by_step[0], snaps.by_step[10])  # it trained
    meta = json.loads((directory / "meta.json").read_text())
    assert meta == {"names": ["net.weight", "net.bias"], "shapes": [[3, 4], [3]], "numel": 15,
                    "dtype": "float32", "every_n_steps": 2, "every_n_epochs": 1}
    # 1 + 2 epochs x (5 // 2 steps + 1 epoch end) = 7: the estimate is what was recorded
    assert f"weight path: up to 7 points x 0.00 MB (float32) in {directory}" in caplog.messages
    assert sorted(p.name for p in directory.iterdir()) == ["meta.json", *(point_file(directory, s).name
                                                                          for s in recorder.steps)]


def test_every_other_epoch_and_the_final_weights(tmp_path):
    recorder = WeightPath(every_n_steps=None, every_n_epochs=2, dtype="float32")
    snaps = fit(tmp_path, recorder, max_epochs=3)
    path = load_path(tmp_path)
    assert path["steps"] == [0, 10, 15] and path["epochs"] == [0.0, 2.0, 3.0]  # 15: the end, not an even epoch
    assert torch.equal(path["weights"][-1], snaps.by_step[15])


def test_every_third_epoch(tmp_path):
    path = fit(tmp_path, WeightPath(every_n_epochs=3, dtype="float32"), max_epochs=4) and load_path(tmp_path)
    assert path["steps"] == [0, 15, 20]  # after epochs 3 and 4 (the end)


def test_the_size_estimate_in_the_log(tmp_path, caplog):
    """1 + max_epochs x (steps an epoch / every_n_steps + 1 if every epoch) points, of
    parameters x bytes each."""
    big = nn.Linear(1000, 1000)  # 1,001,000 parameters: 4.00 MB in float32, 2.00 in float16
    cases = [(dict(every_n_steps=3, every_n_epochs=None, dtype="float32"), 4, "up to 9 points x 4.00 MB (float32)"),
             (dict(every_n_epochs=1, dtype="float16"), 4, "up to 5 points x 2.00 MB (float16)"),
             (dict(every_n_steps=2, every_n_epochs=1, dtype="float16"), None, "up to 5 points x 2.00 MB (float16)")]
    for i, (kwargs, max_epochs, expected) in enumerate(cases):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="callbacks.weight_path"):
            WeightPath(**kwargs).on_train_start(fake_trainer(tmp_path / str(i), batches=6, max_epochs=max_epochs),
                                                SimpleNamespace(named_parameters=big.named_parameters))
        assert caplog.messages == [f"weight path: {expected} in {tmp_path / str(i) / 'weight_path'}"]


def test_max_steps_ends_with_its_own_point(tmp_path):
    recorder = WeightPath(every_n_steps=3, every_n_epochs=None, dtype="float32")
    snaps = fit(tmp_path, recorder, max_epochs=5, max_steps=7)
    path = load_path(tmp_path)
    assert path["steps"] == [0, 3, 6, 7] and path["epochs"] == [0.0, 0.6, 1.2, 1.4]
    assert torch.equal(path["weights"], torch.stack([snaps.by_step[s] for s in (0, 3, 6, 7)]))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_points_and_what_load_path_returns(tmp_path, dtype):
    recorder = WeightPath(every_n_epochs=1, dtype=dtype)
    snaps = fit(tmp_path, recorder, max_epochs=1)
    raw = torch.load(point_file(tmp_path / "weight_path", 5), weights_only=True)
    assert raw["weights"].dtype == DTYPES[dtype]
    path = load_path(tmp_path)
    assert path["steps"] == [0, 5] and path["dtype"] == dtype
    assert path["names"] == ["net.weight", "net.bias"] and path["shapes"] == [(3, 4), (3,)]
    assert path["weights"].dtype == torch.float32 and path["weights"].shape == (2, 15)
    assert torch.equal(path["weights"][1], snaps.by_step[5].to(DTYPES[dtype]).float())


def test_no_path_is_none(tmp_path):
    assert load_path(tmp_path) is None  # no weight_path dir
    (tmp_path / "weight_path").mkdir()
    torch.save({"step": 0, "epoch": 0.0, "weights": torch.zeros(3)}, point_file(tmp_path / "weight_path", 0))
    assert load_path(tmp_path) is None  # points but no meta.json
    (tmp_path / "weight_path" / "meta.json").write_text("{}")
    point_file(tmp_path / "weight_path", 0).unlink()
    assert load_path(tmp_path) is None  # meta.json but no points


def test_recorded_steps_reads_only_point_files_in_numeric_order(tmp_path):
    for name in ("step_0000100.pt", "step_12.pt", "step_0000003.pt", "step_x.pt", "step_0000004.pt.tmp",
                 ".step_0000005.pt.abc.tmp", "meta.json", "xstep_0000007.pt.bak"):
        (tmp_path / name).write_bytes(b"")
    assert recorded_steps(tmp_path) == [3, 12, 100]
    assert point_file(tmp_path, 42) == tmp_path / "step_0000042.pt"


def test_bad_arguments_are_one_clear_error():
    for key, value in (("every_n_steps", 0), ("every_n_steps", True), ("every_n_epochs", 1.5),
                       ("every_n_epochs", "2"), ("every_n_steps", -3)):
        with pytest.raises(ValueError, match=rf"^callbacks.weight_path.{key}={value!r} must be a positive integer "
                                             r"or null$"):
            WeightPath(**{key: value})
    with pytest.raises(ValueError, match=r"^callbacks.weight_path: set every_n_steps or every_n_epochs \(or both\)$"):
        WeightPath(every_n_steps=None, every_n_epochs=None)
    with pytest.raises(ValueError, match=r"^callbacks.weight_path.dtype='int8' is not one of: float16, bfloat16, "
                                         r"float32$"):
        WeightPath(dtype="int8")
    default = WeightPath()
    assert (default.every_n_steps, default.every_n_epochs, default.dtype, default.dirname) == \
        (None, 1, "float16", "weight_path")
    assert WeightPath(every_n_steps=1, every_n_epochs=None).every_n_steps == 1


def test_state_round_trip():
    recorder = WeightPath()
    recorder.steps = [0, 5, 10]
    state = recorder.state_dict()
    assert state == {"steps": [0, 5, 10]}
    state["steps"].append(99)  # a copy, not the live list
    assert recorder.steps == [0, 5, 10]
    other = WeightPath()
    other.load_state_dict({"steps": ["0", 5.0, 10]})
    assert other.steps == [0, 5, 10] and all(type(s) is int for s in other.steps)
    empty = WeightPath()
    empty.load_state_dict({})
    assert empty.steps == []


def test_a_resumed_run_drops_the_points_after_its_checkpoint_and_warns_of_a_gap(tmp_path, caplog):
    fit(tmp_path, WeightPath(every_n_steps=1, every_n_epochs=None, dtype="float32"))
    directory = tmp_path / "weight_path"
    assert recorded_steps(directory) == list(range(11))
    kept = {s: point_file(directory, s).read_bytes() for s in range(4)}
    point_file(directory, 2).unlink()  # lost: the path will have a gap there
    resumed = WeightPath(every_n_steps=1, every_n_epochs=None, dtype="float32")
    resumed.load_state_dict({"steps": [0, 1, 2, 3, 11, 12, 13, 14]})  # the checkpoint, and four lost points
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="callbacks.weight_path"):
        resumed.on_train_start(fake_trainer(tmp_path, step=3), Line())
    assert recorded_steps(directory) == [0, 1, 3]  # 4..10 deleted, to be recorded again
    assert all(point_file(directory, s).read_bytes() == kept[s] for s in (0, 1, 3))
    assert resumed.steps == [0, 1, 2, 3, 11, 12, 13, 14]  # nothing recorded at the start of a resume
    assert caplog.messages == [f"weight path: 5 recorded points (steps [2, 11, 12]...) are not in {directory}; "
                               "the path will have a gap"]


def test_a_fresh_run_in_a_reused_dir_starts_over(tmp_path, caplog):
    fit(tmp_path, WeightPath(every_n_steps=1, every_n_epochs=None, dtype="float32"))
    fresh = WeightPath(every_n_epochs=1, dtype="float32")
    module = Line()
    with torch.no_grad():
        module.net.weight.fill_(0.25)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="callbacks.weight_path"):
        fresh.on_train_start(fake_trainer(tmp_path), module)
    assert recorded_steps(tmp_path / "weight_path") == fresh.steps == [0]
    assert caplog.messages == []
    point = torch.load(point_file(tmp_path / "weight_path", 0), weights_only=True)
    assert torch.equal(point["weights"][:12], torch.full((12,), 0.25))
    deep = tmp_path / "not" / "yet"  # a run dir that does not exist yet
    WeightPath().on_train_start(fake_trainer(deep), module)
    assert recorded_steps(deep / "weight_path") == [0]


def test_only_rank_zero_writes(tmp_path):
    recorder = WeightPath(every_n_steps=1, dtype="float32")
    trainer = fake_trainer(tmp_path, rank0=False)
    recorder.on_train_start(trainer, Line())
    trainer.global_step = 1
    recorder.on_train_batch_end(trainer, Line(), None, None, 0)
    recorder.on_train_end(trainer, Line())
    assert not (tmp_path / "weight_path").exists() and recorder.steps == []


def test_epochs_done_when_an_epoch_has_no_length(tmp_path):
    recorder = WeightPath(dtype="float32")
    for batches, epoch in ((float("inf"), 3), (0, 2)):  # an iterable dataset without a length
        recorder.steps = []
        recorder._record(fake_trainer(tmp_path, step=7, batches=batches, epoch=epoch), Line())
        assert torch.load(point_file(tmp_path / "weight_path", 7), weights_only=True)["epoch"] == float(epoch)
    recorder.steps = []
    recorder._record(fake_trainer(tmp_path, step=7, batches=4), Line())
    assert torch.load(point_file(tmp_path / "weight_path", 7), weights_only=True)["epoch"] == 1.75
    recorder.steps = []
    recorder._record(fake_trainer(tmp_path, step=7, batches=1, epoch=6), Line())  # one batch an epoch
    assert torch.load(point_file(tmp_path / "weight_path", 7), weights_only=True)["epoch"] == 7.0


def test_an_unreadable_path_names_its_file(tmp_path):
    """A torn copy or an edit: load_path says which file and why, in one line (landscape.py then
    leaves the path out, or stops with that line when directions=pca needs it)."""
    from callbacks.weight_path import UnreadablePath

    fit(tmp_path, WeightPath(every_n_epochs=1, dtype="float32"), max_epochs=2)
    directory = tmp_path / "weight_path"
    meta_file, good_meta = directory / "meta.json", (directory / "meta.json").read_text()
    meta = json.loads(good_meta)
    assert load_path(tmp_path)["steps"] == [0, 5, 10]
    for broken, why in [('{"names": [', "JSONDecodeError"),
                        (json.dumps({**meta, "dtype": "int8"}), "ValueError: dtype 'int8', 2 names for 2 shapes"),
                        (json.dumps({**meta, "names": ["net.weight"]}), "ValueError: dtype 'float32', 1 names for 2 shapes"),
                        (json.dumps({k: v for k, v in meta.items() if k != "shapes"}), "KeyError: 'shapes'"),
                        ("[]", "TypeError")]:
        meta_file.write_text(broken)
        with pytest.raises(UnreadablePath) as err:
            load_path(tmp_path)
        assert str(err.value).startswith(f"{meta_file} is unreadable ({why}"), str(err.value)
        assert "\n" not in str(err.value)
    meta_file.write_text(good_meta)
    point = point_file(directory, 5)
    good_point = point.read_bytes()
    for broken, why in [(good_point[: len(good_point) // 2], ""),
                        ({"step": 5, "epoch": 1.0, "weights": torch.zeros(14)},
                         "ValueError: weights of shape (14,), meta.json says 15"),
                        ({"step": 5, "epoch": 1.0, "weights": [0.0] * 15}, "ValueError: weights of shape (), meta"),
                        ({"step": 5, "weights": torch.zeros(15)}, "KeyError: 'epoch'")]:
        if isinstance(broken, bytes):
            point.write_bytes(broken)
        else:
            torch.save(broken, point)
        with pytest.raises(UnreadablePath) as err:
            load_path(tmp_path)
        assert str(err.value).startswith(f"{point} is unreadable ({why}"), str(err.value)
    point.write_bytes(good_point)
    assert load_path(tmp_path)["steps"] == [0, 5, 10]


def test_a_point_past_float16s_range_is_kept_in_float32_with_one_warning(tmp_path):
    """float16 ends at 65504: such weights would be written as inf, a path landscape.py cannot
    use. The point is kept in float32 instead, and the run's warnings say so once."""
    recorder, module = WeightPath(dtype="float16"), Line()
    directory = tmp_path / "weight_path"
    recorder.on_train_start(fake_trainer(tmp_path), module)  # in range: float16
    with torch.no_grad():
        module.net.weight[0, 0] = 2.9e6
    huge = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()
    with pytest.warns(UserWarning, match=r"^weight path: the weights at step 5 ") as said:  # the console's line
        for step in (5, 10):
            recorder._record(fake_trainer(tmp_path, step=step), module)
    assert len(said) == 1
    points = {s: torch.load(point_file(directory, s), weights_only=True)["weights"] for s in (0, 5, 10)}
    assert [points[s].dtype for s in (0, 5, 10)] == [torch.float16, torch.float32, torch.float32]
    assert torch.equal(points[5], huge) and torch.equal(points[10], huge)
    assert recorder.warnings == ["weight path: the weights at step 5 (epoch 1) reach 2.9e+06, beyond float16's "
                                 "range (65504); such points are recorded in float32 (twice the size)"]
    path = load_path(tmp_path)  # mixed dtypes load as one float32 matrix; meta.json keeps the setting
    assert path["dtype"] == "float16" and torch.isfinite(path["weights"]).all()
    assert torch.equal(path["weights"][2], huge)
    # bfloat16 holds float32's range: no fall-back; NaN weights (a diverged run) are not an overflow
    other = WeightPath(dtype="bfloat16")
    other._record(fake_trainer(tmp_path / "b", step=1), module)
    assert torch.load(point_file(tmp_path / "b" / "weight_path", 1), weights_only=True)["weights"].dtype == torch.bfloat16
    with torch.no_grad():
        module.net.weight[0, 1] = float("nan")
    nan = WeightPath(dtype="float16")
    nan._record(fake_trainer(tmp_path / "n", step=1), module)
    assert torch.load(point_file(tmp_path / "n" / "weight_path", 1), weights_only=True)["weights"].dtype == torch.float16
    assert other.warnings == nan.warnings == []
