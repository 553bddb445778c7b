"""Loss-surface playground (surfaces.py, src/surfaces.py): the trajectories are the
tutorial's, bit for bit; the tutorial's conclusions hold; the CLI writes what it should.

One `surfaces.py -m surface=pathological,steep` subprocess (module fixture) serves the
float32 checks, the figures and the TensorBoard files; float64 runs in-process. The pieces
(formulas, config checks and their messages, the plot window, the arrows, the labels) are
tested on their own in test_surfaces_math.py."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from src.surfaces import (
    final_values,
    fmt_number,
    make_optimizer_factory,
    plot_2d,
    run_trajectories,
    summary_table,
)

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["SGD", "SGDMom", "Adam"]


def load_cfg(overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="surfaces", overrides=list(overrides))


# -----------------------------------------------------------------------------
# Independent reference: the tutorial's code, copied (deliberately not importing
# src.surfaces / src.optim). Only changes: `dtype` for train_curve (the tutorial's
# torch.FloatTensor is float32) and the lines the seed text lost (zero_grad's zero_(),
# step's `continue`/no_grad, the optim calls in train_curve).


class OptimizerTemplate:
    def __init__(self, params, lr):
        self.params = list(params)
        self.lr = lr

    def zero_grad(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is None:
                continue
            self.update_param(p)


class TutorialSGD(OptimizerTemplate):
    def update_param(self, p):
        p_update = -self.lr * p.grad
        p.add_(p_update)


class TutorialSGDMomentum(OptimizerTemplate):
    def __init__(self, params, lr, momentum=0.0):
        super().__init__(params, lr)
        self.momentum = momentum
        self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}

    def update_param(self, p):
        self.param_momentum[p] = (1 - self.momentum) * p.grad + self.momentum * self.param_momentum[p]  # fmt: skip
        p_update = -self.lr * self.param_momentum[p]
        p.add_(p_update)


class TutorialAdam(OptimizerTemplate):
    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.param_step = {p: 0 for p in self.params}
        self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}
        self.param_2nd_momentum = {p: torch.zeros_like(p.data) for p in self.params}

    def update_param(self, p):
        self.param_step[p] += 1
        self.param_momentum[p] = (1 - self.beta1) * p.grad + self.beta1 * self.param_momentum[p]
        self.param_2nd_momentum[p] = (1 - self.beta2) * (p.grad) ** 2 + self.beta2 * self.param_2nd_momentum[p]  # fmt: skip
        bias_correction_1 = 1 - self.beta1 ** self.param_step[p]
        bias_correction_2 = 1 - self.beta2 ** self.param_step[p]
        p_2nd_mom = self.param_2nd_momentum[p] / bias_correction_2
        p_mom = self.param_momentum[p] / bias_correction_1
        p_lr = self.lr / (torch.sqrt(p_2nd_mom) + self.eps)
        p_update = -p_lr * p_mom
        p.add_(p_update)


def pathological_curve_loss(w1, w2):
    x1_loss = torch.tanh(w1) ** 2 + 0.01 * torch.abs(w1)
    x2_loss = torch.sigmoid(w2)
    return x1_loss + x2_loss


def bivar_gaussian(w1, w2, x_mean=0.0, y_mean=0.0, x_sig=1.0, y_sig=1.0):
    norm = 1 / (2 * np.pi * x_sig * y_sig)
    x_exp = (-1 * (w1 - x_mean) ** 2) / (2 * x_sig**2)
    y_exp = (-1 * (w2 - y_mean) ** 2) / (2 * y_sig**2)
    return norm * torch.exp(x_exp + y_exp)


def comb_func(w1, w2):
    z = -bivar_gaussian(w1, w2, x_mean=1.0, y_mean=-0.5, x_sig=0.2, y_sig=0.2)
    z -= bivar_gaussian(w1, w2, x_mean=-1.0, y_mean=0.5, x_sig=0.2, y_sig=0.2)
    z -= bivar_gaussian(w1, w2, x_mean=-0.5, y_mean=-0.8, x_sig=0.2, y_sig=0.2)
    return z


def train_curve(optimizer_func, curve_func, num_updates=100, init=(5, 5), dtype=torch.float32):
    weights = nn.Parameter(torch.tensor(init, dtype=dtype), requires_grad=True)
    optim = optimizer_func([weights])
    list_points = []
    for _ in range(num_updates):
        loss = curve_func(weights[0], weights[1])
        list_points.append(torch.cat([weights.data.detach(), loss.unsqueeze(dim=0).detach()], dim=0))  # fmt: skip
        optim.zero_grad()
        loss.backward()
        optim.step()
    return torch.stack(list_points, dim=0)


# the tutorial's calls, written out here so a config edit can't silently change the test
TUTORIAL = {
    "pathological": (
        pathological_curve_loss,
        [5.0, 5.0],
        {
            "SGD": lambda ps: TutorialSGD(ps, lr=10),
            "SGDMom": lambda ps: TutorialSGDMomentum(ps, lr=10, momentum=0.9),
            "Adam": lambda ps: TutorialAdam(ps, lr=1),
        },
    ),
    "steep": (
        comb_func,
        [0.0, 0.0],
        {
            "SGD": lambda ps: TutorialSGD(ps, lr=0.5),
            "SGDMom": lambda ps: TutorialSGDMomentum(ps, lr=1, momentum=0.9),
            "Adam": lambda ps: TutorialAdam(ps, lr=0.2),
        },
    ),
}


def tutorial_points(surface, dtype):
    f, init, optimizers = TUTORIAL[surface]
    return {label: train_curve(make, f, 100, init, dtype) for label, make in optimizers.items()}


# -----------------------------------------------------------------------------
# the app's runs: float32 from one CLI sweep (what a user gets), float64 in-process


def cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "surfaces.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """`python surfaces.py -m surface=pathological,steep` once: {surface: (dir, record)}."""
    root = tmp_path_factory.mktemp("sweep")
    r = cli("-m", "surface=pathological,steep", f"hydra.sweep.dir={root}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("run dir:") == 2 and "SGDMom" in r.stdout  # the summary tables
    dirs = {"pathological": root / "0_pathological", "steep": root / "1_steep"}
    return {s: (d, json.loads((d / "trajectories.json").read_text())) for s, d in dirs.items()}


@pytest.fixture(scope="module")
def runs(sweep):
    """{(surface, dtype): {label: [100, 3] tensor}} for both surfaces and both dtypes."""
    out = {}
    for surface, (_, record) in sweep.items():
        assert record["surface"]["dtype"] == "float32"
        # JSON holds each float32 exactly (as a double), so this round trip is lossless
        out[surface, "float32"] = {
            label: torch.tensor(t["points"], dtype=torch.float32)
            for label, t in record["trajectories"].items()
        }
        _, results = run_trajectories(load_cfg([f"surface={surface}", "surface.dtype=float64"]))
        out[surface, "float64"] = {label: points for label, (_, points) in results.items()}
    return out


# -----------------------------------------------------------------------------
# the trajectories are the tutorial's


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("surface", ["pathological", "steep"])
def test_trajectories_equal_tutorial_loop(runs, surface, dtype):
    """All 100 recorded points of every optimizer vs the tutorial's own classes and loop.

    Required: 1e-6 relative. What holds is stronger, bit-identical, because the app builds
    src.optim's classes with foreach=False, whose per-parameter path is the tutorial's
    arithmetic op for op. This matters: SGD at lr 10 on `pathological` is chaotic, and a
    different rounding (e.g. the fused foreach kernels) ends at a visibly different point.
    """
    torch_dtype = getattr(torch, dtype)
    ref = tutorial_points(surface, torch_dtype)
    app = runs[surface, dtype]
    assert list(app) == LABELS
    for label in LABELS:
        msg = f"{surface}/{dtype}/{label}"
        assert app[label].shape == (100, 3) and app[label].dtype == torch_dtype, msg
        assert app[label][0, :2].tolist() == TUTORIAL[surface][1], msg  # row 0 = the start
        torch.testing.assert_close(app[label], ref[label], rtol=1e-6, atol=0, msg=msg)
        assert torch.equal(app[label], ref[label]), msg


def test_app_builds_per_parameter_optimizers():
    """The playground uses src.optim's classes (the training ones) with foreach=False,
    unless a config sets foreach itself (conf/optim/torch_*.yaml: foreach: true)."""
    p = [nn.Parameter(torch.zeros(2))]
    for label, c in load_cfg().surface.optimizers.items():
        opt = make_optimizer_factory(label, c)(p)
        assert type(opt).__module__ == "src.optim" and opt.defaults["foreach"] is False
    torch_adam = load_cfg(["optim=torch_adam", "optim.lr=0.2"]).optim
    assert make_optimizer_factory("t", torch_adam)(p).defaults["foreach"] is True


# -----------------------------------------------------------------------------
# the tutorial's conclusions (precision-independent: asserted in float32 and float64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pathological_conclusions(runs, dtype):
    p = runs["pathological", dtype]
    sgd_w1 = p["SGD"][:, 0]
    # SGD never settles in the ravine: slides down a wall, is catapulted across the centre,
    # repeats. The exact path is dtype-dependent (chaos), this is not: every one of the last
    # 20 recorded points is off-centre
    assert sgd_w1[-20:].abs().min() > 1.0
    assert (torch.diff(torch.sign(sgd_w1)) != 0).sum() >= 3  # crossed the centre again and again
    # momentum and Adam average the bouncing out: w1 ends at the ravine floor, and they
    # travel far down the w2 slope (started at w2 = 5), further than SGD
    for label in ("SGDMom", "Adam"):
        w1, w2 = p[label][-1, :2].tolist()
        assert abs(w1) < 0.05, label
        assert w2 < 5.0 - 10.0 and w2 < p["SGD"][-1, 1].item(), label


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steep_conclusions(runs, dtype):
    p = runs["steep", dtype]
    adam, sgd = p["Adam"][-1], p["SGD"][-1]
    # Adam sits at the bottom of the (-0.5, -0.8) well: loss ~-3.98, the plateau is ~0
    assert adam[2] < -3.5
    well = torch.tensor([-0.5, -0.8], dtype=adam.dtype)
    assert torch.dist(adam[:2], well) < 0.05
    # plain SGD was kicked out onto the plateau, far from that well (3 sigma = 0.6)
    assert sgd[2] > -0.1
    assert torch.dist(sgd[:2], well) > 0.6


# -----------------------------------------------------------------------------
# the CLI's outputs


def assert_figure(path: Path):
    assert path.stat().st_size > 10_000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.05, f"{path} looks blank"


@pytest.mark.parametrize("surface", ["pathological", "steep"])
def test_cli_run_dir(sweep, surface):
    d, record = sweep[surface]
    s = record["surface"]
    assert s["name"] == surface and s["steps"] == 100
    assert list(record["trajectories"]) == LABELS
    lr = {"pathological": 10, "steep": 0.5}[surface]
    assert record["trajectories"]["SGD"]["optimizer"]["lr"] == lr
    for t in record["trajectories"].values():
        assert np.isfinite(np.array(t["points"])).all()
        assert list(t["final"].values()) == t["points"][-1]  # final = the last recorded row
    if surface == "steep":
        assert s["x_range"] == [-2.0, 2.0]
    assert_figure(d / "surface_2d.png")
    assert_figure(d / "surface_3d.png")
    assert list((d / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(d.glob(".trajectories.json.*"))  # no leftover temp file


def test_single_optimizer_override():
    """`optim=adam optim.lr=0.5 surface.init=[1,1] surface.steps=200`: just that optimizer,
    with conf/optim/adam.yaml's settings plus the overrides (the files are checked above)."""
    cfg = load_cfg(["optim=adam", "optim.lr=0.5", "surface.init=[1,1]", "surface.steps=200"])
    _, results = run_trajectories(cfg, optim_label="adam")
    assert list(results) == ["adam"]
    settings, points = results["adam"]
    assert settings["_target_"] == "src.optim.Adam" and settings["lr"] == 0.5
    assert points.shape == (200, 3) and points[0, :2].tolist() == [1.0, 1.0]
    w1, w2 = points[-1, :2].tolist()
    assert abs(w1) < 0.05 and w2 < 1.0  # Adam from (1, 1) also finds the ravine floor


@pytest.mark.parametrize("override, named", [("surface.steps=0", "surface.steps"),
                                              ("surface._target_=math.hypot", "1-element loss tensor")])
def test_cli_bad_override_is_one_line(tmp_path, monkeypatch, capsys, override, named):
    """surfaces.py's @hydra.main called in-process (a second subprocess would cost ~10 s
    of imports): a bad value is one `error:` line on stderr and exit code 2."""
    argv = ["surfaces.py", override, f"hydra.run.dir={tmp_path}"]
    # and leave pytest's logging alone (Hydra would otherwise install its handlers for good)
    argv += ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:  # run as __main__, so Hydra finds conf/ next to it
        runpy.run_path(str(ROOT / "surfaces.py"), run_name="__main__")
    assert e.value.code == 2
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out and named in lines[0]
    assert not (tmp_path / "trajectories.json").exists()
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


# -----------------------------------------------------------------------------
# validation and user surfaces (in-process)


def test_user_surface_with_params():
    """A surface is any importable f(w1, w2); `params` become keyword arguments."""
    cfg = load_cfg(["surface=rosenbrock", "surface.steps=3", "surface.params.b=10"])
    _, results = run_trajectories(cfg)
    first = results["Adam"][1][0].tolist()  # row 0: the start (-1.5, 2) and the loss there
    assert first[:2] == [-1.5, 2.0]
    assert first[2] == pytest.approx((1 + 1.5) ** 2 + 10 * (2 - 1.5**2) ** 2)
    # any torch function of two tensors works, e.g. a smooth max: log(e^w1 + e^w2)
    cfg = load_cfg(["surface._target_=torch.logaddexp", "surface.steps=20", "optim=sgd"])
    _, results = run_trajectories(cfg, optim_label="sgd")
    losses = results["sgd"][1][:, 2]
    assert (losses[1:] < losses[:-1]).all()  # plain downhill


# -----------------------------------------------------------------------------
# what the figures and the table say (issue 18): hyperparameters, ends, no "-0"


def test_figures_name_hyperparameters_and_mark_every_end():
    spec, results = run_trajectories(load_cfg(["surface=steep"]))
    trajectories = {label: points.double().numpy() for label, (_, points) in results.items()}
    settings = {label: s for label, (s, _) in results.items()}
    ax = plot_2d(spec, trajectories, (-2, 2), (-2, 2), settings).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # float32 SGDMom ends on the plateau at a loss that prints as -0 with %g: shown as 0
    assert "SGDMom (lr 1, momentum 0.9) → loss 0" in labels
    assert "SGD (lr 0.5) → loss -5.97e-10" in labels
    assert "Adam (lr 0.2, betas (0.9, 0.999)) → loss -3.98" in labels
    assert "end (arrow on the border: ends outside)" in labels
    # SGDMom ends at (-4.21, -6.74): an arrow with its head on the window's border, labelled
    end = trajectories["SGDMom"][-1, :2]
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 1
    head = np.asarray(arrows[0].xy)
    assert min(abs(head[0] + 2), abs(head[1] + 2)) < 1e-9 and (np.abs(head) <= 2 + 1e-9).all()
    # ... on the way from the last point inside to the end
    assert np.dot(end - head, head - np.asarray(arrows[0].xyann)) > 0
    assert any(t.get_text() == "SGDMom ends outside\nat (-4.21, -6.74)" for t in ax.texts)
    # the other two end inside: an X on their last point
    xs = [ln for ln in ax.lines if ln.get_marker() == "X" and len(ln.get_xdata()) == 1]
    ends = {(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in xs}
    for label in ("SGD", "Adam"):
        assert tuple(trajectories[label][-1, :2]) in ends


def test_numbers_never_print_as_minus_zero():
    assert fmt_number(-0.0) == "0" and fmt_number(-1e-9, 3) == "-1e-09" and fmt_number(-3.97881) == "-3.98"
    _, results = run_trajectories(load_cfg(["surface=steep"]))
    record = {"surface": {"name": "steep", "dtype": "float32", "steps": 100, "init": [0, 0]},
              "trajectories": {label: {"optimizer": s, "final": final_values(p)} for label, (s, p) in results.items()}}
    assert record["trajectories"]["SGDMom"]["final"]["loss"] == 0  # -0.0 in float32
    table = summary_table(record)
    assert "-0 " not in table + " " and " -0\n" not in table
    assert "lr 1, momentum 0.9" in table


def test_run_dir_is_under_paths_log_dir(tmp_path, monkeypatch, capsys):
    """Started from any working directory, the run dir is <paths.log_dir>/surfaces/<name>/<time>."""
    logs = tmp_path / "logs"
    monkeypatch.chdir(tmp_path)
    argv = ["surfaces.py", f"paths.log_dir={logs}", "surface.steps=3", "hydra/job_logging=none",
            "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "surfaces.py"), run_name="__main__")
    runs = list((logs / "surfaces" / "pathological").iterdir())
    assert len(runs) == 1 and (runs[0] / "trajectories.json").is_file()
    assert f"run dir: {runs[0]}" in capsys.readouterr().out
