"""probe.py: the tutorial's variance tables on the real diagnostic batch, probe.json, multirun summary."""

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from src.config import compose_config
from src.probe import probe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

warnings.filterwarnings("ignore", message=".*LeafSpec.*")

pytestmark = pytest.mark.skipif(not (DATA / "FashionMNIST" / "raw").is_dir(),
                                reason="FashionMNIST raw files not prepared (make data)")

# The tutorial's printed activation variances for const_init(fill=0.005), identity network.
TUTORIAL_CONST = {"layers.0": 2.0582761764526367, "layers.2": 13.489120483398438,
                  "layers.4": 22.100574493408203, "layers.6": 36.20957946777344,
                  "layers.8": 14.831440925598145}


def compose_cfg(name, out, overrides):
    return compose_config([f"paths.data_dir={DATA}", *overrides], out, config_name=name)


def test_const_init_reproduces_the_tutorial_to_3_significant_digits(tmp_path):
    cfg = compose_cfg("probe", tmp_path, ["init=const", "init.fill=0.005", "model.act_fn=identity",
                                          "tensorboard=false", "probe.draws=2", "probe.batches=1"])
    result = probe(cfg)
    saved = json.loads((tmp_path / "probe.json").read_text())
    for layer, expected in TUTORIAL_CONST.items():
        assert float(f"{saved['activations'][layer]:.3g}") == float(f"{expected:.3g}"), layer
        assert saved["activations"][layer] == pytest.approx(expected, rel=1e-4)
    assert saved["activations"] == result["activations"]
    # Constant weights: zero variance; the hidden layers' weight gradients are all equal too.
    assert all(v == 0.0 for v in saved["weights"].values())
    assert saved["gradients"]["layers.8"] > 1e-3
    assert all(saved["gradients"][k] < 1e-15 for k in ("layers.2", "layers.4", "layers.6"))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "activations_step000000.png", "gradients_step000000.png", "weights_step000000.png"]


def test_a_split_smaller_than_asked_for_is_said(tmp_path, capsys):
    """4 batches of 512 from a training split of 1000: 2 batches of 512 and 488, said on stderr and
    in probe.json's warnings (it changed them silently)."""
    cfg = compose_cfg("probe", tmp_path, ["data.train_subset=1000", "batch_size=512", "probe.batches=4",
                                          "probe.draws=2", "tensorboard=false", "model.hidden_sizes=[16]"])
    probe(cfg)
    line = ("probe: asked for 4 batches of 512 images, the training split has 1000: measured on 2 batches of "
            "512 and 488 images")
    assert f"warning: {line}" in capsys.readouterr().err.splitlines()
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["variance"]["warnings"][0] == line and saved["variance"]["batches"] == 2


def test_probe_json_has_one_entry_per_linear_layer_for_any_hidden_sizes(tmp_path):
    cfg = compose_cfg("probe", tmp_path, ["init=xavier", "model.act_fn=tanh", "model.hidden_sizes=[32,16,8]",
                                          "probe.draws=3", "probe.batches=2"])
    probe(cfg)
    saved = json.loads((tmp_path / "probe.json").read_text())
    layers = ["layers.0", "layers.2", "layers.4", "layers.6"]
    for kind in ("activations", "gradients", "weights"):
        assert list(saved[kind]) == layers
        assert all(v > 0 for v in saved[kind].values())
    assert saved["meta"]["shapes"] == {"layers.0": [784, 32], "layers.2": [32, 16], "layers.4": [16, 8],
                                       "layers.6": [8, 10]}
    assert saved["meta"]["batch_size"] == 1024
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_probe_equals_step_0_of_training(tmp_path):
    """Same seed, same order of draws: the probe's numbers are the training run's init."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.training import train

    common = ["init=normal", "init.std=0.1", "model.act_fn=relu", "model.hidden_sizes=[64,32]"]
    train_cfg = compose_cfg("train", tmp_path / "train", common + [
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
        "callbacks.distribution_figures=null"])
    train(train_cfg)
    probed = probe(compose_cfg("probe", tmp_path / "probe", common + ["tensorboard=false", "probe.draws=1",
                                                                       "probe.batches=1"]))
    acc = EventAccumulator(str(tmp_path / "train" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for layer, var in probed["activations"].items():
        step0 = [e.value for e in acc.Scalars(f"activations/var/{layer}") if e.step == 0]
        assert step0 == [pytest.approx(var, rel=1e-5)], layer
    for layer, var in probed["weights"].items():
        assert acc.Scalars(f"weights/var/{layer}")[0].value == pytest.approx(var, rel=1e-5)


def test_multirun_writes_one_combined_table(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "probe.py"), "-m", "init=const,equal_var", "model.act_fn=identity",
         "model.hidden_sizes=[16]", "tensorboard=false", "probe.draws=2", "probe.batches=1", f"paths.data_dir={DATA}",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only the probe summary: no training-style sweep report with empty accuracy columns.
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == ["multirun.yaml", "probe_summary.csv",
                                                                      "probe_summary.md"]
    rows = list(csv.DictReader(io.StringIO((sweep / "probe_summary.csv").read_text())))
    assert [(r["init"], r["layer"]) for r in rows] == [("const", "layers.0"), ("const", "layers.2"),
                                                       ("equal_var", "layers.0"), ("equal_var", "layers.2")]
    assert all(float(r["activation_var"]) > 0 for r in rows)
    md = (sweep / "probe_summary.md").read_text()
    assert "## Activation variance" in md and "| equal_var | identity |" in md
    # the constant init's hidden δ is float32 rounding noise, as predicted: ≈0, not a number flagged `!`
    backward = md.split("## Backward")[1].split("##")[0]
    assert "| const (fill=0.005) | identity | ≈0 (0.00e+00) | " in backward and " !" not in backward
    assert "Activation variance" in proc.stdout


# ---------------------------------------------------------------------------------------------
# Theory beside measurement (issue 14)
# ---------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
import torch  # noqa: E402

from callbacks.variance_probe import (  # noqa: E402
    gaussian_gains,
    init_variances,
    predict,
    probe_variances,
    softmax_gradient_second_moment,
)
from src.init import get_init  # noqa: E402
from src.model import BaseNetwork  # noqa: E402


def test_prediction_equals_the_formulas_on_a_tiny_identity_net():
    """Identity activation: every step of the recursion by hand."""
    net = BaseNetwork(act_fn="identity", input_size=4, num_classes=3, hidden_sizes=[5])
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [3.0, 1.0, -1.0, 2.0]])
    (s0, b0), (s1, b1) = (0.3, 0.01), (0.2, 0.0)
    got = predict(net, x, [(s0, b0, "formula"), (s1, b1, "formula")])
    xn = x.double().numpy()
    q = (xn**2).mean(1)  # per sample
    m = (xn.mean(0) ** 2).mean()  # energy of the batch mean
    v0 = 4 * s0 * q + b0
    c0 = 4 * s0 * m + b0
    assert got["forward"][0] == pytest.approx(v0.mean() - c0 / 5, rel=1e-12)
    v1 = 5 * s1 * v0 + b1  # identity: E[f(y)²] = v
    c1 = 5 * s1 * c0 + b1
    assert got["forward"][1] == pytest.approx(v1.mean() - c1 / 3, rel=1e-12)
    g1 = softmax_gradient_second_moment(torch.from_numpy(v1), 3).numpy()
    assert got["backward"][1] == pytest.approx(g1.mean(), rel=1e-12)
    assert got["backward"][0] == pytest.approx((1.0 * 3 * s1 * g1).mean(), rel=1e-12)  # f' = 1
    # Softmax limits: tiny logits give (1 - 1/C)/C, huge ones (2 - 2/C)/C.
    lim = softmax_gradient_second_moment(torch.tensor([1e-12, 1e9], dtype=torch.float64), 10).numpy()
    np.testing.assert_allclose(lim, [0.09, 0.18], rtol=2e-3)


def test_activation_gains():
    from scipy import integrate

    v = torch.tensor([0.01, 1.0, 7.0], dtype=torch.float64)
    q, d = gaussian_gains(torch.nn.ReLU(), v)
    np.testing.assert_allclose(q.numpy(), v.numpy() / 2, rtol=1e-12)  # Kaiming's factor 2 (gain √2)
    np.testing.assert_allclose(d.numpy(), 0.5, rtol=1e-12)
    q, d = gaussian_gains(torch.nn.Tanh(), v)

    def gaussian_mean(g, var):  # E[g(y)], y ~ N(0, var), by adaptive quadrature
        pdf = lambda y: np.exp(-y * y / (2 * var)) / np.sqrt(2 * np.pi * var)  # noqa: E731
        return integrate.quad(lambda y: g(y) * pdf(y), -12 * np.sqrt(var), 12 * np.sqrt(var), points=[0], limit=500)[0]

    for vi, qi, di in zip(v.tolist(), q.tolist(), d.tolist(), strict=True):
        assert qi == pytest.approx(gaussian_mean(lambda y: np.tanh(y) ** 2, vi), rel=1e-5)
        assert di == pytest.approx(gaussian_mean(lambda y: (1 - np.tanh(y) ** 2) ** 2, vi), rel=1e-5)


def test_init_formulas_match_the_drawn_weights():
    for name, kwargs in (("kaiming", {}), ("xavier", {}), ("normal", {"std": 0.1}), ("equal_var", {}),
                         ("kaiming_gain", {}), ("default", {})):
        torch.manual_seed(0)
        net = BaseNetwork(act_fn="tanh")  # torch's default init, which `default` keeps
        init = get_init(name, **kwargs)
        init(net)
        for layer, (w_var, _, source) in zip(net.layers[::2], init_variances(init, net), strict=True):
            assert source == "formula"
            assert float(layer.weight.detach().var()) == pytest.approx(w_var, rel=0.1), (name, layer)


def test_identity_net_measurement_converges_to_the_prediction():
    """Exact in expectation for identity: many draws of a small net, every layer inside the band."""
    torch.manual_seed(0)
    net = BaseNetwork(act_fn="identity", input_size=16, num_classes=4, hidden_sizes=[32, 32])
    init = get_init("normal", std=0.2)
    init(net)
    x = torch.randn(256, 16) + 0.5
    y = torch.randint(0, 4, (256,))
    report = probe_variances(net, init, [(x, y)], draws=60, seed=1, tolerance=0.0)
    for name, row in report["layers"].items():
        for q in ("forward", "backward"):
            r = row[q]
            assert r["lo"] <= r["predicted"] <= r["hi"], (name, q, r["predicted"], r["lo"], r["hi"])


@pytest.fixture(scope="module")
def tutorial_batch():
    from src.data import FashionMNISTDataModule

    dm = FashionMNISTDataModule(data_dir=str(DATA))
    dm.prepare_data()
    x, y = dm.diagnostic_batch(1024)
    return [(x, y)]


def real_net_report(batches, init_name, act, draws=10, **kwargs):
    torch.manual_seed(42)
    net = BaseNetwork(act_fn=act)
    init = get_init(init_name, **kwargs)
    init(net)
    return probe_variances(net, init, batches, draws=draws, seed=42)


def means(report, q):
    return [row[q]["mean"] for row in report["layers"].values()]


@pytest.mark.parametrize("init_name, act", [("kaiming", "relu"), ("xavier", "tanh")])
def test_band_covers_the_prediction_for_the_recommended_inits(tutorial_batch, init_name, act):
    report = real_net_report(tutorial_batch, init_name, act)
    assert report["flags"] == {"forward": [], "backward": []}
    for row in report["layers"].values():
        for q in ("forward", "backward"):
            assert 0.85 < row[q]["ratio"] < 1.15
    forward = means(report, "forward")
    if init_name == "kaiming":  # the tutorial: "the variance stays stable across layers"
        assert max(forward[:4]) / min(forward[:4]) < 1.3
    else:  # "decreases over depth … stabilizes around 0.25"
        assert forward[0] > forward[1] > forward[2] and 0.2 < forward[3] < 0.35


def test_std_0_1_explodes_and_std_0_01_vanishes_as_predicted(tutorial_batch):
    """The tutorial's identity net: the prediction follows the measurement into the explosion and
    the collapse (the formula is exact there), so neither is flagged."""
    big = real_net_report(tutorial_batch, "normal", "identity", std=0.1)
    small = real_net_report(tutorial_batch, "normal", "identity", std=0.01)
    f_big, f_small = means(big, "forward"), means(small, "forward")
    assert all(b / a > 2 for a, b in zip(f_big[:3], f_big[1:4], strict=True))  # ×5, ×2.5, ×2.5
    assert all(b / a < 0.6 for a, b in zip(f_small[:3], f_small[1:4], strict=True))
    # The gradient w.r.t. the first layers vanishes too (×~40 per layer towards the input).
    b_small = means(small, "backward")
    assert b_small[3] / b_small[0] > 1e4  # 9e-5 at layers.6, 8e-10 at layers.0
    for report in (big, small):
        for name, row in list(report["layers"].items())[:4]:
            assert 0.85 < row["forward"]["ratio"] < 1.15, name
            assert not row["forward"]["flag"] and not row["backward"]["flag"], name


def test_constant_init_is_flagged_forward_and_agrees_backward_where_both_are_zero(tmp_path, capsys):
    cfg = compose_cfg("probe", tmp_path, ["init=const", "init.fill=0.005", "model.act_fn=identity",
                                          "probe.draws=2", "probe.batches=1"])
    result = probe(cfg)
    report = result["variance"]
    # Weights are not random: the theory predicts no variance, the measurement has plenty.
    assert report["flags"]["forward"] == ["layers.0", "layers.2", "layers.4", "layers.6", "layers.8"]
    assert all(r["forward"]["predicted"] == 0 for r in report["layers"].values())
    out = " ".join(capsys.readouterr().out.split())  # the sentences are wrapped at 80 columns
    assert result["variance"]["warnings"] and "layers.0" in result["variance"]["warnings"][0]
    # Backward: equal weights pass on Σ_c ∂loss/∂logit_c = 0, so the hidden layers' δ is 0 up to
    # float32 rounding (~1e-19), as predicted. That was flagged ("an assumption fails there"), and
    # a trend ("varies ×2.68 ... uneven") and the layers ≈ 0 (layers.0 left out) were read from the noise.
    hidden = ["layers.0", "layers.2", "layers.4", "layers.6"]
    backward = {n: r["backward"] for n, r in report["layers"].items()}
    assert report["flags"]["backward"] == [] and not any("backward" in w for w in report["warnings"])
    assert [n for n, r in backward.items() if r["numerically_zero"]] == hidden
    for n in hidden:
        assert 0 < backward[n]["mean"] < 1e-15 and backward[n]["predicted"] == 0 and backward[n]["ratio"] is None
    assert backward["layers.6"]["mean"] <= backward["layers.6"]["rounding_bound"] < 1e-12
    assert backward["layers.8"]["rounding_bound"] is None and backward["layers.8"]["ratio"] == pytest.approx(1, rel=0.05)
    assert ("Backward variance ≈ 0 at layers.6, layers.4, layers.2, layers.0: float32 rounding noise, no trend to "
            "read. Measured and predicted are both ≈ 0 at layers.0, layers.2, layers.4, layers.6") in out
    assert "uneven" not in out and "Flagged" not in out.split("Backward:")[1]
    assert result["meta"]["rounding_noise_gradients"] == hidden
    assert "Weight-gradient variance ≈ 0 in layers.0, layers.2, layers.4, layers.6: every unit" in out
    saved = json.loads((tmp_path / "probe.json").read_text())["variance"]["layers"]["layers.0"]["backward"]
    assert saved["numerically_zero"] is True and saved["flag"] is False


def test_an_exploding_init_reports_the_variance_its_table_shows(tmp_path, capsys):
    """std=1e10: layers.2's outputs (~1e22) are finite in float32, their variance (~4e43) is not.
    The theory table must measure what the tutorial's table shows, not inf, and compare it."""
    cfg = compose_cfg("probe", tmp_path, ["init=normal", "init.std=1e10", "model.hidden_sizes=[16]",
                                          "probe.draws=2", "probe.batches=1", "batch_size=128", "tensorboard=false"])
    result = probe(cfg)
    row = json.loads((tmp_path / "probe.json").read_text())["variance"]["layers"]["layers.2"]["forward"]
    assert row["draws"][0] == pytest.approx(result["activations"]["layers.2"], rel=1e-6)
    assert row["mean"] > 1e43 and row["flag"] is not None
    out = capsys.readouterr().out
    assert "inf" not in out


def test_probe_outputs_header_tables_figure_and_tensorboard(tmp_path, capsys):
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg("probe", tmp_path, ["init=normal", "init.std=0.1", "model.act_fn=identity",
                                          "model.hidden_sizes=[64,32]", "probe.draws=3", "probe.batches=2"])
    result = probe(cfg)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert set(saved) >= {"activations", "gradients", "weights", "meta", "variance"}  # today's keys + new
    layer = saved["variance"]["layers"]["layers.0"]
    assert set(layer["forward"]) >= {"predicted", "mean", "lo", "hi", "flag", "draws"}
    assert len(layer["forward"]["draws"]) == 3 and saved["variance"]["batches"] == 2
    assert layer["fan_in"] == 784 and layer["weight_var"] == pytest.approx(0.01)
    assert (tmp_path / "probe.png").stat().st_size > 10_000
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert "probe/variance_vs_depth" in acc.Tags()["images"]
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    out = capsys.readouterr().out
    # The header names the init with its std, the activation and every other override.
    header = "probe  init=normal std=0.1 act_fn=identity model.hidden_sizes=[64,32] probe.draws=3 probe.batches=2"
    assert out.splitlines()[0].startswith(header)
    # One number format in every variance column; a sentence after each table.
    lines = out.splitlines()
    rows = [line for line in lines if line.startswith("layers.")]
    assert len(rows) == 3 * 3  # one line a row: the band's column broke every row in two at 80 columns
    # 80 columns: the verdicts ran to 236 (the header line names every override and is left long)
    assert max(len(line.rstrip()) for line in lines[1:]) <= 80
    for line in rows:
        numbers = re.findall(r"\d+\.\d+(?:e[+-]\d+)?", line)
        variances = [n for n in numbers if "e" in n]
        assert all(re.fullmatch(r"\d\.\d\de[+-]\d\d", n) for n in variances), line
    sentences = [line for i, line in enumerate(lines) if re.match(r"^  \S", line) and not re.match(r"^  \S", lines[i - 1])]
    assert [line.split()[0] for line in sentences] == ["Forward", "Backward", "Weight-gradient"]
    assert result["meta"]["arguments"] == header.removeprefix("probe  ")


def test_header_lists_every_non_default_argument():
    from src.probe import header_arguments

    assert header_arguments("normal std=0.1", "identity", ["init=normal", "init.std=0.1", "model.act_fn=identity",
                                                          "model.hidden_sizes=[64]", "probe.draws=3",
                                                          "paths.data_dir=/x"]) == \
        "init=normal std=0.1 act_fn=identity model.hidden_sizes=[64] probe.draws=3"


def test_probe_summary_sets_the_exit_status_when_a_job_failed(tmp_path, capsys):
    """The probe's multirun callback replaces the sweep report: it must fail the sweep the same way."""
    from omegaconf import OmegaConf

    from src.probe import ProbeSummary, summarize_sweep

    ok, failed = tmp_path / "0_init=const", tmp_path / "1_init=normal,init.std=-1"
    for d in (ok, failed):
        (d / ".hydra").mkdir(parents=True)
    minimal = {"activations": {"layers.0": 2.0}, "gradients": {"layers.0": 0.0}, "weights": {"layers.0": 0.0},
               "meta": {"init": "const", "act_fn": "identity", "init_cfg": {"fill": 0.005}, "shapes": {"layers.0": [784, 10]}}}
    (ok / "probe.json").write_text(json.dumps(minimal))
    (ok / "results.json").write_text(json.dumps({"status": "ok"}))
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "init: Invalid std=-1.0: must be > 0"}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as exit_info:
        ProbeSummary().on_multirun_end(config)
    assert exit_info.value.code == 1
    assert "error: job 1_init=normal,init.std=-1: failed: init: Invalid std=-1.0" in capsys.readouterr().err
    md = (tmp_path / "probe_summary.md").read_text()
    assert "| const (fill=0.005) | identity | 2.00e+00 |" in md and "## Jobs without a result" in md
    ProbeSummary(exit_on_failure=False).on_multirun_end(config)  # no exit

    # an ok job whose probe.json is not one probe.py wrote: named, never a traceback
    for text in ("[1]", '{"activations": {}}', "{broken"):
        (ok / "probe.json").write_text(text)
        assert summarize_sweep(tmp_path) is None
    odd = tmp_path / "2_init=xavier"
    (odd / ".hydra").mkdir(parents=True)
    (odd / "probe.json").write_text(json.dumps(minimal))
    (odd / "results.json").write_text(json.dumps({"status": "ok"}))
    _, _, problems = summarize_sweep(tmp_path)
    assert problems[0] == "job 0_init=const: ok: no readable probe.json"


# --- the theory's pieces, each against an independent computation ----------------------------

from scipy import integrate, special  # noqa: E402
from torch import nn  # noqa: E402

from callbacks.variance_probe import (  # noqa: E402
    activations_after,
    gaussian_moments,
    mean_energy,
    measure,
    redraw,
)


def gaussian_mean(g, var):
    """E[g(y)], y ~ N(0, var), by adaptive quadrature (breakpoints where our activations bend)."""
    s = math.sqrt(var)
    pdf = lambda y: np.exp(-y * y / (2 * var)) / math.sqrt(2 * math.pi * var)  # noqa: E731
    points = [p for p in (-6.0, -1.0, 0.0, 1.0, 6.0) if abs(p) < 14 * s] or [0.0]
    with warnings.catch_warnings():  # "roundoff error": it asked for more digits than it can give
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(lambda y: g(y) * pdf(y), -14 * s, 14 * s, points=points, limit=5000,
                              epsabs=0, epsrel=1e-11)[0]


def _elu(y):
    return np.where(y > 0, y, np.expm1(np.minimum(y, 0)))


# (activation, f, f') with f and f' written out in numpy
ACTIVATIONS = [
    (nn.Tanh(), np.tanh, lambda y: 1 - np.tanh(y) ** 2),
    (nn.ELU(), _elu, lambda y: np.where(y > 0, 1.0, np.exp(np.minimum(y, 0)))),
    (nn.GELU(), lambda y: y * special.ndtr(y), lambda y: special.ndtr(y) + y * np.exp(-y * y / 2) / math.sqrt(2 * math.pi)),
    (nn.LeakyReLU(0.2), lambda y: np.where(y > 0, y, 0.2 * y), lambda y: np.where(y > 0, 1.0, 0.2)),
]


@pytest.mark.parametrize("act, f, df", ACTIVATIONS, ids=lambda a: type(a).__name__ if isinstance(a, nn.Module) else "")
def test_moment_integrals_are_accurate_from_a_narrow_to_an_exploding_gaussian(act, f, df):
    for v in (1e-12, 1e-4, 0.3, 1.0, 1.0001, 2.0, 40.0, 1e3, 1e6, 1e8, 1e12):
        (q,), (d,) = gaussian_moments(act, [v])
        assert q == pytest.approx(gaussian_mean(lambda y: f(y) ** 2, v), rel=2e-6, abs=0), v
        assert d == pytest.approx(gaussian_mean(lambda y: df(y) ** 2, v), rel=3e-6, abs=0), v


@pytest.mark.parametrize("act, f, df", ACTIVATIONS, ids=lambda a: type(a).__name__ if isinstance(a, nn.Module) else "")
def test_gaussian_gains_inside_and_outside_the_table(act, f, df):
    """The table covers v in [1e-8, 1e8]; below it f is linear on the Gaussian's scale, above it
    the integrals are computed directly (tanh's E[f²] tends to 1, not to a multiple of v)."""
    v = torch.tensor([0.0, 1e-12, 3e-5, 0.37, 7.0, 5e4, 1e9, 1e12], dtype=torch.float64)
    q, d = gaussian_gains(act, v)
    # v = 0: the limit v -> 0+, where a kink at 0 weighs both one-sided slopes equally
    assert q[0] == 0 and d[0] == pytest.approx((df(np.array(-1e-9)) ** 2 + df(np.array(1e-9)) ** 2) / 2, rel=1e-5)
    for vi, qi, di in zip(v.tolist()[1:], q.tolist()[1:], d.tolist()[1:], strict=True):
        assert qi == pytest.approx(gaussian_mean(lambda y: f(y) ** 2, vi), rel=1e-5, abs=0), vi
        assert di == pytest.approx(gaussian_mean(lambda y: df(y) ** 2, vi), rel=1e-5, abs=0), vi


def test_softmax_gradient_outside_its_table_keeps_the_limits():
    g = softmax_gradient_second_moment(torch.tensor([0.0, 1e-30, 1e30], dtype=torch.float64), 10).numpy()
    np.testing.assert_allclose(g, [0.09, 0.09, 0.18], rtol=2e-3)


def _relu_mean_energy(common, spread):
    """E_u[(E_z relu(a + b z))²], a = √common·u, b = √spread: E_z relu(a + bz) = aΦ(a/b) + bφ(a/b)."""
    b = math.sqrt(spread)

    def inner(u):
        a = math.sqrt(common) * u
        return a * special.ndtr(a / b) + b * math.exp(-(a / b) ** 2 / 2) / math.sqrt(2 * math.pi)

    return gaussian_mean(lambda u: np.vectorize(inner)(u) ** 2, 1.0)


@pytest.mark.parametrize("common, spread", [(0.7, 0.3), (0.2, 1.5), (0.0, 2.0), (5.0, 0.01)])
def test_mean_energy_against_quadrature(common, spread):
    assert mean_energy(nn.ReLU(), common, spread) == pytest.approx(_relu_mean_energy(common, spread), rel=5e-5)
    assert mean_energy(nn.Identity(), common, spread) == common
    assert mean_energy(None, common, spread) == common

    def tanh_inner(u):
        return gaussian_mean(lambda z: np.tanh(math.sqrt(common) * u + z), spread)

    expected = gaussian_mean(lambda u: np.vectorize(tanh_inner)(u) ** 2, 1.0)
    # abs: at common 0 the mean of tanh is 0, which the quadrature gives as ~1e-35
    assert mean_energy(nn.Tanh(), common, spread) == pytest.approx(expected, rel=5e-5, abs=1e-15)


def test_prediction_of_a_tiny_relu_net_step_by_step():
    """ReLU: the per-sample second moment halves, the batch mean's energy goes through
    `mean_energy` with the shared and per-sample parts, E[f'²] = ½ on the way back."""
    net = BaseNetwork(act_fn="relu", input_size=4, num_classes=3, hidden_sizes=[5])
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [3.0, 1.0, -1.0, 2.0], [0.5, 0.5, 2.0, -1.0]])
    (s0, b0), (s1, b1) = (0.3, 0.01), (0.2, 0.05)
    got = predict(net, x, [(s0, b0, "formula"), (s1, b1, "formula")])
    xn = x.double().numpy()
    v0 = 4 * s0 * (xn**2).mean(1) + b0
    c0 = 4 * s0 * (xn.mean(0) ** 2).mean() + b0
    assert got["forward"][0] == pytest.approx(v0.mean() - c0 / 5, rel=1e-12)
    v1 = 5 * s1 * v0 / 2 + b1
    c1 = 5 * s1 * _relu_mean_energy(c0, v0.mean() - c0) + b1
    assert got["forward"][1] == pytest.approx(v1.mean() - c1 / 3, rel=1e-5)
    g1 = softmax_gradient_second_moment(torch.from_numpy(v1), 3).numpy()
    assert got["backward"][1] == pytest.approx(g1.mean(), rel=1e-12)
    assert got["backward"][0] == pytest.approx((0.5 * 3 * s1 * g1).mean(), rel=1e-12)


def test_measure_is_the_population_variance_of_outputs_and_gradients():
    torch.manual_seed(3)
    net = BaseNetwork(act_fn="tanh", input_size=4, num_classes=3, hidden_sizes=[2])
    x, y = torch.randn(3, 4), torch.tensor([0, 2, 1])
    got = measure(net, x, y)
    # The same numbers by hand: outputs kept with retain_grad, the summed loss, then the weight
    # gradient of the mean loss.
    h = net.layers[0](x)
    h.retain_grad()
    logits = net.layers[2](net.layers[1](h))
    logits.retain_grad()
    torch.nn.functional.cross_entropy(logits, y, reduction="sum").backward()
    pop = lambda t: float(np.var(t.detach().double().numpy()))  # noqa: E731
    assert got["forward"] == pytest.approx([pop(h), pop(logits)], rel=1e-5)
    assert got["backward"] == pytest.approx([pop(h.grad), pop(logits.grad)], rel=1e-5)
    assert got["weight_gradient"] == pytest.approx([pop(net.layers[0].weight.grad / 3),
                                                    pop(net.layers[2].weight.grad / 3)], rel=1e-5)


def test_measure_of_a_finite_float32_output_whose_square_overflows_is_finite():
    """Outputs of ~1e22 are finite in float32 but their squares (1e44) are not: the variance must
    still come out finite, equal to the float64 one (as the tutorial's table computes it)."""
    torch.manual_seed(3)
    net = BaseNetwork(act_fn="relu", input_size=4, num_classes=3, hidden_sizes=[2])
    get_init("normal", std=1e11)(net)
    x, y = torch.randn(3, 4), torch.tensor([0, 2, 1])
    logits = net(x)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert not torch.isfinite(logits.var(correction=0))  # what a float32 reduction gives
    got = measure(net, x, y)
    assert got["forward"][1] == pytest.approx(float(np.var(logits.detach().double().numpy())), rel=1e-12)
    assert got["forward"][1] > 1e40


def test_a_std_whose_square_overflows_predicts_inf_instead_of_crashing():
    net = BaseNetwork(act_fn="relu", input_size=4, num_classes=3, hidden_sizes=[2])
    assert init_variances(get_init("normal", std=1e200), net)[0] == (math.inf, math.inf, "formula")


def test_redraw_leaves_the_net_and_the_random_streams_alone():
    torch.manual_seed(0)
    net = BaseNetwork(act_fn="relu", input_size=6, num_classes=3, hidden_sizes=[5])
    before = [p.detach().clone() for p in net.parameters()]
    state = torch.get_rng_state()
    init = get_init("xavier")
    one, again, other = redraw(net, init, 7), redraw(net, init, 7), redraw(net, init, 8)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), again.parameters(), strict=True))
    assert not torch.equal(one.layers[0].weight, other.layers[0].weight)
    assert not torch.equal(one.layers[0].weight, net.layers[0].weight)
    assert torch.count_nonzero(one.layers[0].bias) == 0  # xavier's zero bias, after torch's default


def test_init_formulas_give_the_bias_variance_too():
    """Pooled over the network's layers (the 10 output biases alone are too few to check)."""
    for name, kwargs, expected in (("normal", {"std": 0.1}, lambda d_in: 0.01), ("default", {}, lambda d_in: 1 / (3 * d_in)),
                                   ("equal_var", {}, None), ("xavier", {}, None), ("xavier_normal", {}, None),
                                   ("kaiming", {}, None), ("kaiming_gain", {}, None)):
        torch.manual_seed(0)
        net = BaseNetwork(act_fn="tanh")
        init = get_init(name, **kwargs)
        init(net)
        layers = net.layers[::2]
        formula = init_variances(init, net)
        for layer, (_, b_var, _) in zip(layers, formula, strict=True):
            if expected is None:
                assert b_var == 0 and torch.count_nonzero(layer.bias) == 0, name
            else:
                assert b_var == pytest.approx(expected(layer.in_features), rel=1e-12), name
        if expected is not None:  # the drawn biases, standardised by the formula, have variance 1
            z = torch.cat([layer.bias.detach().double() / math.sqrt(b) for layer, (_, b, _) in zip(layers, formula, strict=True)])
            assert float(z.pow(2).mean()) == pytest.approx(1.0, rel=0.1), name


def test_an_init_without_a_formula_is_measured_layer_by_layer():
    class Halves:  # a user's scheme the probe knows no formula for
        def __call__(self, net):
            for layer in net.layers[::2]:
                nn.init.uniform_(layer.weight, 0, 1)
            return net

    torch.manual_seed(0)
    net = BaseNetwork(act_fn="relu", input_size=3, num_classes=2, hidden_sizes=[4, 2])
    Halves()(net)
    net.layers[2].bias = None  # a Linear without a bias
    got = init_variances(Halves(), net)
    assert [source for *_, source in got] == ["measured"] * 3
    for layer, (w, b, _) in zip(net.layers[::2], got, strict=True):
        assert w == pytest.approx(np.var(layer.weight.detach().double().numpy()), rel=1e-12)
        expected_b = 0.0 if layer.bias is None else np.var(layer.bias.detach().double().numpy())
        assert b == pytest.approx(expected_b, rel=1e-12, abs=0)
    assert got[1][1] == 0.0
    assert [s for *_, s in init_variances(None, net)] == ["measured"] * 3


def test_activations_after_each_linear_and_a_net_the_theory_cannot_read():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Linear(4, 2), nn.GELU())

    acts = activations_after(Custom())
    assert [type(a).__name__ if a is not None else None for a in acts] == ["Tanh", None, "GELU"]
    assert [type(a) for a in activations_after(BaseNetwork(hidden_sizes=[3]))] == [nn.ReLU, type(None)]
    with pytest.raises(ValueError, match="alternating nn.Linear and activation"):
        activations_after(nn.Sequential(nn.Linear(2, 2)))


def test_probe_variances_draws_seeds_report_and_errors(monkeypatch):
    import callbacks.variance_probe as vp

    torch.manual_seed(0)
    net = BaseNetwork(act_fn="relu", input_size=6, num_classes=3, hidden_sizes=[5])
    init = get_init("kaiming")
    init(net)
    batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,)))]
    tolerances = []  # what probe_variances hands to summarize
    real_summarize = vp.summarize

    def summarize(names, raw, pred, tolerance=None, rounding_bound=None):
        tolerances.append(tolerance)
        return real_summarize(names, raw, pred, tolerance, rounding_bound=rounding_bound)

    monkeypatch.setattr(vp, "summarize", summarize)
    report = probe_variances(net, init, batches)
    assert (report["draws"], report["seeds"], report["tolerance"], tolerances) == (10, [None, *range(1, 10)], 0.1, [0.1])
    assert (report["batches"], report["batch_size"]) == (1, 8)
    probe_variances(net, init, batches, draws=2, tolerance=0.3)
    assert tolerances[-1] == 0.3
    # draw k is the net redrawn from seed + k
    draw_3 = measure(redraw(net, init, 3), *batches[0])["forward"][0]
    assert report["layers"]["layers.0"]["forward"]["draws"][3] == pytest.approx(draw_3, rel=1e-6)
    assert report["layers"]["layers.0"]["forward"]["draws"][0] == pytest.approx(measure(net, *batches[0])["forward"][0], rel=1e-6)
    row = report["layers"]["layers.2"]
    assert (row["fan_in"], row["fan_out"], row["weight_var"], row["bias_var"], row["variance_source"]) == (5, 3, 2 / 5, 0.0, "formula")
    for draws, given in ((0, batches), (2, [])):
        with pytest.raises(ValueError, match="must be >= 1 and at least one batch"):
            probe_variances(net, init, given, draws=draws)


def test_summarize_band_flags_and_lines_by_hand():
    """Two layers, 4 draws x 2 batches: the band is the Student-t 95 % interval of the per-draw
    means; a flag needs the prediction outside the band *and* more than `tolerance` away."""
    from scipy import stats

    from callbacks.variance_probe import flag_lines, summarize

    per_draw = np.array([[1.0, 10.0], [1.2, 14.0], [0.9, 6.0], [1.1, 12.0]])  # (draw, layer)
    raw = {q: np.stack([per_draw - 0.05, per_draw + 0.05], axis=1) for q in ("forward", "backward")}
    raw["weight_gradient"] = np.arange(16.0).reshape(4, 2, 2)
    # layers.0: band ≈ [0.84, 1.26]; predicted 1.5 is outside it and 36 % away: flagged.
    # layers.1: band ≈ [5.1, 15.9]; predicted 13 is inside it, 19 % away: not flagged.
    pred = {"forward": np.broadcast_to([1.5, 13.0], (4, 2, 2)).copy(),
            "backward": np.broadcast_to([1.1, 10.5], (4, 2, 2)).copy()}
    report = summarize(["layers.0", "layers.1"], raw, pred, tolerance=0.1)
    for i, name in enumerate(["layers.0", "layers.1"]):
        column = per_draw[:, i]
        lo, hi = stats.t.interval(0.95, 3, loc=column.mean(), scale=stats.sem(column))
        r = report["layers"][name]["forward"]
        assert (r["lo"], r["hi"], r["mean"]) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12),
                                                 pytest.approx(column.mean(), rel=1e-12))
        assert r["draws"] == pytest.approx(list(column), rel=1e-12)
        assert r["ratio"] == pytest.approx(column.mean() / pred["forward"][0, 0, i], rel=1e-12)
        assert report["layers"][name]["weight_gradient"]["mean"] == pytest.approx(raw["weight_gradient"][:, :, i].mean())
    assert report["flags"] == {"forward": ["layers.0"], "backward": []}
    # outside the band but within tolerance: not flagged
    assert summarize(["layers.0", "layers.1"], raw, pred, tolerance=0.4)["flags"]["forward"] == []
    assert flag_lines(report) == [
        f"probe: forward variance of layers.0 measured 1.05 [95% band {report['layers']['layers.0']['forward']['lo']:.3g}, "
        f"{report['layers']['layers.0']['forward']['hi']:.3g}] but predicted 1.5: an assumption of the theory "
        "fails here (docs/diagnostics.md)"]

    # One draw: no band, nothing flagged; a non-finite measurement: no verdict at all.
    one = summarize(["layers.0", "layers.1"], {q: a[:1] for q, a in raw.items()}, {q: a[:1] for q, a in pred.items()})
    assert math.isnan(one["layers"]["layers.0"]["forward"]["lo"]) and one["flags"]["forward"] == []
    raw["forward"][2, 0, 1] = np.inf
    broken = summarize(["layers.0", "layers.1"], raw, pred)
    assert broken["layers"]["layers.1"]["forward"]["flag"] is None
    assert math.isnan(broken["layers"]["layers.1"]["forward"]["lo"])

    # A variance is never negative: a band whose t interval reaches below 0 starts at 0.
    spread = np.array([[0.01, 1.0], [5.0, 1.0], [0.02, 1.0]])  # layers.0: mean 1.68, t half-width ≈ 7.1
    raw = {q: spread[:, None, :].copy() for q in ("forward", "backward", "weight_gradient")}
    pred = {q: np.ones((3, 1, 2)) for q in ("forward", "backward")}
    r = summarize(["layers.0", "layers.1"], raw, pred)["layers"]["layers.0"]["forward"]
    _, hi = stats.t.interval(0.95, 2, loc=spread[:, 0].mean(), scale=stats.sem(spread[:, 0]))
    assert r["lo"] == 0.0 and r["hi"] == pytest.approx(hi, rel=1e-12) and r["flag"] is False


def test_the_figure_says_each_panels_verdict_and_which_way_the_gradient_flows():
    """probe.png's answer was only in the terminal; each panel now carries the terminal's verdict
    (without its bracketed span, to fit), and the backward panel says to read it right to left."""
    from callbacks.variance_probe import summarize, trends, variance_figure

    names = ["layers.0", "layers.2", "layers.4", "layers.6", "layers.8"]
    forward = np.array([1.0, 10.0, 100.0, 1000.0, 5.0])  # ×10 a layer over the hidden ones
    backward = np.array([1.0, 1.1, 0.9, 1.05, 3.0])  # stable from layers.6 back to layers.0
    raw = {"forward": np.tile(forward, (2, 1, 1)) * np.array([0.99, 1.01])[:, None, None],
           "backward": np.tile(backward, (2, 1, 1)), "weight_gradient": np.ones((2, 1, 5))}
    report = summarize(names, raw, {q: raw[q].copy() for q in ("forward", "backward")})
    for n in names:
        report["layers"][n].update(fan_in=8, fan_out=8)
    said = trends(report)
    assert said["forward"] == "Forward variance grows ×10 per layer with depth (×1e+03 from layers.0 to layers.6): exploding."
    assert said["backward"].startswith("Backward variance stays within ×1.22 from layers.6 to layers.0: stable")
    top, bottom = variance_figure(report, "t").axes
    assert top.get_title() == "forward: variance of each Linear's output\ngrows ×10 per layer with depth: exploding."
    assert bottom.get_title().endswith("\nstays within ×1.22 from layers.6 to layers.0: stable.")
    assert bottom.get_xlabel() == "← the gradient flows from the loss (right) towards the input (left)"


def test_a_non_finite_prediction_is_not_compared():
    """inf or NaN predicted: no verdict (flag None), not "explained" (flag False)."""
    from callbacks.variance_probe import summarize

    raw = {q: np.array([[[1.0, 2.0]], [[1.1, 2.1]], [[0.9, 1.9]]]) for q in ("forward", "backward", "weight_gradient")}
    pred = {q: np.broadcast_to([np.inf, np.nan], (3, 1, 2)).copy() for q in ("forward", "backward")}
    report = summarize(["layers.0", "layers.1"], raw, pred)
    assert [report["layers"][n]["forward"]["flag"] for n in ("layers.0", "layers.1")] == [None, None]
    assert report["flags"] == {"forward": [], "backward": []}


# --- the sentences under the tables: what a reader takes away ----------------------------------

def test_trend_sentence_verdicts_and_their_edges():
    from src.probe import trend_sentence

    names = ["layers.0", "layers.2", "layers.4", "layers.6"]
    assert trend_sentence([1.01, 0.998, 1.04, 1.0], names, "Forward variance") == \
        "Forward variance stays within ×1.04 from layers.0 to layers.6: stable."
    # the tutorial's tanh + Xavier: each step under ×2, but they add up
    assert trend_sentence([1.24, 0.559, 0.288, 0.255], names, "Forward variance") == \
        "Forward variance shrinks ×1.69 per layer with depth (×4.86 from layers.0 to layers.6): mild decay."
    assert trend_sentence([1.0, 1.3, 1.7, 2.2], names, "Forward variance") == \
        "Forward variance grows ×1.3 per layer with depth (×2.2 from layers.0 to layers.6): mild growth."
    assert trend_sentence([7.9e-2, 4.1e-3, 2.0e-4, 1.0e-5], names, "Forward variance") == \
        "Forward variance shrinks ×19.9 per layer with depth (×7.9e+03 from layers.0 to layers.6): vanishing."
    assert trend_sentence([0.15, 0.6, 2.4, 9.6], list(reversed(names)), "Backward variance", "towards the input") == \
        "Backward variance grows ×4 per layer towards the input (×64 from layers.6 to layers.0): exploding."
    # ×2 per layer exactly is still "mild"; the first value over it is not
    assert trend_sentence([1.0, 2.0, 4.0], names[:3], "v").endswith(": mild growth.")
    assert trend_sentence([1.0, 2.0, 4.01], names[:3], "v").endswith(": exploding.")
    # a bump under ×2 that comes back down is stable; ×2 itself is not
    assert trend_sentence([1.0, 1.9, 1.0], names[:3], "v").endswith(": stable.")
    # ×2 itself is uneven: a bump that comes back is no trend, whatever its size
    assert trend_sentence([4.0, 2.0, 1.0], names[:3], "v").endswith(": mild decay.")  # ÷2 per layer: still mild
    # a missing value at an end is left out: the ends are the first and last known ones ...
    assert trend_sentence([None, 1.0, 2.5, 1.1], names, "v") == (
        "v varies ×2.5 from layers.2 to layers.6 but ends within ×1.1 of where it started: uneven, no trend with "
        "depth.")
    # ... (the steps are counted from the first known one: ×16 over 2 layers is ×4 per layer) ...
    assert trend_sentence([None, 1.0, 4.0, 16.0], names, "v") == (
        "v grows ×4 per layer with depth (×16 from layers.2 to layers.6): exploding.")
    assert trend_sentence([2.0, 5.0, 1.1], names[:3], "v") == (  # ending lower: the ratio's other way round
        "v varies ×4.55 from layers.0 to layers.4 but ends within ×1.82 of where it started: uneven, no trend with "
        "depth.")
    # ... and one in the middle still counts as a layer: ×16 over 2 layers is ×4 per layer
    assert trend_sentence([1.0, float("nan"), 16.0], names[:3], "v") == (
        "v grows ×4 per layer with depth (×16 from layers.0 to layers.4): exploding.")
    assert trend_sentence([1.0, 2.0, 1.0], names[:3], "v") == \
        "v varies ×2 from layers.0 to layers.4 but ends within ×1 of where it started: uneven, no trend with depth."
    assert trend_sentence([1.0, 2.5, 1.2, 0.0, 1.9], [*names, "out"], "Backward variance", "towards the input") == (
        "Backward variance varies ×2.5 from layers.0 to out but ends within ×1.9 of where it started: uneven, no "
        "trend towards the input.")  # a zero in the middle is left out of the spread
    assert trend_sentence([1.0, 2.5, 0.5], names[:3], "v").endswith(": mild decay.")  # ×2 end to end is a trend
    assert trend_sentence([0.5, 2.5, 1.0], names[:3], "v").endswith(": mild growth.")
    for values in ([0.0, 0.0, 0.0], [float("nan"), 1.0], [None, None], [2.0]):
        assert trend_sentence(values, names[: len(values)], "v") == "v: no positive values to compare."
    # an inf is no known value either: no "×inf per layer", and no ÷0 when it is the first
    assert trend_sentence([7.75e22, math.inf], names[:2], "v") == "v: no positive values to compare."
    assert trend_sentence([math.inf, 1.0, 4.0], names[:3], "v") == (
        "v grows ×4 per layer with depth (×4 from layers.2 to layers.4): exploding.")
    # a NaN in the middle is skipped, not compared
    assert trend_sentence([1.0, float("nan"), 1.1], names[:3], "v") == "v stays within ×1.1 from layers.0 to layers.4: stable."


def sentence_report(forward, backward=None, draws=10):
    """summarize() of `draws` draws per layer: {name: (measured, predicted)}; the draws spread ±1 %."""
    from callbacks.variance_probe import summarize

    backward = backward or forward
    names = list(forward)
    spread = np.linspace(0.99, 1.01, draws)[:, None, None]
    raw = {q: spread * np.array([[[rows[n][0] for n in names]]]) for q, rows in
           (("forward", forward), ("backward", backward), ("weight_gradient", forward))}
    pred = {q: np.broadcast_to([rows[n][1] for n in names], (draws, 1, len(names))).copy()
            for q, rows in (("forward", forward), ("backward", backward))}
    return {**summarize(names, raw, pred), "draws": draws}


def test_flag_sentence_counts_only_the_layers_it_compared():
    """A layer without a verdict (non-finite measurement or prediction, no band) is neither flagged
    nor explained: the sentence says which and why, never "at every layer"."""
    from src.probe import flag_sentence

    inf, nan = math.inf, math.nan
    one_inf = sentence_report({"layers.0": (1.0, 1.0), "layers.2": (inf, 6e43)})
    assert one_inf["layers"]["layers.2"]["forward"]["flag"] is None
    assert flag_sentence(one_inf, "forward") == (
        "The prediction lies inside the band (or within the theory's tolerance) at the 1 layer compared: the "
        "formula explains it there. 1 of 2 layers not compared: layers.2 (the measured variance is not finite).")
    mixed = sentence_report({"layers.0": (1.0, 2.0), "layers.2": (1.0, 1.0), "layers.4": (nan, 1.0),
                             "layers.6": (1.0, inf)})
    assert flag_sentence(mixed, "forward") == (
        "Flagged (layers.0): measurement and prediction differ by more than 10 draws and the theory's tolerance "
        "explain; an assumption fails there (docs/diagnostics.md). 2 of 4 layers not compared: layers.4 (the "
        "measured variance is not finite); layers.6 (the predicted variance is not finite).")
    assert flag_sentence(sentence_report({"layers.0": (1.0, 1.0), "layers.2": (2.0, 2.0), "layers.4": (inf, 1.0)}),
                         "forward").startswith("The prediction lies inside the band (or within the theory's "
                                               "tolerance) at all 2 layers compared: ")
    assert flag_sentence(sentence_report({"layers.0": (inf, 1.0), "layers.2": (nan, 1.0)}), "forward") == (
        "No layer could be compared with the prediction: layers.0, layers.2 (the measured variance is not finite).")
    # one draw: no band, so nothing was compared (summarize flags nothing there)
    single = sentence_report({"layers.0": (1.0, 1.0), "layers.2": (1.0, 5.0)}, draws=1)
    assert single["flags"]["forward"] == []
    assert flag_sentence(single, "forward") == ("No layer could be compared with the prediction: layers.0, "
                                                "layers.2 (one draw gives no band; probe.draws >= 2 does).")


def test_the_flag_column_marks_a_layer_without_a_verdict(capsys):
    """`—` where the sentence says "not compared"; blank (explained) only where a band held the prediction."""
    from src.probe import print_tables

    shapes = {"layers.0": [4, 3], "layers.2": [3, 2]}
    report = sentence_report({"layers.0": (1.0, 1.0), "layers.2": (math.inf, 6e43)},
                             {"layers.0": (1.0, 1.0), "layers.2": (1.0, 1.0)})
    report.update(batches=1, batch_size=8)
    print_tables({"meta": {"arguments": "init=normal", "seed": 0, "shapes": shapes, "gradient_means": {}},
                  "variance": report, **{k: dict.fromkeys(shapes, 1.0) for k in ("activations", "gradients", "weights")}})
    forward = capsys.readouterr().out.split("Backward")[0]
    rows = {line.split()[0]: line.rstrip() for line in forward.splitlines() if line.lstrip().startswith("layers.")}
    assert rows["layers.2"].endswith("—") and not rows["layers.0"].endswith("—")


def test_flag_and_gradient_sentences():
    from src.probe import flag_sentence, gradient_sentence

    report = sentence_report({"layers.6": (1.0, 1.0), "layers.8": (1.0, 1.0)},
                             {"layers.6": (1.0, 2.0), "layers.8": (1.0, 2.0)})
    assert report["flags"] == {"forward": [], "backward": ["layers.6", "layers.8"]}
    assert flag_sentence(report, "forward") == ("The prediction lies inside the band (or within the theory's "
                                                "tolerance) at every layer: the formula explains it.")
    assert flag_sentence(report, "backward") == (
        "Flagged (layers.6, layers.8): measurement and prediction differ by more than 10 draws and the "
        "theory's tolerance explain; an assumption fails there (docs/diagnostics.md).")

    def result(gradients, means=None):
        return {"gradients": gradients, "meta": {"gradient_means": means or {}}}

    assert gradient_sentence(result({"layers.0": 3.6e-5, "layers.2": 4.6e-5, "layers.8": 1.7e-3})) == (
        "Weight-gradient variance spans ×47.2 across layers: one learning rate suits every layer only when "
        "this is small (the tutorial's reason to balance gradients).")
    # zero relative to the gradient's own size: 1e-20 next to a mean of 1e-3 is "all equal" ...
    symmetric = result({"layers.0": 2e-4, "layers.2": 1e-20, "layers.4": 0.0}, {"layers.2": 1e-3})
    assert gradient_sentence(symmetric).startswith("Weight-gradient variance ≈ 0 in layers.2, layers.4: every unit")
    # ... but a tiny gradient that varies on its own scale is not
    tiny = result({"layers.0": 1e-20, "layers.2": 2e-20}, {"layers.0": 1e-12, "layers.2": 1e-12})
    assert gradient_sentence(tiny).startswith("Weight-gradient variance spans ×2 across layers")
    # without a known mean only an exact 0 counts as "all equal"
    assert gradient_sentence(result({"layers.0": 1e-20, "layers.2": 3e-20})).startswith("Weight-gradient variance spans ×3")
    assert gradient_sentence(result({"layers.0": 1e-3, "layers.2": float("nan")})) == \
        "Weight-gradient variance: too few layers to compare."


def test_gradient_sentence_edges():
    from src.probe import gradient_sentence

    # the "all equal" bound is 1e-12 x the gradient's mean squared, inclusive: 1.0 next to a mean
    # of 1e6 is equal (a); 0.5 next to a mean of 1 is not (b); 1.0 without a known mean is not (c)
    grads = {"a": 1.0, "b": 0.5, "c": 1.0, "d": None, "e": float("nan")}
    result = {"gradients": grads, "meta": {"gradient_means": {"a": 1e6, "b": 1.0}}}
    assert gradient_sentence(result) == (
        "Weight-gradient variance ≈ 0 in a: every unit of those layers gets the same gradient, so they stay "
        "identical (symmetry never broken).")
    del grads["a"]
    assert gradient_sentence(result).startswith("Weight-gradient variance spans ×2 across layers")
    # a probe.json from before gradient_means: only an exact 0 is "all equal"
    assert gradient_sentence({"gradients": grads, "meta": {}}).startswith("Weight-gradient variance spans ×2")


def test_number_format_rows_and_the_header():
    from callbacks.variance_probe import _ends
    from src.probe import header_arguments, sci, table_rows

    assert (sci(None), sci(float("nan")), sci(1234.5), sci(0.0)) == ("—", "—", "1.23e+03", "0.00e+00")
    # the trend needs positive known ends; a zero in the middle is left to the sentence
    assert [_ends(v) for v in ([0.0, 1.0], [1.0, 0.0], [-1.0, 1.0], [1.0, 2.0, 0.0], [1.0], [None, 1.0])] == [None] * 6
    assert _ends([1.0, 0.0, 4.0]) == (0, 2) and _ends([None, 1.0, float("nan"), 4.0, None]) == (1, 3)
    assert header_arguments("normal", "identity", ["init=normal", "+init.std=0.1", "~model.act_fn",
                                                   "model.act_fn=identity", "batch_size=64"]) == \
        "init=normal act_fn=identity batch_size=64"
    result = {"meta": {"shapes": {"layers.0": [784, 512], "layers.2": [512, 10]}},
              "activations": {"layers.0": 1.0, "layers.2": 2.0}, "gradients": {"layers.0": 3.0},
              "weights": {"layers.2": 4.0}}
    assert table_rows(result) == [
        {"layer": "layers.0", "shape": "784→512", "activation_var": 1.0, "gradient_var": 3.0, "weight_var": None},
        {"layer": "layers.2", "shape": "512→10", "activation_var": 2.0, "gradient_var": None, "weight_var": 4.0}]


def test_cuda_asked_for_where_there_is_none_is_one_line(monkeypatch):
    from omegaconf import OmegaConf

    from src.errors import ConfigError
    from src.probe import _probe_settings

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError) as info:
            _probe_settings(OmegaConf.create({"device": device}))
        assert str(info.value) == f"device={device} but CUDA is not available on this machine; use device=cpu"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert _probe_settings(OmegaConf.create({"device": "cuda:1"}))["device"] == "cuda:1"


@pytest.mark.parametrize("cfg, message", [
    ({"batch_size": 0}, "batch_size=0 must be an integer >= 1"),  # was: range() arg 3 must not be zero
    ({"batch_size": -5}, "batch_size=-5 must be an integer >= 1"),  # was: IndexError
    ({"batch_size": "abc"}, "batch_size='abc' must be an integer >= 1"),
    ({"batch_size": True}, "batch_size=True must be an integer >= 1"),
    ({"probe": {"draws": 0}}, "probe.draws=0 must be an integer >= 1"),
    ({"probe": {"batches": 2.5}}, "probe.batches=2.5 must be an integer >= 1"),
    ({"probe": {"tolerance": -0.1}}, "probe.tolerance=-0.1 must be a number >= 0"),
    ({"probe": {"tolerance": "abc"}}, "probe.tolerance='abc' must be a number >= 0"),
    ({"probe": {"tolerance": float("nan")}}, "probe.tolerance=nan must be a number >= 0"),
    ({"device": "tpu"}, "device='tpu' is not a device; use cpu, cuda or cuda:<index>"),
    ({"tensorboard": "maybe"}, "tensorboard='maybe' must be true or false"),  # wrote TensorBoard files
    # each of these was a traceback and exit 1
    ({"device": "meta"}, "device='meta' is not supported here; use cpu, cuda or cuda:<index>"),
    ({"seed": -1}, "seed=-1 must be an integer in [0, 2**32 - 1]"),
    ({"seed": 2**40}, "seed=1099511627776 must be an integer in [0, 2**32 - 1]"),
    ({"seed": "abc"}, "seed='abc' must be an integer in [0, 2**32 - 1]"),
    ({"seed": None}, "seed=None must be an integer in [0, 2**32 - 1]"),
    ({"probe": "abc"}, "probe='abc' is not a group of settings; set its keys: probe.draws=10"),
    ({"model": {"num_classes": 1}}, "model.num_classes=1 is fewer than FashionMNIST's 10 classes"),  # IndexError
])
def test_bad_probe_settings_are_one_line(cfg, message):
    from omegaconf import OmegaConf

    from src.errors import ConfigError
    from src.probe import _probe_settings

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        _probe_settings(OmegaConf.create(cfg))


def test_probe_settings_defaults_and_values():
    from omegaconf import OmegaConf

    from src.probe import _probe_settings

    assert _probe_settings(OmegaConf.create({})) == {"draws": 10, "batches": 4, "batch_size": 1024,
                                                     "tolerance": 0.1, "device": "cpu"}
    given = {"batch_size": 1, "device": "cpu:0", "probe": {"draws": 1, "batches": 1, "tolerance": 0}}
    assert _probe_settings(OmegaConf.create(given)) == {"draws": 1, "batches": 1, "batch_size": 1,
                                                        "tolerance": 0.0, "device": "cpu:0"}
