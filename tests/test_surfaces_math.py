"""src/surfaces.py's pieces, in-process and fast: the surfaces against their formulas, the config
checks' messages, the optimizers the playground builds, `train_curve` by hand and against the
tutorial's loop, the plot window, the numbers and labels the figures and the table print, where
an arrow marks a path that ends outside. test_surfaces.py runs the CLI (a subprocess) and the
tutorial's conclusions; `make mutants ARGS=surfaces` runs every mutant against this file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from torch import nn

from src.errors import ConfigError
from src.surfaces import (
    SurfaceSpec,
    _border_point,
    _color,
    _inside,
    _is_inside,
    _pair,
    _range,
    auto_ranges,
    bivar_gaussian,
    end_arrow,
    final_values,
    fmt_number,
    legend_label,
    make_optimizer_factory,
    mark_end,
    optimizer_configs,
    pathological,
    rosenbrock,
    run_trajectories,
    settings_text,
    steep,
    summary_table,
    surface_grid,
    train_curve,
    validate_surface,
)
from tests.test_surfaces import LABELS, load_cfg, tutorial_points

T = torch.tensor


def spec(x_range=None, y_range=None, fn=rosenbrock, dtype=torch.float64) -> SurfaceSpec:
    return SurfaceSpec("s", fn, "src.surfaces.rosenbrock", (0.0, 0.0), 3, dtype, x_range, y_range)


# -----------------------------------------------------------------------------
# the surfaces


def test_surfaces_against_their_formulas():
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert float(pathological(T(0.0), T(0.0))) == pytest.approx(0.5)
    assert float(pathological(T(1.0), T(2.0))) == pytest.approx(math.tanh(1) ** 2 + 0.01 + sig(2), rel=1e-6)
    assert float(pathological(T(-3.0), T(-1.0))) == pytest.approx(math.tanh(3) ** 2 + 0.03 + sig(-1), rel=1e-6)
    assert float(bivar_gaussian(T(0.0), T(0.0))) == pytest.approx(1 / (2 * math.pi))
    g = bivar_gaussian(T(1.5), T(-1.0), x_mean=1.0, y_mean=-0.5, x_sig=0.5, y_sig=2.0)
    assert float(g) == pytest.approx(math.exp(-0.25 / 0.5 - 0.25 / 8) / (2 * math.pi), rel=1e-6)
    # the steep surface: three wells of depth 1 / (2 pi 0.04) = 3.979; the plateau ~0
    for well in ((1.0, -0.5), (-1.0, 0.5), (-0.5, -0.8)):
        assert float(steep(T(well[0], dtype=torch.float64), T(well[1], dtype=torch.float64))) == \
            pytest.approx(-1 / (2 * math.pi * 0.04), rel=1e-3)
    assert abs(float(steep(T(3.0), T(3.0)))) < 1e-30
    assert float(rosenbrock(T(1.0), T(1.0))) == 0 and float(rosenbrock(T(0.0), T(0.0))) == 1
    assert float(rosenbrock(T(1.0), T(2.0))) == 100 and float(rosenbrock(T(0.0), T(1.0), a=2, b=3)) == 4 + 3


# -----------------------------------------------------------------------------
# config checks


def test_pair_and_range_messages():
    def err(check, value, what):
        with pytest.raises(ConfigError) as e:
            check(value, what)
        return str(e.value)

    assert _pair([5, 5], "w") == (5.0, 5.0) and _pair((1.5, -2), "w") == (1.5, -2.0)
    assert _pair(OmegaConf.create([1, 2]), "w") == (1.0, 2.0)
    for bad, shown in (([1], "[1]"), ([1, 2, 3], "[1, 2, 3]"), ("ab", "'ab'"), ([True, 1], "[True, 1]"),
                       (["a", 1], "['a', 1]"), (None, "None"), (OmegaConf.create([1]), "[1]")):
        assert err(_pair, bad, "w") == f"w must be 2 numbers like [5, 5], got {shown}"
    assert err(_pair, [math.nan, 1], "w") == "w must be finite, got [nan, 1]"
    assert err(_pair, [1, -math.inf], "w") == "w must be finite, got [1, -inf]"
    assert _range(None, "r") is None and _range([-1, 2], "r") == (-1.0, 2.0)
    assert err(_range, [2, 1], "r") == "r must be [low, high] with low < high, got [2, 1]"
    assert err(_range, [1, 1], "r") == "r must be [low, high] with low < high, got [1, 1]"
    assert err(_range, [1], "r") == "r must be 2 numbers like [5, 5], got [1]"


def test_validate_surface_values_and_messages():
    base = {"_target_": "src.surfaces.rosenbrock", "init": [1, 2], "steps": 7}
    s = validate_surface(OmegaConf.create(base))
    assert (s.name, s.target, s.init, s.steps, s.dtype, s.x_range, s.y_range) == \
        ("rosenbrock", "src.surfaces.rosenbrock", (1.0, 2.0), 7, torch.float32, None, None)
    assert s.fn is rosenbrock
    s = validate_surface(OmegaConf.create({**base, "name": "banana", "dtype": "float64", "params": {"b": 3},
                                           "x_range": [-2, 2], "y_range": [0, 1]}))
    assert (s.name, s.dtype, s.x_range, s.y_range) == ("banana", torch.float64, (-2.0, 2.0), (0.0, 1.0))
    assert float(s.fn(T(0.0), T(1.0))) == 1 + 3  # params became keyword arguments
    s = validate_surface(OmegaConf.create({**base, "steps": 1, "params": {"b": "${steps}"}}))
    assert s.steps == 1 and float(s.fn(T(0.0), T(1.0))) == 1 + 1  # interpolations resolved

    def err(**change):
        with pytest.raises(ConfigError) as e:
            validate_surface(OmegaConf.create({**base, **change}))
        return str(e.value)

    assert err(_target_=None) == err(_target_="") == err(_target_=3) == \
        "surface._target_ must name a function of (w1, w2), e.g. src.surfaces.pathological"
    assert err(_target_="src.surfaces.nope") == \
        "surface._target_='src.surfaces.nope' is not an importable function (ImportError)"
    assert "\n" not in err(_target_="src.surfaces.nope")
    for steps in (0, -3, 1.5, True, "5", None):
        assert err(steps=steps) == f"surface.steps must be a positive integer, got {steps!r}"
    assert err(dtype="float16") == "surface.dtype must be one of ['float32', 'float64'], got 'float16'"
    assert err(init=[1]) == "surface.init must be 2 numbers like [5, 5], got [1]"
    assert err(x_range=[2, 1]) == "surface.x_range must be [low, high] with low < high, got [2, 1]"
    assert err(y_range=[0, 0]) == "surface.y_range must be [low, high] with low < high, got [0, 0]"


def test_validate_surface_calls_the_function_once_and_refuses_what_train_curve_cannot_use():
    """A surface that is not a differentiable f(w1, w2) -> 1-element tensor: one line, before any step."""
    base = {"init": [1, 2], "steps": 7}

    def err(target, **change):
        with pytest.raises(ConfigError) as e:
            validate_surface(OmegaConf.create({**base, "_target_": target, **change}))
        assert "\n" not in str(e.value)
        return str(e.value)

    assert err("math.hypot") == ("surface._target_='math.hypot' must return a 1-element loss tensor "
                                 "that depends on (w1, w2) (torch ops, not math), got float")
    assert err("math.sqrt") == ("surface._target_='math.sqrt' must be a function of (w1, w2) on tensors; "
                                "calling it at surface.init failed: TypeError: math.sqrt() takes exactly "
                                "one argument (2 given)")
    assert err("torch.eq") == ("surface._target_='torch.eq' must return a 1-element loss tensor that "
                               "depends on (w1, w2) (torch ops, not math), got a tensor of shape [] "
                               "with no gradient")
    assert err("src.surfaces.rosenbrock", params={"a": [1.0, 2.0]}) == (  # a bad `params` shows here too
        "surface._target_='src.surfaces.rosenbrock' must be a function of (w1, w2) on tensors; calling it "
        "at surface.init failed: TypeError: unsupported operand type(s) for -: 'list' and 'Tensor'")
    assert err("torch.div", init=[1, 0]) == ("surface._target_='torch.div' is inf at surface.init=[1.0, 0.0]: "
                                             "start where the loss is finite")
    # the right shape passes, any torch function of two tensors included
    assert validate_surface(OmegaConf.create({**base, "_target_": "torch.atan2"})).target == "torch.atan2"


def test_optimizer_configs_the_surfaces_three_or_the_one_asked_for():
    cfg = load_cfg()
    configs = optimizer_configs(cfg)
    assert list(configs) == LABELS and configs["SGD"].lr == 10
    one = load_cfg(["optim=adam"])
    assert list(optimizer_configs(one)) == ["Adam"]  # named after its class
    assert list(optimizer_configs(one, "adam")) == ["adam"]  # or as the command line named it
    bare = OmegaConf.create({"optim": {"lr": 1}, "surface": {}})
    assert list(optimizer_configs(bare)) == ["optim"]
    with pytest.raises(ConfigError, match=r"^no optimizer: the surface config has no `optimizers:` and no "
                                          r"optim=\.\.\. was given$"):
        optimizer_configs(OmegaConf.create({"surface": {"optimizers": {}}}))


def test_optimizer_factory_builds_per_parameter_optimizers_and_says_what_is_wrong():
    p = [nn.Parameter(torch.zeros(2))]
    ours = OmegaConf.create({"_target_": "src.optim.SGD", "_partial_": True, "lr": 0.5})
    assert make_optimizer_factory("a", ours)(p).defaults["foreach"] is False
    chosen = OmegaConf.create({"_target_": "src.optim.SGD", "_partial_": True, "lr": 0.5, "foreach": True})
    assert make_optimizer_factory("a", chosen)(p).defaults["foreach"] is True
    no_partial = OmegaConf.create({"_target_": "src.optim.Adam", "lr": 0.5})  # partial all the same
    assert make_optimizer_factory("a", no_partial)(p).defaults["lr"] == 0.5
    theirs = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5})
    assert make_optimizer_factory("t", theirs)(p).defaults["foreach"] is None  # torch's own default
    for bad in ({"lr": 1}, {"_target_": "src.optim.SGD"}):
        cfg = OmegaConf.create(bad) if "_target_" not in bad else bad
        with pytest.raises(ConfigError, match=r"^optimizer 'x' needs a _target_ \(e.g. src.optim.Adam\)$"):
            make_optimizer_factory("x", cfg)
    with pytest.raises(ConfigError, match=r"^cannot build optimizer 'x': Invalid learning rate lr=-1: must be > 0 and finite$"):
        make_optimizer_factory("x", OmegaConf.create({"_target_": "src.optim.SGD", "_partial_": True, "lr": -1}))


# -----------------------------------------------------------------------------
# the loop


def test_train_curve_by_hand():
    """SGD lr 0.1 on w1^2 + w2^2 from (1, 2): each step multiplies the weights by 0.8; each row
    holds the weights before an update and the loss at them."""
    def sgd(params):
        return torch.optim.SGD(params, lr=0.1)

    rows = train_curve(sgd, lambda a, b: a ** 2 + b ** 2, num_updates=3, init=(1.0, 2.0), dtype=torch.float64)
    assert rows.dtype == torch.float64 and rows.shape == (3, 3)
    torch.testing.assert_close(rows, T([[1.0, 2.0, 5.0], [0.8, 1.6, 3.2], [0.64, 1.28, 2.048]], dtype=torch.float64))
    # float64 weights from the start: (0.1, 1/3) exactly, not their float32 roundings
    rows = train_curve(sgd, lambda a, b: a * b, num_updates=1, init=(0.1, 1 / 3), dtype=torch.float64)
    assert rows.tolist() == [[0.1, 1 / 3, 0.1 / 3]]
    rows = train_curve(sgd, lambda a, b: a + b)  # the tutorial's defaults: 100 updates from (5, 5)
    assert rows.shape == (100, 3) and rows.dtype == torch.float32 and rows[0].tolist() == [5.0, 5.0, 10.0]
    assert rows[1].tolist() == pytest.approx([4.9, 4.9, 9.8])
    # a surface computing in float64 on float32 weights: the rows stay float32
    rows = train_curve(sgd, lambda a, b: (a ** 2 + b ** 2).double(), num_updates=1, init=(1.0, 2.0))
    assert rows.dtype == torch.float32 and rows.tolist() == [[1.0, 2.0, 5.0]]


@pytest.mark.parametrize("surface", ["pathological", "steep"])
def test_trajectories_in_process_equal_the_tutorial_loop_bit_for_bit(surface):
    spec_, results = run_trajectories(load_cfg([f"surface={surface}"]))
    ref = tutorial_points(surface, torch.float32)
    assert list(results) == LABELS and spec_.steps == 100
    for label in LABELS:
        assert torch.equal(results[label][1], ref[label]), label


def test_settings_carry_the_optimizers_defaults():
    _, results = run_trajectories(load_cfg(["surface.steps=2"]))
    assert results["SGD"][0] == {"_target_": "src.optim.SGD", "lr": 10, "weight_decay": 0.0}
    assert results["SGDMom"][0] == {"_target_": "src.optim.SGDMomentum", "lr": 10, "momentum": 0.9,
                                    "weight_decay": 0.0}
    assert results["Adam"][0] == {"_target_": "src.optim.Adam", "lr": 1, "betas": [0.9, 0.999], "eps": 1e-8,
                                  "weight_decay": 0.0}
    assert [p.shape for _, p in results.values()] == [(2, 3)] * 3
    _, results = run_trajectories(load_cfg(["surface.steps=2", "surface.dtype=float64",
                                            "surface.optimizers.SGD.lr=${surface.steps}"]))
    assert results["SGD"][0]["lr"] == 2 and results["SGD"][1].dtype == torch.float64
    _, results = run_trajectories(load_cfg(["optim=adam", "surface.steps=2"]), optim_label="adam")
    assert list(results) == ["adam"]
    cfg = load_cfg(["surface.steps=2", "~surface.optimizers.SGD._partial_"])
    assert "_partial_" not in run_trajectories(cfg)[1]["SGD"][0]
    with pytest.raises(ConfigError, match=r"^cannot build optimizer 'SGDMom': "):
        run_trajectories(load_cfg(["surface.optimizers.SGDMom.momentum=2"]))


# -----------------------------------------------------------------------------
# the plot window and the grid


def test_auto_ranges_the_tutorials_rule_with_a_margin():
    paths = {"a": np.array([[1.0, 2.0, 0], [-3.0, 5.0, 0]]), "b": np.array([[2.0, 4.0, 0], [np.nan, 1e9, 0]])}
    x, y = auto_ranges(spec(), paths)  # w1 symmetric out to max |w1| = 3; w2 from 2 to 5; 5 % more
    assert x == pytest.approx((-3.3, 3.3)) and y == pytest.approx((1.85, 5.15))
    x, y = auto_ranges(spec(), {"a": np.array([[0.0, 2.0, 0], [0.0, 2.0, 0]])})  # never moved: 1 on each side
    assert x == pytest.approx((-1.1, 1.1)) and y == pytest.approx((0.9, 3.1))
    x, y = auto_ranges(spec(), {"a": np.array([[0.5, 2.0, 0], [-0.25, 2.5, np.nan]])})  # a NaN loss: still a place
    assert x == pytest.approx((-0.55, 0.55)) and y == pytest.approx((1.975, 2.525))
    assert auto_ranges(spec((-1, 1), (0, 2)), paths) == ((-1, 1), (0, 2))
    x, y = auto_ranges(spec(y_range=(0, 2)), paths)
    assert x == pytest.approx((-3.3, 3.3)) and y == (0, 2)


def test_surface_grid_is_f_of_x_i_and_y_j():
    xx, yy, zz = surface_grid(spec(dtype=torch.float32), (-1, 1), (0, 4), n=5)
    assert xx.shape == yy.shape == zz.shape == (5, 5) and zz.dtype == np.float32
    np.testing.assert_allclose(xx[:, 0], [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(yy[0], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(zz[4, 1], (1 - 1) ** 2 + 100 * (1 - 1) ** 2)
    np.testing.assert_allclose(zz[0, 3], (1 + 1) ** 2 + 100 * (3 - 1) ** 2)
    assert surface_grid(spec(), (0, 1), (0, 1))[2].shape == (150, 150)


def test_points_outside_the_window_become_nan_in_a_copy():
    pts = np.array([[0, 0, 1], [1, 1, 2], [1.01, 0, 3], [0, -1.01, 4], [-1.01, 0, 5], [0, 1.01, 6]], dtype=np.float32)
    out = _inside(pts, (-1, 1), (-1, 1))
    assert out.dtype == np.float64 and np.isfinite(pts).all()  # the input untouched
    np.testing.assert_array_equal(out[:2], pts[:2])  # the border is inside
    assert np.isnan(out[2:]).all()
    lower = np.array([[-1.0, -1.0, 0.0], [2.0, 0.0, 0.0]])
    out = _inside(lower, (-1, 1), (-1, 1))
    assert out[0].tolist() == [-1, -1, 0] and np.isnan(out[1]).all() and lower[1, 0] == 2.0
    assert _is_inside(np.array([1.0, -1.0]), (-1, 1), (-1, 1))
    assert _is_inside(np.array([-1.0, 1.0]), (-1, 1), (-1, 1))
    assert not _is_inside(np.array([1.0, -1.01]), (-1, 1), (-1, 1))
    assert not _is_inside(np.array([-1.01, 0]), (-1, 1), (-1, 1)) and not _is_inside(np.array([0, 1.01]), (-1, 1), (-1, 1))


def test_border_point_is_where_the_segment_leaves_the_window():
    def border(a, b):
        return _border_point(np.array(a, float), np.array(b, float), (-1, 1), (-2, 2)).tolist()

    assert border([0, 0], [3, 0]) == [1, 0]
    assert border([0, 0], [-3, 0]) == [-1, 0]
    assert border([0, 0], [0, 4]) == [0, 2] and border([0, 0], [0, -4]) == [0, -2]
    assert border([0, 0], [2, 8]) == [0.5, 2]  # the top first (t = 1/4), not the side (t = 1/2)
    assert border([0, 0], [-4, -4]) == [-1, -1]
    assert border([0.5, 0], [0.5, 0]) == [0.5, 0]  # no direction: stays
    assert border([2, 0], [3, 0]) == [2, 0]  # already past the border: t clipped at 0
    assert border([0, 0], [0.5, 1]) == [0.5, 1]  # the other point inside too: at most that point


# -----------------------------------------------------------------------------
# what the figures and the table print


def test_numbers_labels_and_colours():
    assert fmt_number(-0.0) == "0" and fmt_number(-1e-300, 3) == "-1e-300" and fmt_number(-3.97881) == "-3.98"
    assert fmt_number(1234.5678, 6) == "1234.57" and fmt_number(0.000123456, 2) == "0.00012"
    assert settings_text(None) == "" and settings_text({}) == ""
    assert settings_text({"lr": 10, "momentum": 0.9, "weight_decay": 0.0, "eps": 1e-8}) == "lr 10, momentum 0.9"
    assert settings_text({"eps": 1e-6, "lr": 0.5, "betas": [0.9, 0.999], "weight_decay": 0.01, "foreach": False}) \
        == "lr 0.5, betas (0.9, 0.999), eps 1e-06, weight_decay 0.01"
    assert settings_text({"lr": None, "betas": (0.5, 0.25)}) == "betas (0.5, 0.25)"
    assert legend_label("SGD", {"lr": 10}) == "SGD (lr 10)"
    assert legend_label("SGD", {}, 0.00205) == "SGD → loss 0.00205"
    assert legend_label("Adam", {"lr": 0.2}, -0.0) == "Adam (lr 0.2) → loss 0"
    assert [_color(n, i) for i, n in enumerate(["SGD", "SGDMom", "Adam", "x", "y"])] == \
        ["red", "blue", "grey", "tab:pink", "tab:olive"]
    assert _color("z", 6) == "tab:orange" and _color("z", 7) == "tab:purple"


def test_final_values_and_summary_table():
    points = T([[5.0, 5.0, 1.0], [1.0, 2.0, 3.0], [0.25, -1.5, -0.125]])
    assert final_values(points) == {"w1": 0.25, "w2": -1.5, "loss": -0.125}
    record = {"surface": {"name": "steep", "dtype": "float32", "steps": 3, "init": [0, 0]},
              "trajectories": {"SGD": {"optimizer": {"lr": 0.5}, "final": final_values(points)},
                               "Adam": {"optimizer": {"lr": 0.2, "eps": 1e-8},
                                        "final": {"w1": 1 / 3, "w2": -0.0, "loss": 123456789.0}}}}
    assert summary_table(record).splitlines() == [
        "surface steep (float32), 3 steps from (0, 0)",
        "optimizer                w1             w2           loss   settings",
        "SGD                    0.25           -1.5         -0.125   lr 0.5",
        "Adam               0.333333              0    1.23457e+08   lr 0.2"]
    # a path that left the floats: nan alone read like a result, exit 0 and nothing said
    nan = float("nan")
    record["trajectories"]["SGD"]["points"] = [[5.0, 5.0, 1.0], [1e30, -1e30, float("inf")], [nan, nan, nan]]
    assert summary_table(record).splitlines()[-1] == (
        "warning: SGD diverged: its weights or loss are not finite from step 1 on (of 3); try a smaller optim.lr")
    record["trajectories"]["SGD"]["points"] = points.tolist()
    assert len(summary_table(record).splitlines()) == 4


def test_end_arrow_geometry():
    window = (-1, 1), (-1, 1)
    out = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0], [3.0, 0.0, 2.0], [4.0, 0.25, 2.0]])
    head, tail, label, ha, va = end_arrow(out, *window)
    # leaves between (0.5, 0) and (3, 0): the head where that segment crosses x = 1, pointing at the end
    np.testing.assert_allclose(head, [1.0, 0.0])
    direction = np.array([1.5, 0.125]) / np.linalg.norm([1.5, 0.125])
    np.testing.assert_allclose(tail, head - 0.18 * direction)  # 9 % of the window inside
    np.testing.assert_allclose(label, tail - 0.12 * direction)  # and 6 % further for the label
    assert (ha, va) == ("right", "center")  # to the left of an arrow pointing right
    off_centre = np.array([[0.0, 0.5, 1.0], [0.5, 0.5, 1.0], [3.0, 0.5, 2.0], [4.0, 0.75, 2.0]])
    np.testing.assert_allclose(end_arrow(off_centre, *window)[0], [1.0, 0.5])  # from the last point inside
    # just past the border: the direction still has unit length
    head, tail, *_ = end_arrow(np.array([[0.0, 0.0, 1.0], [1.5, 0.0, 1.0]]), *window)
    np.testing.assert_allclose(tail, [1 - 0.18, 0.0])
    # never inside: from the window's centre (1, 1) towards the end; the first border is y = 0
    head, tail, label, ha, va = end_arrow(np.array([[5.0, 5.0, 1.0], [-5.0, -6.0, 1.0]]), (0, 2), (0, 2))
    np.testing.assert_allclose(head, [1 - 6 / 7, 0.0])
    assert (ha, va) == ("left", "bottom")
    # a window twice as tall as wide: directions in units of the window, lengths too
    head, tail, label, ha, va = end_arrow(np.array([[0.0, 0.0, 1.0], [2.0, 4.0, 1.0]]), (-1, 1), (-2, 2))
    np.testing.assert_allclose(head, [1.0, 2.0])  # the corner
    np.testing.assert_allclose(tail, head - 0.09 * np.array([2.0, 4.0]) / math.sqrt(2))
    assert (ha, va) == ("right", "top")
    # straight up: centred text below the arrow
    assert end_arrow(np.array([[0.0, 0.0, 1.0], [0.0, 5.0, 1.0]]), *window)[3:] == ("center", "top")
    assert end_arrow(np.array([[0.0, 0.0, 1.0], [-5.0, 0.1, 1.0]]), *window)[3:] == ("left", "center")


def _axes():
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    return ax


def test_mark_end_inside_is_a_cross_outside_an_arrow_on_the_border():
    ax = _axes()
    inside = np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
    assert mark_end(ax, inside, "red", "A", (-1, 1), (-1, 1)) == "inside"
    assert [(ln.get_marker(), ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax.lines] == [("X", 0.5, 0.5)]
    assert len(ax.texts) == 0
    nan_end = np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, np.nan]])
    assert mark_end(ax, nan_end, "red", "B", (-1, 1), (-1, 1)) == "outside" and len(ax.lines) == 1

    ax = _axes()
    out = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0], [3.0, 0.0, 2.0], [4.0, 0.25, 2.0]])
    assert mark_end(ax, out, "blue", "C", (-1, 1), (-1, 1)) == "outside"
    arrow, label = ax.texts
    # leaves between (0.5, 0) and (3, 0): the head where that segment crosses x = 1
    np.testing.assert_allclose(arrow.xy, [1.0, 0.0])
    direction = (np.array([4.0, 0.25]) - [1.0, 0.0]) / 2
    direction /= np.linalg.norm(direction)
    np.testing.assert_allclose(arrow.xyann, np.array([1.0, 0.0]) - 0.09 * direction * 2)  # tail inside
    assert label.get_text() == "C ends outside\nat (4, 0.25)"
    assert (label.get_ha(), label.get_va()) == ("right", "center")  # to the left of an arrow pointing right
    np.testing.assert_allclose(label.get_position(), np.array(arrow.xyann) - 0.06 * direction * 2)

    ax = _axes()  # never inside: the arrow from the window's centre towards the end
    never = np.array([[5.0, 5.0, 1.0], [-5.0, -6.0, 1.0]])
    assert mark_end(ax, never, "blue", "D", (0, 2), (0, 2)) == "outside"
    arrow, label = ax.texts
    d = np.array([-6.0, -7.0])
    np.testing.assert_allclose(arrow.xy, [1 + d[0] / 7, 0.0])  # from (1, 1): y = 0 comes first
    assert (label.get_ha(), label.get_va()) == ("left", "bottom")

    ax = _axes()  # straight up: centred text below the arrow
    up = np.array([[0.0, 0.0, 1.0], [0.0, 5.0, 1.0]])
    mark_end(ax, up, "blue", "E", (-1, 1), (-1, 1))
    assert (ax.texts[1].get_ha(), ax.texts[1].get_va()) == ("center", "top")
