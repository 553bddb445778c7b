"""Numerically-zero backward variances (callbacks/variance_probe.py, shared by probe.py and the
training-time `variance_probe` callback): rounding noise is not read as a measurement (no flag
against a prediction of 0, no ratio, no trend), and every such layer is named."""

import json
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from callbacks.variance_probe import (
    VarianceProbe,
    figure_report,
    measure,
    probe_variances,
    rounding_noise,
    summarize,
    trends,
    variance_figure,
    verdict_lines,
)
from src.init import Const, get_init
from src.model import BaseNetwork
from src.module import ClassifierModule
from src.probe import flag_sentence

NAMES = ["layers.0", "layers.2", "layers.4", "layers.6"]


def tiny(init: str, act: str = "identity", **kwargs):
    torch.manual_seed(0)
    net = BaseNetwork(act_fn=act, input_size=12, num_classes=4, hidden_sizes=[9, 7, 5])
    get_init(init, **kwargs)(net)
    x, y = torch.rand(64, 12), torch.randint(0, 4, (64,))
    return net, [(x, y)]


def test_the_bound_is_n_eps_times_the_sum_without_cancellation():
    net, batches = tiny("const", fill=0.1)
    x, y = batches[0]
    m = measure(net, x, y, rounding=True)
    bound = m.pop("rounding_bound")
    # the bound comes from the same forward and backward: the measured variances are unchanged
    assert m == measure(net, x, y)
    # layers.4's δ sums the logits' 4 terms: (4·ε)² · mean((|δ_logits| @ |W|)²), ε of float32
    logits = net(x).detach()
    d_logits = torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, 4)
    by_hand = (4 * torch.finfo(torch.float32).eps) ** 2 * float((d_logits.abs() @ net.layers[6].weight.abs()).double()
                                                                 .pow(2).mean())
    assert bound[2] == pytest.approx(by_hand, rel=1e-5, abs=0)  # abs=0: the default 1e-12 dwarfs a bound of 1e-14
    assert math.isnan(bound[3])  # nothing sums into the logits
    # constant weights pass on Σ_c δ_c = 0: below the bound there, and noise from there on down
    assert m["backward"][2] <= bound[2]
    assert rounding_noise(NAMES, m["backward"], bound) == NAMES[:3]
    # the probe holds draw 0's bound against the measured mean, and names draw 0's noise layers
    report = probe_variances(net, Const(fill=0.1), batches, draws=2)
    assert [report["layers"][n]["backward"]["rounding_bound"] for n in NAMES] == [*bound[:3], None]
    assert report["rounding_noise_draw_0"] == NAMES[:3]


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_every_layers_bound_by_hand_through_its_activation(act):
    """Each hidden layer's bound, recomputed in float64 from the weights alone: δ_l sums
    n = fan_out(l+1) terms, and the sum without cancellation passes through f'(y_l)."""
    net, batches = tiny("normal", act=act, std=0.3)
    x, y = batches[0]
    bound = measure(net, x, y, rounding=True)["rounding_bound"]
    linears = [net.layers[i] for i in (0, 2, 4, 6)]
    weights = [m.weight.detach().double() for m in linears]
    def f_prime(z):
        return (z > 0).double() if act == "relu" else 1 - torch.tanh(z) ** 2

    pre, h = [], x.double()
    for k, m in enumerate(linears):
        pre.append(h @ weights[k].T + m.bias.detach().double())
        h = pre[-1] if k == 3 else (torch.relu(pre[-1]) if act == "relu" else torch.tanh(pre[-1]))
    deltas = [None, None, None, torch.softmax(pre[3], 1) - torch.nn.functional.one_hot(y, 4).double()]
    for k in (2, 1, 0):
        deltas[k] = f_prime(pre[k]) * (deltas[k + 1] @ weights[k + 1])
    eps = torch.finfo(torch.float32).eps
    for k in (0, 1, 2):
        terms = f_prime(pre[k]) * (deltas[k + 1].abs() @ weights[k + 1].abs())
        n = weights[k + 1].shape[0]  # 7, 5, 4: the layer above's outputs, summed into each entry
        assert bound[k] == pytest.approx((n * eps) ** 2 * float(terms.pow(2).mean()), rel=1e-4, abs=0), k
    assert math.isnan(bound[3])


@pytest.mark.parametrize("std", [0.5, 1e-3])
def test_a_genuine_gradient_however_small_is_not_rounding_noise(std):
    """A vanishing gradient is tiny, not noise: float32 keeps its relative precision at 1e-20."""
    net, batches = tiny("normal", std=std)
    m = measure(net, *batches[0], rounding=True)
    measured, bound = np.array(m["backward"]), np.array(m["rounding_bound"])
    assert rounding_noise(NAMES, measured, bound) == []
    assert np.all(measured[:3] > 1e6 * bound[:3])
    if std < 0.01:
        assert measured[0] < 1e-12


def test_noise_runs_down_from_where_it_starts():
    # layers.4 is below its bound; layers.2 and layers.0 are computed from it (δ is linear in the δ
    # above), whatever their size; nothing above the noise, and no NaN, is noise
    assert rounding_noise(NAMES, [5e-20, 1e-3, 1e-25, 1.0], [1e-30, 1e-10, 1e-20, math.nan]) == NAMES[:3]
    assert rounding_noise(NAMES, [5e-20, 1e-3, 1e-15, 1.0], [1e-30, 1e-10, 1e-20, math.nan]) == []
    assert rounding_noise(NAMES, [1e-40, math.nan, 1e-25, 1.0], [1e-30, math.nan, 1e-24, math.nan]) == NAMES[:3]
    assert rounding_noise(NAMES, [1e-40, math.nan, 1.0, 1.0], [1e-30, math.nan, 1e-24, math.nan]) == ["layers.0"]
    # at the bound is within it
    assert rounding_noise(NAMES, [1.0, 1.0, 1e-20, 1.0], [1e-30, 1e-30, 1e-20, math.nan]) == NAMES[:3]


def report_of(backward: dict[str, tuple[float, float]], bound: list[float] | None = None) -> dict:
    """summarize()'s report for (measured, predicted) backward variances, 10 draws 1 % apart, with
    draw 0's rounding bound on its one batch when given."""
    spread = np.linspace(0.99, 1.01, 10)[:, None, None]
    raw = {"backward": spread * np.array([[[backward[n][0] for n in NAMES]]])}
    raw["forward"] = raw["weight_gradient"] = spread * np.ones((1, 1, len(NAMES)))
    pred = {"backward": np.broadcast_to([backward[n][1] for n in NAMES], (10, 1, len(NAMES))).copy(),
            "forward": np.ones((10, 1, len(NAMES)))}
    report = {**summarize(NAMES, raw, pred, rounding_bound=None if bound is None else np.array([bound])), "draws": 10}
    for row in report["layers"].values():
        row.update(fan_in=4, fan_out=4)  # the figure's axis labels
    return report


def test_a_prediction_of_0_agrees_with_noise_and_a_positive_one_does_not():
    backward = {"layers.0": (2e-19, 0.0), "layers.2": (1e-19, 1e-3), "layers.4": (2e-19, 0.0),
                "layers.6": (0.09, 0.09)}
    # without the bound (as before it was measured), the noise is read as a measurement
    assert report_of(backward)["flags"]["backward"] == ["layers.0", "layers.2", "layers.4"]
    report = report_of(backward, bound=[1e-28, 1e-28, 1e-16, math.nan])
    rows = {n: report["layers"][n]["backward"] for n in NAMES}
    assert report["flags"]["backward"] == ["layers.2"]  # a gradient was predicted there and does not arrive
    assert [rows[n]["numerically_zero"] for n in NAMES] == [True, True, True, False]
    assert [rows[n]["rounding_bound"] for n in NAMES] == [1e-28, 1e-28, 1e-16, None]
    assert all(rows[n]["ratio"] is None for n in NAMES[:3]) and rows["layers.6"]["ratio"] == pytest.approx(1)
    assert flag_sentence(report, "backward") == (
        "Flagged (layers.2): measurement and prediction differ by more than 10 draws and the theory's tolerance "
        "explain; an assumption fails there (docs/diagnostics.md). Measured and predicted are both ≈ 0 at layers.0, "
        "layers.4 (the measurement is float32 rounding noise, docs/diagnostics.md).")
    # no trend read from the noise (it said "varies ×2 ... uneven, no trend"); the forward is left as it was
    said = trends(report)
    assert said["backward"] == ("Backward variance ≈ 0 at layers.4, layers.2, layers.0: float32 rounding noise, "
                                "no trend to read.")
    assert said["forward"] == "Forward variance stays within ×1 from layers.0 to layers.4: stable."
    # one line of a terminal (train.py's "at init" lines): a run of neighbours as a span
    assert verdict_lines(report) == {
        "forward": ["Forward variance stays within ×1 from layers.0 to layers.4: stable"],
        "backward": ["Backward variance ≈ 0 from layers.4 to layers.0: float32 rounding noise"]}
    # the figure draws noise as 0, off its log axis; the report keeps what was measured
    shown = figure_report(report)["layers"]["layers.0"]["backward"]
    assert (shown["mean"], shown["hi"], set(shown["draws"])) == (0.0, 0.0, {0.0})
    assert rows["layers.0"]["mean"] == pytest.approx(2e-19, rel=1e-9, abs=0)
    figure = variance_figure(report, "t")
    panel = figure.axes[1].get_title()  # it said "no positive values to compare"
    assert panel.splitlines()[1:] == ["≈ 0 from layers.4 to layers.0: float32 rounding noise, not drawn."]
    # nothing drawn from the noise: the measured mean is a point at layers.6 alone (NaN is no point)
    measured = next(line for line in figure.axes[1].get_lines() if line.get_label() == "measured: mean")
    assert [math.isnan(v) for v in measured.get_ydata()] == [True, True, True, False]


def test_a_prediction_above_the_measured_noise_but_within_its_bound_agrees():
    """The noise level is the bound as well as what was measured: a prediction of 1e-17 where
    1e-19 was measured and rounding alone can put 1e-16 cannot be told from the noise."""
    backward = {"layers.0": (1e-19, 1e-17), "layers.2": (1e-19, 1e-17), "layers.4": (1e-19, 1e-17),
                "layers.6": (0.09, 0.09)}
    assert report_of(backward, bound=[1e-16, 1e-16, 1e-16, math.nan])["flags"]["backward"] == []
    # a bound below the prediction: the predicted gradient is missing there
    assert report_of(backward, bound=[1e-16, 1e-16, 1e-18, math.nan])["flags"]["backward"] == ["layers.4"]


def test_the_sentences_when_every_compared_layer_agrees():
    report = report_of({n: (1e-19, 0.0) for n in NAMES[:3]} | {"layers.6": (0.09, 0.09)},
                       bound=[1e-30, 1e-30, 1e-16, math.nan])
    assert report["flags"]["backward"] == []
    assert flag_sentence(report, "backward") == (
        "Measured and predicted are both ≈ 0 at layers.0, layers.2, layers.4 (the measurement is float32 rounding "
        "noise, docs/diagnostics.md), and the prediction lies inside the band (or within the theory's tolerance) at "
        "the 1 other layer: the formula explains it.")
    # a trend over the layers that are not noise, with the ones that are named
    report = report_of({"layers.0": (1e-19, 0.0), "layers.2": (1e-3, 1e-3), "layers.4": (1e-2, 1e-2),
                        "layers.6": (0.09, 0.09)}, bound=[1e-18, 1e-12, 1e-12, math.nan])
    assert trends(report)["backward"] == (
        "Backward variance shrinks ×10 per layer towards the input (×10 from layers.4 to layers.2): vanishing. "
        "Backward variance ≈ 0 at layers.0: float32 rounding noise, no trend to read.")
    assert flag_sentence(report, "backward").startswith("Measured and predicted are both ≈ 0 at layers.0 (the ")
    # a line each in the terminal and on the panel: together they overran 80 columns
    assert verdict_lines(report)["backward"] == [
        "Backward variance shrinks ×10 per layer towards the input: vanishing",
        "Backward variance ≈ 0 at layers.0: float32 rounding noise"]
    assert variance_figure(report, "t").axes[1].get_title().splitlines()[1:] == [
        "shrinks ×10 per layer towards the input: vanishing.", "≈ 0 at layers.0: float32 rounding noise, not drawn."]


class OneBatch(pl.LightningDataModule):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def diagnostic_batch(self, n):
        return self.x[:n], self.y[:n]

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=len(self.x))


def test_the_training_callback_reads_the_constant_inits_noise_as_zero(tmp_path, capsys):
    """train.py's step-0 probe (the VarianceProbe callback) flagged the constant init's ~1e-19 δ as
    "an assumption of the theory fails" (one warning a hidden layer, said at init and again at the
    end of the run) and read a trend from it ("varies ×2.44 ... uneven"): it marks it as probe.py does."""
    net = BaseNetwork(act_fn="identity", input_size=12, num_classes=4, hidden_sizes=[9, 7, 5])
    module = ClassifierModule(net, optimizer=torch.optim.SGD(net.parameters(), lr=0.0), init_scheme=Const(fill=0.1))
    torch.manual_seed(0)
    data = OneBatch(torch.rand(64, 12), torch.arange(64) % 4)
    probe = VarianceProbe(draws=2, batches=1, batch_size=64)
    trainer = pl.Trainer(max_steps=1, logger=TensorBoardLogger(save_dir=str(tmp_path), name="tb", version=""),
                         callbacks=[probe], accelerator="cpu", default_root_dir=str(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("at init (probe.png):")
    said = lines[start + 1:start + 3]
    assert said[0].startswith("  forward variance ")
    assert said[1] == "  backward variance ≈ 0 from layers.4 to layers.0: float32 rounding noise"
    assert not lines[start + 3:start + 4] or not lines[start + 3].startswith("  ")  # nothing else said
    # the forward flags stay (constant weights: the theory predicts no variance at all); none backward
    assert [w.split(" measured ")[0] for w in probe.warnings] == [
        f"probe: forward variance of {n}" for n in (*NAMES[:3], "layers.6")]
    saved = json.loads((tmp_path / "probe.json").read_text())["variance"]
    assert saved["flags"]["backward"] == []
    assert [saved["layers"][n]["backward"]["numerically_zero"] for n in NAMES] == [True, True, True, False]
    assert saved["rounding_noise_draw_0"] == NAMES[:3]
    assert (tmp_path / "probe.png").stat().st_size > 0
