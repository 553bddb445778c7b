"""Variance diagnostics callbacks: exact values on a tiny network, hooks, NaN, no-logger, config."""

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from callbacks.diagnostics import (
    ActivationStats,
    DistributionFigures,
    GradientStats,
    WeightStats,
    activations_of,
    tensor_stats,
)
from callbacks.update_stats import UpdateStats
from callbacks.variance_probe import VarianceProbe
from src.model import BaseNetwork
from src.module import ClassifierModule
from tests.conftest import RecordingWriter, free_port, warnings_of

ROOT = Path(__file__).resolve().parents[1]
N, D_IN, HIDDEN, CLASSES = 8, 4, 5, 3

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class TinyData(pl.LightningDataModule):
    """The whole dataset is one batch, so every training step sees the diagnostic batch; one
    validation pass per epoch (and the sanity check) runs on other data."""

    def __init__(self, x, y, with_diagnostic_batch=True):
        super().__init__()
        self.x, self.y = x, y
        if with_diagnostic_batch:
            self.diagnostic_batch = lambda n: (self.x[:n], self.y[:n])

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=N, shuffle=False)

    def val_dataloader(self):
        # Different inputs: had the hooks measured a validation batch, the variances would differ.
        return DataLoader(TensorDataset(self.x * 10, self.y), batch_size=N, shuffle=False)


def known_data():
    x = ((np.arange(N * D_IN).reshape(N, D_IN) % 7) - 3.0) / 2.0
    y = np.arange(N) % CLASSES
    return x, y


def known_weights():
    w1 = ((np.arange(HIDDEN * D_IN).reshape(HIDDEN, D_IN) * 3 % 11) - 5.0) / 10.0
    b1 = np.linspace(-0.2, 0.2, HIDDEN)
    w2 = ((np.arange(CLASSES * HIDDEN).reshape(CLASSES, HIDDEN) * 5 % 13) - 6.0) / 10.0
    b2 = np.array([0.1, -0.1, 0.0])
    return w1, b1, w2, b2


def tiny_module(lr=0.0, module_cls=ClassifierModule):
    # lr=0: the weights never move, so every logged step has the hand-computed values.
    network = BaseNetwork(act_fn="identity", input_size=D_IN, num_classes=CLASSES, hidden_sizes=[HIDDEN])
    module = module_cls(network, optimizer=torch.optim.SGD(network.parameters(), lr=lr))
    w1, b1, w2, b2 = known_weights()
    with torch.no_grad():
        for layer, (w, b) in zip((module.net.layers[0], module.net.layers[2]), ((w1, b1), (w2, b2)), strict=True):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
    return module


def fit(tmp_path, module, callbacks, logger=True, max_steps=3, data=None):
    x, y = known_data()
    data = data or TinyData(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    if logger is True:
        logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    trainer = pl.Trainer(max_steps=max_steps, logger=logger, callbacks=callbacks, accelerator="cpu",
                         default_root_dir=str(tmp_path), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    return trainer


def events(tmp_path):
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def scalar_steps(acc, tag):
    return {e.step: e.value for e in acc.Scalars(tag)}


def by_hand():
    """Activations, weight gradients (mean cross-entropy over the batch) and weights in numpy."""
    x, y = known_data()
    w1, b1, w2, b2 = known_weights()
    h = x @ w1.T + b1
    logits = h @ w2.T + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(CLASSES)[y]) / N
    g2 = dlogits.T @ h
    g1 = (dlogits @ w2).T @ x
    return {"activations": {"layers.0": h, "layers.2": logits},
            "gradients": {"layers.0": g1, "layers.2": g2},
            "weights": {"layers.0": w1, "layers.2": w2}}


def all_callbacks(figures=False):
    callbacks = [ActivationStats(every_n_steps=1, batch_size=N), GradientStats(every_n_steps=1),
                 WeightStats(every_n_steps=1)]
    # Drawing figures is the slow part (matplotlib); only the tests about figures pay for it.
    return callbacks + [DistributionFigures(every_n_epochs=2, batch_size=N)] if figures else callbacks


def no_hooks(module):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_callbacks_log_the_hand_computed_variances(tmp_path):
    module = tiny_module()
    fit(tmp_path, module, all_callbacks(figures=True), max_steps=3)
    acc = events(tmp_path)
    expected = by_hand()
    for kind, steps in (("activations", {0, 1, 2, 3}), ("gradients", {0, 1, 2}), ("weights", {0, 1, 2, 3})):
        for layer, value in expected[kind].items():
            logged = scalar_steps(acc, f"{kind}/var/{layer}")
            assert set(logged) == steps, (kind, layer, logged)
            for step, v in logged.items():
                assert v == pytest.approx(np.var(value), rel=1e-5), (kind, layer, step)
    for layer, value in expected["activations"].items():
        assert scalar_steps(acc, f"activations/mean/{layer}")[0] == pytest.approx(value.mean(), rel=1e-5, abs=1e-7)
        hist = acc.Histograms(f"activations/{layer}")[0].histogram_value
        assert hist.num == value.size and hist.min == pytest.approx(value.min(), rel=1e-5)
        assert {e.step for e in acc.Histograms(f"activations/{layer}")} == {0, 1, 2, 3}  # with the scalars
    for layer, value in expected["gradients"].items():
        assert scalar_steps(acc, f"gradients/norm/{layer}")[0] == pytest.approx(np.linalg.norm(value), rel=1e-5)
        assert acc.Histograms(f"gradients/{layer}")[0].histogram_value.num == value.size
    assert acc.Histograms("weights/layers.0")[0].histogram_value.num == HIDDEN * D_IN
    assert not [t for t in acc.Tags()["scalars"] if "/nonfinite/" in t]
    # Figures: start (step 0), every 2nd epoch (one step per epoch here: step 2), end (step 3).
    assert {e.step for e in acc.Images("distributions/activations")} == {0, 2, 3}
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    kinds = ("activations", "gradients", "weights")
    # Depth profiles once there are two logged steps to compare (step 0 alone is the probe's job).
    depth = [f"depth_{k}_step{s:06d}.png" for k in kinds for s in (2, 3)]
    assert pngs == sorted(depth + [f"{k}_step{s:06d}.png" for k in kinds for s in (0, 2, 3)])
    assert {e.step for e in acc.Images("depth/activations")} == {2, 3}
    assert no_hooks(module)


def test_helpers_match_numpy():
    module = tiny_module()
    x, _ = known_data()
    acts = activations_of(module.net, torch.tensor(x, dtype=torch.float32))
    stats = tensor_stats(acts)
    for layer, value in by_hand()["activations"].items():
        assert stats[layer]["var"] == pytest.approx(np.var(value), rel=1e-5)
    assert tensor_stats({"c": torch.full((100, 7), 0.005)})["c"]["var"] == 0.0
    assert no_hooks(module)


class FailingModule(ClassifierModule):
    def training_step(self, batch, batch_idx):
        if self.global_step == 1:
            raise RuntimeError("boom in training_step")
        return super().training_step(batch, batch_idx)


def test_hooks_removed_after_exception_in_training_step(tmp_path):
    module = tiny_module(module_cls=FailingModule)
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, module, all_callbacks(), max_steps=3)
    assert no_hooks(module)


def test_hooks_removed_after_exception_in_the_diagnostic_pass(tmp_path):
    module = tiny_module()
    x, y = known_data()
    data = TinyData(torch.tensor(x, dtype=torch.float32), torch.tensor(y), with_diagnostic_batch=False)
    data.diagnostic_batch = lambda n: (torch.zeros(n, D_IN + 1), torch.zeros(n, dtype=torch.long))  # wrong width
    with pytest.raises(RuntimeError):
        fit(tmp_path, module, [ActivationStats(every_n_steps=1, batch_size=N)], max_steps=2, data=data)
    assert no_hooks(module)


def test_nonfinite_values_are_counted_and_kept_out_of_histograms(tmp_path):
    module = tiny_module()
    with torch.no_grad():
        module.net.layers[0].weight[0, 0] = float("nan")  # hidden unit 0 is NaN for every sample
    with pytest.warns(UserWarning, match="NaN/inf"):
        fit(tmp_path, module, all_callbacks(), max_steps=1)
    acc = events(tmp_path)
    h = by_hand()["activations"]["layers.0"]
    assert scalar_steps(acc, "activations/nonfinite/layers.0")[0] == N
    assert scalar_steps(acc, "activations/var/layers.0")[0] == pytest.approx(np.var(h[:, 1:]), rel=1e-5)
    assert acc.Histograms("activations/layers.0")[0].histogram_value.num == N * (HIDDEN - 1)
    # Every logit is NaN: counted, but neither a variance nor a histogram.
    assert scalar_steps(acc, "activations/nonfinite/layers.2")[0] == N * CLASSES
    assert "activations/var/layers.2" not in acc.Tags()["scalars"]
    assert "activations/layers.2" not in acc.Tags()["histograms"]
    assert scalar_steps(acc, "weights/nonfinite/layers.0")[0] == 1
    assert acc.Histograms("weights/layers.0")[0].histogram_value.num == HIDDEN * D_IN - 1
    for tag in acc.Tags()["histograms"]:
        for event in acc.Histograms(tag):
            assert np.isfinite(event.histogram_value.sum)


def test_without_tensorboard_logger_one_warning_and_nothing_logged(tmp_path):
    module = tiny_module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, module, all_callbacks(figures=True), logger=CSVLogger(str(tmp_path)), max_steps=2)
    assert sum("TensorBoardLogger" in str(w.message) for w in caught) == 1
    assert not (tmp_path / "figures").exists()
    assert no_hooks(module)


def test_fallback_to_the_first_training_batch(tmp_path):
    module = tiny_module()
    x, y = known_data()
    data = TinyData(torch.tensor(x, dtype=torch.float32), torch.tensor(y), with_diagnostic_batch=False)
    with pytest.warns(UserWarning, match="first training batch"):
        fit(tmp_path, module, all_callbacks(), max_steps=2, data=data)
    acc = events(tmp_path)
    logged = scalar_steps(acc, "activations/var/layers.0")
    assert set(logged) == {0, 1, 2}
    assert logged[0] == pytest.approx(np.var(by_hand()["activations"]["layers.0"]), rel=1e-5)


def test_default_config_enables_diagnostics_and_none_disables_them():
    import hydra

    from tests.conftest import compose

    default = compose([], ROOT / "logs" / "unused")
    none = compose(["callbacks=none"], ROOT / "logs" / "unused")
    diagnostics = {ActivationStats, GradientStats, WeightStats, DistributionFigures, UpdateStats, VarianceProbe}
    built = {name: hydra.utils.instantiate(c) for name, c in default.callbacks.items()}
    assert diagnostics <= {type(c) for c in built.values()}
    assert built["activation_stats"].batch_size == 1024
    # All statistics on the same steps, so their curves line up.
    assert len({c.every_n_steps for c in built.values() if isinstance(c, (GradientStats, UpdateStats,
                                                                          ActivationStats, WeightStats))}) == 1
    essential = [hydra.utils.instantiate(c) for c in none.callbacks.values()]
    assert essential and not diagnostics & {type(c) for c in essential}


def _get_json(url: str):
    import json

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_real_tensorboard_serves_the_tags(tmp_path):
    fit(tmp_path, tiny_module(), all_callbacks(figures=True), max_steps=2)
    port = free_port()
    tb = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen([str(tb), "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/data/plugin"
        deadline = time.monotonic() + 120
        scalars = histograms = images = {}
        while time.monotonic() < deadline:
            try:
                scalars = _get_json(f"{base}/scalars/tags")
                histograms = _get_json(f"{base}/histograms/tags")
                images = _get_json(f"{base}/images/tags")
                if scalars.get("tb") and histograms.get("tb") and images.get("tb"):
                    break
            except OSError:  # not listening yet
                pass
            assert proc.poll() is None, "tensorboard exited"
            time.sleep(1)
        assert {"activations/var/layers.0", "gradients/var/layers.2", "weights/var/layers.0"} <= set(scalars["tb"])
        assert {"activations/layers.0", "gradients/layers.0", "weights/layers.2"} <= set(histograms["tb"])
        assert "distributions/activations" in images["tb"]
        series = _get_json(f"{base}/scalars/scalars?run=tb&tag=activations/var/layers.0")
        assert [row[1] for row in series] == [0, 1, 2]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Depth charts, moving weights, warnings, cost (issue 14)
# ---------------------------------------------------------------------------------------------


def custom_scalars_layout(event_dir: Path):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(event_dir), size_guidance={"tensors": 0})
    acc.Reload()
    newest = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1]
    return layout_pb2.Layout.FromString(tensor_util.make_ndarray(newest.tensor_proto).item())


def test_custom_scalars_layout_puts_every_layer_on_one_chart_per_quantity(tmp_path):
    fit(tmp_path, tiny_module(lr=0.1), all_callbacks() + [UpdateStats(every_n_steps=1)], max_steps=2)
    layout = custom_scalars_layout(tmp_path / "tb")
    (category,) = layout.category
    charts = {c.title: list(c.multiline.tag) for c in category.chart}
    assert charts == {"activation var": [r"activations/var/.*"], "gradient var": [r"gradients/var/.*"],
                      "weight var": [r"weights/var/.*"], "update ratio ‖Δw‖/‖w‖": [r"updates/ratio/.*"]}
    # The regexes match the per-layer tags, which keep their names.
    import re

    scalars = events(tmp_path).Tags()["scalars"]
    for regexes in charts.values():
        assert len([t for t in scalars if re.fullmatch(regexes[0], t)]) == 2  # both layers


class GroundTruth(pl.Callback):
    """Records, at the steps given, what the diagnostics should log: computed here independently."""

    def __init__(self, steps):
        self.steps, self.truth = set(steps), {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        if step in self.steps:
            net = pl_module.net
            self.truth[("gradients", step)] = {n: float(m.weight.grad.var(correction=0))
                                                for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
            self._before = {n: m.weight.detach().clone() for n, m in net.named_modules()
                            if isinstance(m, torch.nn.Linear)}

    def on_train_start(self, trainer, pl_module):
        self._state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = trainer.global_step - 1  # the step just taken
        linears = {n: m for n, m in pl_module.net.named_modules() if isinstance(m, torch.nn.Linear)}
        if done in self.steps:
            self.truth[("updates", done)] = {n: float((m.weight.detach() - self._before[n]).norm()
                                                      / self._before[n].norm()) for n, m in linears.items()}
        self._state(trainer, pl_module)

    def _state(self, trainer, pl_module):
        net = pl_module.net
        linears = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
        if trainer.global_step in self.steps:
            x = trainer.datamodule.x
            with torch.no_grad():
                h = net.layers[0](x)
                out = net.layers[2](net.layers[1](h))
            self.truth[("activations", trainer.global_step)] = {"layers.0": float(h.var(correction=0)),
                                                                "layers.2": float(out.var(correction=0))}
            self.truth[("weights", trainer.global_step)] = {n: float(m.weight.var(correction=0))
                                                            for n, m in linears.items()}


def test_values_after_the_weights_move_on_a_200_step_schedule(tmp_path):
    """Real training (SGD lr 0.1, the weights move every step), the default interval of 200 steps:
    every logged value equals an independent computation at that step."""
    module = tiny_module(lr=0.1)
    truth = GroundTruth(steps=(0, 200, 400))
    callbacks = [ActivationStats(every_n_steps=200, batch_size=N), GradientStats(every_n_steps=200),
                 WeightStats(every_n_steps=200), UpdateStats(every_n_steps=200)]
    fit(tmp_path, module, callbacks + [truth], max_steps=401)
    acc = events(tmp_path)
    for kind, stat in (("activations", "var"), ("gradients", "var"), ("weights", "var"), ("updates", "ratio")):
        for layer in ("layers.0", "layers.2"):
            logged = scalar_steps(acc, f"{kind}/{stat}/{layer}")
            expected_steps = {0, 200, 400} | ({401} if kind in ("activations", "weights") else set())
            assert set(logged) == expected_steps, (kind, layer)
            for step in (0, 200, 400):
                assert logged[step] == pytest.approx(truth.truth[(kind, step)][layer], rel=1e-5), (kind, layer, step)
    # The weights did move: step 400's values differ from the init's.
    w = scalar_steps(acc, "weights/var/layers.0")
    assert abs(w[400] - w[0]) > 1e-3 * w[0]


def test_band_watch_warns_once_per_layer_after_patience_steps():
    from callbacks.diagnostics import BandWatch

    watch = BandWatch("weight-gradient variance", 1e-14, 1e2, patience=3)
    assert watch.update(0, {"a": 1e-20, "b": 1.0}) == []
    assert watch.update(200, {"a": 1e-20, "b": 1e3}) == []
    lines = watch.update(400, {"a": 3e-17, "b": 1.0})  # b back in the band: its run restarts
    assert lines == ["vanishing weight-gradient variance: a = 3e-17 (below 1e-14) for 3 logging steps in a row "
                     "(steps 0-400)"]
    assert watch.update(600, {"a": 1e-20, "b": 1e3}) == []  # a: already warned
    assert watch.update(800, {"a": 1.0, "b": 1e3}) == []
    assert watch.update(1000, {"a": 1.0, "b": 1e3})[0].startswith("exploding weight-gradient variance: b = 1e+03")


def test_band_watch_edges_directions_and_messages():
    """On the band's edge is inside; a change of direction starts a new run; each direction's
    line names its own edge, and a NaN's line names none (it is neither below nor above)."""
    from callbacks.diagnostics import BandWatch

    watch = BandWatch("update ratio", 1e-6, 0.1, patience=2)
    assert [watch.direction(v) for v in (1e-6, 0.1, 5e-7, 0.2, float("nan"))] == [
        None, None, "vanishing", "exploding", "non-finite"]
    assert watch.update(0, {"a": 1e-9}) == []
    assert watch.update(1, {"a": 5.0}) == []  # vanishing, then exploding: a run of one each
    assert watch.update(2, {"a": 7.0}) == ["exploding update ratio: a = 7 (above 1e-01) for 2 logging steps "
                                           "in a row (steps 1-2)"]
    assert watch.update(3, {"b": float("nan")}) == []
    assert watch.update(4, {"b": float("nan")}) == ["non-finite update ratio: b = nan for 2 logging steps in a "
                                                    "row (steps 3-4)"]
    only_low = BandWatch("variance", 1e-3, None, patience=1)
    assert only_low.update(9, {"c": 1e9}) == []  # no upper edge: nothing is too large
    assert only_low.update(10, {"c": 1e-4}) == ["vanishing variance: c = 0.0001 (below 1e-03) for 1 logging "
                                                "steps in a row (steps 10-10)"]


def test_a_callbacks_band_warning_names_its_steps_and_is_a_python_warning():
    cb = GradientStats(every_n_steps=1, var_band=(1e-3, None), patience=2)
    cb.record(4, {"layers.0": 1e-9})
    with pytest.warns(UserWarning, match=r"vanishing weight-gradient variance: layers.0 .*\(steps 4-6\)"):
        cb.record(6, {"layers.0": 1e-9})
    assert cb.warnings == ["vanishing weight-gradient variance: layers.0 = 1e-09 (below 1e-03) for 2 logging "
                           "steps in a row (steps 4-6)"]
    assert cb.history == {4: {"layers.0": 1e-9}, 6: {"layers.0": 1e-9}}


def test_a_nonfinite_layer_warns_once_not_at_every_logging_step():
    cb = WeightStats(every_n_steps=1, histograms=False)
    values = {"layers.0": torch.tensor([1.0, float("nan")]), "layers.2": torch.tensor([2.0, float("inf")])}
    writer = RecordingWriter()
    with pytest.warns(UserWarning) as caught:
        cb.log_values(writer, values, 0)
        cb.log_values(writer, values, 1)
    lines = [str(w.message) for w in caught if "NaN/inf" in str(w.message)]
    assert len(lines) == 2 and lines[0].startswith("weights of layers.0 has 1 NaN/inf values at step 0")
    assert writer.scalars[("weights/nonfinite/layers.2", 1)] == 1


def test_every_n_steps_0_is_never_due():
    cb = WeightStats(every_n_steps=0)
    assert not any(cb._due(s) for s in (0, 1, 200))


def test_budget_interval_from_a_later_start_and_its_edges(monkeypatch):
    """The budget's arithmetic away from step 0 and clock 0, and the cases it must leave alone."""
    import callbacks.diagnostics as diag

    now = [5.0]
    monkeypatch.setattr(diag.time, "perf_counter", lambda: now[0])
    cb = WeightStats(every_n_steps=1, budget=0.01)
    cb._adapt_interval(100)  # the first mark: step 100 at 5 s
    now[0], cb.seconds = 6.0, 0.5  # one step later: 1 s of wall, half of it our own work
    cb._adapt_interval(101)
    # per step (1 - 0.5) / 1 = 0.5 s; 1 % needs >= 0.5 / (0.01 * 0.5) = 100 steps a log: 2^7
    assert cb.every_n_steps == 128
    now[0], cb.seconds = 6.5, 0.75
    cb._adapt_interval(101)  # the same step again, time passed (no steps to divide by): unchanged
    assert cb.every_n_steps == 128
    now[0], cb.seconds = 7.0, 1.25  # all of this half second was our own work: no per-step time to weigh
    cb._adapt_interval(102)
    assert cb.every_n_steps == 128

    cheap = WeightStats(every_n_steps=10, budget=0.5)
    cheap._adapt_interval(0)
    now[0], cheap.seconds = 17.0, 0.01  # 0.1 % of the time: within the budget, the interval stays
    cheap._adapt_interval(10)
    assert cheap.every_n_steps == 10

    off = WeightStats(every_n_steps=0, budget=0.01)  # start and end only: there is no interval
    off._adapt_interval(0)
    now[0], off.seconds = 30.0, 5.0
    off._adapt_interval(0)
    assert off.every_n_steps == 0


def test_budget_doubles_the_interval_until_the_cost_fits(monkeypatch):
    import callbacks.diagnostics as diag

    clock = iter([0.0, 10.0, 20.0])  # wall time at three logging steps, 100 steps apart
    monkeypatch.setattr(diag.time, "perf_counter", lambda: next(clock))
    cb = WeightStats(every_n_steps=100, budget=0.01)
    cb._adapt_interval(0)
    cb.seconds = 1.0  # 1 s of own work per 10 s: 10 %, ten times the budget
    cb._adapt_interval(100)
    # per step (10 - 1) / 100 s; one log costs 1 s; 1 % needs an interval of >= 1 / (0.01 * 0.09) = 1111
    assert cb.every_n_steps == 1600
    cb.seconds = 1.0
    cb._adapt_interval(1700)  # no new cost since the last log: the interval stays
    assert cb.every_n_steps == 1600


def test_histogram_counts_match_numpy_including_the_edges():
    from callbacks.diagnostics import histogram_counts

    v = torch.cat([torch.randn(10_000), torch.tensor([-3.0, 3.0, 0.0])]).clamp(-3, 3)
    counts = histogram_counts(v, -3.0, 3.0, 64)
    expected, _ = np.histogram(v.numpy(), bins=64, range=(-3, 3))
    assert counts.tolist() == expected.tolist()
    assert torch.equal(counts.float(), torch.histc(v, bins=64, min=-3, max=3))
    # A diverging run's weights span float32's whole range: v - lo overflows to inf.
    huge = torch.tensor([-3e38, 0.0, 3e38])
    assert histogram_counts(huge, -3e38, 3e38, 4).tolist() == [1, 0, 1, 1]


def test_the_histogram_tensorboard_shows_is_numpys(tmp_path):
    """What the Histograms tab shows, read back from the event file: numpy's 64 buckets over
    [min, max], their right edges, and the count, sum and sum of squares of the values."""
    from torch.utils.tensorboard import SummaryWriter

    from callbacks.diagnostics import add_histogram_fast

    torch.manual_seed(0)
    v = torch.cat([torch.randn(10_000), torch.tensor([-3.0, 3.0])]).clamp(-3, 3)  # min -3, max 3 exactly
    writer = SummaryWriter(str(tmp_path))
    add_histogram_fast(writer, "by_itself", v, 7)
    add_histogram_fast(writer, "with_summary", v.reshape(2, -1), 8, summary=tensor_stats({"v": v})["v"])
    add_histogram_fast(writer, "constant", torch.full((50,), 0.25), 9)
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    counts, edges = np.histogram(v.numpy(), bins=64, range=(-3, 3))
    v64 = v.double().numpy()
    for tag, step in (("by_itself", 7), ("with_summary", 8)):
        (event,) = acc.Histograms(tag)
        h = event.histogram_value
        assert event.step == step
        assert (h.min, h.max, h.num) == (-3.0, 3.0, v.numel())
        assert h.sum == pytest.approx(v64.sum(), rel=1e-12, abs=1e-9)
        assert h.sum_squares == pytest.approx((v64**2).sum(), rel=1e-12)
        assert list(h.bucket) == counts.tolist()
        assert list(h.bucket_limit) == pytest.approx(edges[1:].tolist(), rel=1e-12)
        assert h.bucket_limit[-1] == 3.0
    (event,) = acc.Histograms("constant")  # a constant tensor (const init): one bucket at its value
    h = event.histogram_value
    assert (event.step, h.min, h.max, h.num, list(h.bucket), list(h.bucket_limit)) == (9, 0.25, 0.25, 50, [50.0], [0.25])
    assert (h.sum, h.sum_squares) == pytest.approx((12.5, 50 * 0.0625))


def test_histogram_counts_always_has_every_bucket():
    from callbacks.diagnostics import histogram_counts

    # The top buckets empty (a range wider than the values): still `bins` counts.
    assert histogram_counts(torch.tensor([0.0, 0.1, 0.3]), 0.0, 1.0, 4).tolist() == [2, 1, 0, 0]


def test_tensor_stats_of_edge_cases():
    """Nothing to summarize; sums in float64 (float32 cannot hold 1e8 + 1); float32 values near
    its limit (a diverging run's weights), whose sum and norm only float64 holds."""
    assert tensor_stats({}) == {}
    s = tensor_stats({"a": torch.tensor([1e8, 1.0])})["a"]
    assert (s["sum"], s["mean"]) == (100000001.0, 50000000.5)
    big = torch.tensor([3e38, 3e38])
    x = float(big[0])
    s = tensor_stats({"w": big})["w"]
    assert s["nonfinite"] == 0 and s["sum"] == 2 * x and s["norm"] == pytest.approx(2**0.5 * x, rel=1e-15)
    assert s["var"] == 0.0 and s["sum_sq"] == pytest.approx(2 * x * x, rel=1e-15)
    s = tensor_stats({"e": torch.zeros(0)})["e"]
    assert s["nonfinite"] == 0 and all(math.isnan(s[k]) for k in ("var", "mean", "norm", "min", "max"))


def test_finite_values_keeps_a_finite_tensor_without_a_copy():
    from callbacks.diagnostics import finite_values

    t = torch.randn(4, 5)
    assert finite_values(t).data_ptr() == t.data_ptr()
    t[1, 2] = float("nan")
    assert finite_values(t).numel() == 19


def test_run_label_names_init_optimizer_lr_and_activation():
    from callbacks.diagnostics import init_label, optim_label, run_label

    assert init_label({"_target_": "src.init.Normal", "std": 0.1}) == "normal std=0.1"
    assert init_label({"_target_": "src.init.XavierNormal"}) == "xavier_normal"
    assert optim_label({"_target_": "src.optim.SGDMomentum", "lr": 0.1, "momentum": 0.9}) == \
        "SGDMomentum lr=0.1 momentum=0.9"
    assert optim_label({"_target_": "torch.optim.Adam", "lr": 1e-3}) == "torch Adam lr=0.001"
    from src.init import Kaiming
    from src.optim import Adam

    network = BaseNetwork(act_fn="tanh", hidden_sizes=[8])
    module = ClassifierModule(network, optimizer=Adam(network.parameters(), lr=1e-3), init_scheme=Kaiming())
    assert run_label(module) == "kaiming · Adam lr=0.001 · tanh"
    assert optim_label({"_target_": "torch.optim.sgd.SGD", "lr": 0.1, "momentum": 0}) == "torch SGD lr=0.1"


@pytest.mark.parametrize("init, warned", [(["init=normal", "init.std=0.001"], True), ([], False)],
                         ids=["std0.001", "default"])
def test_vanishing_warning_fires_on_tiny_init_and_stays_quiet_on_the_default(tmp_path, data_dir, init, warned):
    import json

    from src.training import train
    from tests.conftest import FAST, compose

    every = [f"callbacks.{c}.every_n_steps=2" for c in ("activation_stats", "gradient_stats", "weight_stats",
                                                          "update_stats")]
    overrides = [o for o in FAST if o != "callbacks=none"] + init + every + [
        "data.train_subset=2048", "callbacks.distribution_figures=null", "callbacks.variance_probe=null"]
    train(compose(overrides, tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok"
    if warned:
        assert any(w.startswith("vanishing weight-gradient variance: layers.0") for w in results["warnings"])
    else:
        assert warnings_of(results) == []
    assert 0 < results["diagnostics_seconds"] < results["seconds"]
    assert results["diagnostics_share"] == pytest.approx(results["diagnostics_seconds"] / results["seconds"], rel=0.05)


def test_figure_values_are_taken_on_the_spot_and_drawing_errors_surface():
    """The figures are drawn on a background thread while the training goes on: what they show
    must be the values at the step they name (host copies, not views of the live weights), and a
    job that fails (e.g. a full disk) must fail the run, after every other job has finished."""
    from callbacks.diagnostics import distribution_values, draw_in_background, finish_drawing

    torch.manual_seed(0)
    net = BaseNetwork(act_fn="tanh", hidden_sizes=[8])
    batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    values = distribution_values(net, batch, ("activations", "gradients", "weights"))
    before = {k: {n: v.copy() for n, v in d.items()} for k, d in values.items()}
    assert set(values) == {"activations", "gradients", "weights"}
    assert np.array_equal(values["weights"]["layers.0"], net.layers[0].weight.detach().numpy().reshape(-1))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # the training moves on
    for kind, layers in values.items():
        for name, v in layers.items():
            assert np.array_equal(v, before[kind][name]), (kind, name)

    done = []
    draw_in_background(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    draw_in_background(lambda: (time.sleep(0.2), done.append(1)))
    with pytest.raises(OSError, match="No space left"):
        finish_drawing()
    assert done == [1]  # the error is raised once every job has ended
    finish_drawing()  # nothing pending any more: returns at once


def test_a_forked_child_of_a_process_that_drew_can_draw():
    """A fork has no copy of the parent's drawing thread; the child's figures once waited forever
    for it (found by the mutation run, whose workers are forks of a process that ran the tests)."""
    from callbacks.diagnostics import draw_in_background, finish_drawing

    draw_in_background(lambda: None)  # the parent's drawing thread exists from here on
    finish_drawing()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its own figure is drawn
        done = []
        draw_in_background(lambda: done.append(1))
        finish_drawing()
        os._exit(0 if done == [1] else 1)
    deadline = time.time() + 20
    while time.time() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's figure was never drawn (it waited for the parent's thread)")


def test_figure_titles_name_the_step_and_the_moment(tmp_path, monkeypatch):
    """Start, every 2nd epoch (one step per epoch here) and end; epochs 0-based as the epoch lines.
    The end is "end of training", not Lightning's already-incremented epoch counter."""
    import callbacks.diagnostics as diag

    titles = {}

    def record(figures, out, writer, step):
        for key, fig in figures.items():
            titles[(key, step)] = fig._suptitle.get_text().splitlines()[-1]

    monkeypatch.setattr(diag, "save_figures", record)
    module = tiny_module()
    fit(tmp_path, module, [DistributionFigures(every_n_epochs=2, batch_size=N, depth_profiles=False)], max_steps=3)
    label = diag.run_label(module)
    assert titles == {(f"distributions/{k}", s): f"{label} · step {s} · {when}" for k in ("activations", "gradients", "weights")
                      for s, when in ((0, "before training"), (2, "end of epoch 1"), (3, "end of training"))}


@pytest.mark.parametrize("kwargs, message", [
    ({"every_n_steps": -1}, "every_n_steps=-1 must be an integer >= 0 (0 = only at start/end)"),
    ({"every_n_steps": "abc"}, "every_n_steps='abc' must be an integer >= 0"),  # was: '<' not supported
    ({"every_n_steps": 2.5}, "every_n_steps=2.5 must be an integer >= 0"),
    ({"every_n_steps": True}, "every_n_steps=True must be an integer >= 0"),
    ({"histograms": "maybe"}, "histograms='maybe' must be true or false"),  # was read as true
    ({"budget": 0}, "budget=0 must be a fraction of the training time in (0, 1), or null"),
    ({"budget": 1.5}, "budget=1.5 must be a fraction"),
    ({"budget": "abc"}, "budget='abc' must be a fraction"),
])
@pytest.mark.parametrize("callback", ["ActivationStats", "GradientStats", "WeightStats", "UpdateStats"])
def test_bad_diagnostics_arguments_are_one_line(callback, kwargs, message):
    import callbacks.diagnostics as diagnostics
    import callbacks.update_stats as update_stats

    cls = getattr(diagnostics, callback, None) or getattr(update_stats, callback)
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert str(e.value).startswith(message), str(e.value)


def test_good_diagnostics_arguments():
    from callbacks.diagnostics import WeightStats

    cb = WeightStats(every_n_steps=0, histograms=False, budget=0.5)
    assert (cb.every_n_steps, cb.histograms, cb.budget) == (0, False, 0.5)
    assert WeightStats(budget=None).budget is None


def test_depth_profile_lines_dark_to_light_thinned_and_each_legible_on_white():
    from matplotlib.colors import to_rgb

    from callbacks.plotting import plot_depth_profile

    def contrast_on_white(color) -> float:  # WCAG's ratio of relative luminances
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(color)]
        return 1.05 / (0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] + 0.05)

    history = {200 * s: {"layers.10": 1.0 + s, "layers.8": 2.0, "layers.0": 0.0 if s == 0 else 3.0}
               for s in range(15)}
    fig = plot_depth_profile(history, "variance", title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layers.0", "layers.8", "layers.10"]  # by number
    # 15 steps thinned to 12 evenly spaced ones, the first and the last kept
    assert [ln.get_label() for ln in ax.lines] == [f"step {200 * s}" for s in (0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14)]
    assert np.isnan(ax.lines[0].get_ydata()[0]) and ax.lines[0].get_ydata()[2] == 1.0  # 0 on a log axis: a gap
    luminance = [1 / contrast_on_white(ln.get_color()) for ln in ax.lines]
    assert luminance == sorted(luminance)  # dark = early, light = late
    assert min(contrast_on_white(ln.get_color()) for ln in ax.lines) >= 2  # viridis' yellow end was 1.26


def test_the_update_ratio_figure_has_the_usual_healthy_size_to_read_against():
    from callbacks.diagnostics import depth_profile_figure

    history = {0: {"layers.0": 2e-2, "layers.2": 1e-2}, 200: {"layers.0": 1e-6, "layers.2": 2e-6}}
    ax = depth_profile_figure("updates", "ratio", history, "t").axes[0]
    guides = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(guides) == 1 and list(guides[0].get_ydata()) == [1e-3, 1e-3]
    assert [t.get_text() for t in ax.texts] == ["~1e-3: a usual healthy update ratio"]
    other = depth_profile_figure("gradients", "var", history, "t").axes[0]  # a variance has no such size
    assert not [ln for ln in other.lines if ln.get_linestyle() == "--"] and not other.texts


def test_a_depth_figure_is_titled_by_its_own_logged_steps(monkeypatch):
    """Drawn at the end of training (step 585), the gradient figure's lines stop at step 400 (no
    gradient is measured at the end): its title said "step 585 · end of training"."""
    import callbacks.diagnostics as diagnostics

    titles = {}
    monkeypatch.setattr(diagnostics, "depth_profile_figure", lambda kind, stat, history, title: titles.setdefault(kind, title))
    monkeypatch.setattr(diagnostics, "save_figures", lambda figures, out, writer, step: None)
    depth = [("gradients", "var", {0: {"layers.0": 1.0}, 200: {"layers.0": 1.0}, 400: {"layers.0": 1.0}}),
             ("activations", "var", {0: {"layers.0": 1.0}, 585: {"layers.0": 1.0}})]
    diagnostics._draw_and_save({}, {}, depth, "adam · step 585 · end of training", None, None, 585, "adam")
    assert titles == {"gradients": "adam · logged at steps 0–400", "activations": "adam · logged at steps 0–585"}


def test_distribution_panels_say_each_layers_variance_and_name_the_values():
    """Each panel has its own x range, so its spread is said in numbers; the axis names signed values
    (the tutorial's "Grad magnitude" was not a magnitude)."""
    from callbacks.diagnostics import plot_distribution_values

    rng = np.random.default_rng(0)
    values = {"gradients": {"layers.0": rng.normal(0, 0.1, 4000), "layers.2": rng.normal(0, 2.0, 4000)}}
    fig = plot_distribution_values(values, {"layers.0": (512, 784), "layers.2": (256, 512)}, "run")["gradients"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    variances = [values["gradients"][k].var() for k in ("layers.0", "layers.2")]
    assert titles == [f"layers.0 (784 → 512) · var {variances[0]:.2g}", f"layers.2 (512 → 256) · var {variances[1]:.2g}"]
    assert titles[0].endswith("var 0.01") and titles[1].endswith("var 4.1")  # 0.1² and about 2²
    assert {ax.get_xlabel() for ax in fig.axes if ax.get_visible()} == {"gradient value"}


@pytest.mark.parametrize("loggers, said", [
    ([], "no logger"),
    (["csv"], "CSVLogger"),
    (["dummy"], "DummyLogger (trainer.fast_dev_run turns the loggers off)"),
])
def test_without_tensorboard_one_warning_names_the_runs_loggers(tmp_path, loggers, said):
    from pytorch_lightning.loggers.logger import DummyLogger

    from callbacks.diagnostics import tensorboard_writer

    class Trainer:  # hashable, as Lightning's: the warning is given once per trainer
        pass

    trainer = Trainer()
    trainer.loggers = [CSVLogger(tmp_path) if name == "csv" else DummyLogger() for name in loggers]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert tensorboard_writer(trainer) is None and tensorboard_writer(trainer) is None
    assert [str(w.message) for w in seen] == [
        f"Variance diagnostics need a TensorBoardLogger and this run has {said}, so they log nothing; "
        "logger=tensorboard logs them, callbacks=essential leaves them out"]
    trainer.loggers = [TensorBoardLogger(tmp_path)]
    assert tensorboard_writer(trainer) is trainer.loggers[0].experiment
