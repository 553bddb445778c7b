"""Learning-rate sensitivity (issue 19): curves in the sweep report and the tolerance width.

Sweeps are written by hand (no training); the presets are composed, not run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

import src.resolvers  # noqa: F401  (registers ${lr_around:...})
from src.report import write_report
from src.stats import summarize, tolerance_range

ROOT = Path(__file__).resolve().parents[1]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the tolerance width on synthetic curves ------------------------------------------------------

DECADES = [1e-3, 10 ** -2.5, 1e-2, 10 ** -1.5, 1e-1]  # 5 points, half a decade apart
CLEAN = [True] * 5


def test_flat_curve_is_within_everywhere_and_open_at_both_edges():
    t = tolerance_range(DECADES, [0.9, 0.9, 0.9, 0.9, 0.9], CLEAN, 0.01, log=True)
    assert (t.low, t.high, t.open_low, t.open_high) == (0, 4, True, True)
    assert t.width == pytest.approx(2.0)


def test_peaked_curve():
    # best 0.900 at 1e-2; 0.885 is 1.5 pt below (out), 0.893 is 0.7 pt below (in)
    t = tolerance_range(DECADES, [0.80, 0.885, 0.900, 0.893, 0.85], CLEAN, 0.01, log=True)
    assert (t.best, t.low, t.high) == (2, 2, 3) and t.width == pytest.approx(0.5)
    assert not t.open_low and not t.open_high
    narrow = tolerance_range(DECADES, [0.80, 0.885, 0.900, 0.893, 0.85], CLEAN, 0.005, log=True)
    assert (narrow.low, narrow.high, narrow.width) == (2, 2, 0.0)


def test_monotone_curve_is_open_at_the_top_edge():
    t = tolerance_range(DECADES, [0.70, 0.80, 0.85, 0.875, 0.89], CLEAN, 0.01, log=True)
    assert (t.best, t.low, t.high, t.width, t.open_high) == (4, 4, 4, 0.0, True)
    wider = tolerance_range(DECADES, [0.70, 0.80, 0.85, 0.885, 0.89], CLEAN, 0.01, log=True)
    assert (wider.low, wider.high) == (3, 4) and wider.width == pytest.approx(0.5)


def test_a_diverged_point_inside_ends_the_range():
    # the 3rd point has a good mean from its surviving seeds, but a seed diverged there
    means = [0.895, 0.900, 0.899, 0.898, 0.80]
    t = tolerance_range(DECADES, means, [True, True, False, True, True], 0.01, log=True)
    assert (t.best, t.low, t.high) == (1, 0, 1) and t.width == pytest.approx(0.5) and t.open_low
    assert tolerance_range(DECADES, means, CLEAN, 0.01, log=True).high == 3  # clean: the range goes on


def test_a_diverged_point_at_the_edge_closes_the_range():
    # every seed diverged at the largest rate: no mean there, and the range is not open
    t = tolerance_range(DECADES, [0.85, 0.889, 0.900, 0.899, None], [True, True, True, True, False], 0.01, log=True)
    assert (t.best, t.low, t.high, t.open_high) == (2, 2, 3, False) and t.width == pytest.approx(0.5)
    assert tolerance_range(DECADES, [None] * 5, [False] * 5, 0.01, log=True) is None


def test_linear_axis_width_is_in_x_units():
    t = tolerance_range([0.5, 0.7, 0.9], [0.88, 0.885, 0.89], [True] * 3, 0.01, log=False)
    assert t.width == pytest.approx(0.4)


# --- curves in the sweep report ------------------------------------------------------------------

def write_job(sweep: Path, number: int, overrides: dict, results: dict) -> None:
    job = sweep / (f"{number}_" + ",".join(f"{k}={v}" for k, v in overrides.items()))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (job / "results.json").write_text(json.dumps(results))


def run(acc: float, seed: int, config: dict, status: str = "ok") -> dict:
    finished = status == "ok"
    return {"status": status, "test_acc": acc if finished else None, "best_val_acc": acc + 0.01 if finished else None,
            "best_val_epoch": 1, "epochs": 2, "val_scores": [acc - 0.02, acc + 0.01] if finished else [],
            "train_losses": [1.0, 0.5] if finished else [1.0, None], "seconds": 5.0,
            "config": {"seed": seed, **config},
            "provenance": {"torch": "2.14.1", "device_type": "cpu",
                           "config_hash": json.dumps(config, sort_keys=True)}}


# Accuracy per optimizer at decades -1..1 around its tutorial rate, 3 seeds (offsets per seed).
LR = {"sgd": 0.1, "adam": 1e-3}
ACC = {"sgd": [0.80, 0.86, 0.880, 0.875, None], "adam": [0.85, 0.885, 0.890, 0.870, 0.60]}
DECADE_STEPS = [-1, -0.5, 0, 0.5, 1]
SEED_OFFSET = {1: -0.002, 2: 0.0, 3: 0.002}


@pytest.fixture
def lr_sweep(tmp_path) -> Path:
    """optim x lr_decade x seed, the way experiment=lr_sensitivity runs it: SGD diverges at
    the largest rate on every seed; Adam has one diverged seed at decade +0.5."""
    sweep, n = tmp_path / "sweep", 0
    for optim, accs in ACC.items():
        for decade, acc in zip(DECADE_STEPS, accs, strict=True):
            for seed, offset in SEED_OFFSET.items():
                config = {"optim_name": optim, "lr_decade": decade, "curve_x": {"lr_decade": "optim.lr"},
                          "optim": {"lr": float(f"{LR[optim] * 10 ** decade:.4g}")}}
                diverged = acc is None or (optim == "adam" and decade == 0.5 and seed == 3)
                result = run(None if diverged else acc + offset, seed, config, "diverged" if diverged else "ok")
                write_job(sweep, n, {"optim": optim, "lr_decade": decade, "seed": seed}, result)
                n += 1
    return sweep


def test_curve_x_is_the_resolved_learning_rate(lr_sweep):
    write_report(lr_sweep)
    rows = {r["line"]: r for r in read_csv(lr_sweep / "summary_curves.csv")}
    assert set(rows) == {"sgd", "adam"}
    assert all(r["key"] == "lr_decade" and r["x"] == "optim.lr" and r["width_unit"] == "decades" for r in rows.values())
    assert float(rows["sgd"]["best_x"]) == 0.1 and float(rows["adam"]["best_x"]) == 1e-3
    # SGD: 0.880 best at 0.1; 0.875 at 0.316 within 1 pt, 0.86 at 0.0316 not; 1.0 diverged
    assert (float(rows["sgd"]["within_from"]), float(rows["sgd"]["within_to"])) == (0.1, 0.3162)
    assert float(rows["sgd"]["width"]) == pytest.approx(math.log10(0.3162 / 0.1), abs=1e-4)
    assert rows["sgd"]["not_ok_at"] == "1" and rows["sgd"]["reaches_grid_edge"] == "False"
    # Adam: best 0.890 at 1e-3, 0.885 at 3.16e-4 within; 3.16e-3 has a diverged seed: not within
    assert (float(rows["adam"]["within_from"]), float(rows["adam"]["within_to"])) == (0.0003162, 0.001)
    assert rows["adam"]["not_ok_at"] == "0.00316"


def test_band_and_best_are_the_seeds_interval(lr_sweep):
    write_report(lr_sweep)
    adam = next(r for r in read_csv(lr_sweep / "summary_curves.csv") if r["line"] == "adam")
    s = summarize([0.890 + o for o in SEED_OFFSET.values()])
    assert float(adam["best_mean"]) == pytest.approx(s.mean)
    assert (float(adam["best_ci_low"]), float(adam["best_ci_high"])) == (pytest.approx(s.ci_low), pytest.approx(s.ci_high))


def test_curve_sentences_and_diverged_jobs_in_the_markdown(lr_sweep):
    write_report(lr_sweep)
    md = (lr_sweep / "summary.md").read_text()
    assert "## Test accuracy against optim.lr (swept as lr_decade)" in md
    assert ("- sgd stays within 1 pt of its best (88.00 % [87.50, 88.50] at lr = 0.1) over 0.5 decades, "
            "0.1 to 0.316; not ok at 1 (3 of 3 diverged).") in md
    assert "not ok at 0.00316 (1 of 3 diverged)" in md
    groups = read_csv(lr_sweep / "summary_groups.csv")
    # the diverged point is listed, with no mean, not dropped and not a 0
    sgd_top = next(g for g in groups if g["optim"] == "sgd" and g["lr_decade"] == "1")
    assert (sgd_top["seeds"], sgd_top["not_ok"], sgd_top["test_acc_mean"]) == ("0", "diverged", "")
    # pairs along the curve are the curve's job: only optimizer pairs at the same decade
    pairs = read_csv(lr_sweep / "summary_pairs.csv")
    assert {p["factor"] for p in pairs} == {"optim"} and len(pairs) == 5


def test_tolerance_is_configurable(lr_sweep):
    from src.report import main

    assert main([str(lr_sweep), "--tolerance-pt", "2"]) == 0
    sgd = next(r for r in read_csv(lr_sweep / "summary_curves.csv") if r["line"] == "sgd")
    assert sgd["tolerance_pt"] == "2.0" and float(sgd["within_from"]) == 0.03162  # 0.86 is 2 pt below: in
    # the end-of-sweep callback takes it from hydra.callbacks.sweep_report.tolerance_pt
    from omegaconf import OmegaConf

    from src.hydra_callbacks import SweepReport

    SweepReport(exit_on_failure=False, tolerance_pt=0.5).on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(lr_sweep)}}}))
    assert read_csv(lr_sweep / "summary_curves.csv")[0]["tolerance_pt"] == "0.5"


def test_curve_figure_reaches_tensorboard(lr_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_report(lr_sweep)
    acc = EventAccumulator(str(lr_sweep / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert "report/curve_optim.lr" in acc.Tags()["images"]
    assert "report/heatmap" not in acc.Tags()["images"]  # the curve shows that axis


def _simple_sweep(tmp_path: Path, key: str, values: list, optims=("sgd",)) -> Path:
    sweep, n = tmp_path / "sweep", 0
    for optim in optims:
        for i, v in enumerate(values):
            for seed in (1, 2):
                write_job(sweep, n, {"optim": optim, key: v, "seed": seed},
                          run(0.85 + 0.01 * i + 0.001 * seed, seed, {"optim_name": optim, key: v}))
                n += 1
    return sweep


def _optuna_search(tmp_path: Path, sweeper: str) -> Path:
    """hparams_search=sgd_lr's shape: one trial per sampled lr, all on seed 42; the best at the
    highest lr tried."""
    sweep = tmp_path / "sweep"
    for n, (lr, acc) in enumerate(zip([0.0012, 0.0047, 0.018, 0.061, 0.23], [0.80, 0.84, 0.86, 0.875, 0.88],
                                      strict=True)):
        write_job(sweep, n, {"optim.lr": lr}, run(acc, 42, {"optim_name": "sgd", "optim": {"lr": lr}}))
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": sweeper, "n_trials": 5, "params": {"optim.lr": "tag(log, interval(1.0e-3, 1.0))"}},
        "overrides": {"task": ["hparams_search=sgd_lr"]}}}))
    return sweep


def test_an_optuna_search_is_reported_as_trials_not_a_grid(tmp_path):
    sweep = _optuna_search(tmp_path / "optuna", "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    write_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert ("stays within 1 pt of its best (88.00 % (1 seed: no interval) at lr = 0.23) over at least 0.58 decades, "
            "0.061 to 0.23 (the range reaches the highest lr tried).") in md
    assert "grid" not in md
    # the same points from a grid sweep keep the grid's words
    grid = _optuna_search(tmp_path / "grid", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    write_report(grid)
    assert "0.061 to 0.23 (the range reaches the grid's edge)." in (grid / "summary.md").read_text()


def test_curve_detection_needs_three_numeric_values(tmp_path):
    write_report(_simple_sweep(tmp_path / "a", "optim.lr", [0.01, 0.1]))
    assert read_csv(tmp_path / "a" / "sweep" / "summary_curves.csv") == []
    write_report(_simple_sweep(tmp_path / "b", "init", ["xavier", "kaiming", "normal"]))
    assert read_csv(tmp_path / "b" / "sweep" / "summary_curves.csv") == []
    write_report(_simple_sweep(tmp_path / "c", "optim.lr", [0.001, 0.01, 0.1], optims=("sgd", "adam")))
    rows = read_csv(tmp_path / "c" / "sweep" / "summary_curves.csv")
    assert [(r["line"], r["x"], r["width_unit"]) for r in rows] == [("sgd", "optim.lr", "decades"),
                                                                     ("adam", "optim.lr", "decades")]


def test_a_curve_within_one_decade_has_a_linear_axis(tmp_path):
    write_report(_simple_sweep(tmp_path, "optim.momentum", [0.5, 0.7, 0.9]))
    row = read_csv(tmp_path / "sweep" / "summary_curves.csv")[0]
    assert row["width_unit"] == "optim.momentum" and row["line"] == "sgd"  # one line, named by its optimizer
    assert float(row["best_x"]) == 0.9 and float(row["width"]) == pytest.approx(0.2)  # 0.7 is 1 pt below: in


# --- the resolver and the presets ----------------------------------------------------------------

def test_lr_around_is_the_tutorial_rate_times_ten_to_the_decade():
    from src.resolvers import lr_around

    assert lr_around("sgd", 0) == 0.1 and lr_around("adam", -1) == 1e-4
    assert lr_around("sgd_mom", 1.5) == 3.162 and lr_around("adam", "-0.5") == 0.0003162
    with pytest.raises(ValueError, match="known: sgd, sgd_mom, adam"):
        lr_around("rmsprop", 0)


@pytest.mark.parametrize("optim,decade,lr", [("sgd", -1.5, 0.003162), ("sgd_mom", 0, 0.1), ("adam", 1, 0.01)])
def test_lr_sensitivity_preset_puts_each_optimizer_on_its_own_grid(tmp_path, optim, decade, lr):
    from conftest import compose

    cfg = compose(["experiment=lr_sensitivity", f"optim={optim}", f"lr_decade={decade}"], tmp_path)
    assert cfg.optim.lr == lr and cfg.curve_x.lr_decade == "optim.lr"
    assert cfg.trainer.max_epochs == 5 and cfg.init._target_ == "src.init.Kaiming"


def test_lr_presets_sweep_7_points_over_3_decades_with_3_seeds():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for preset in ("lr_sensitivity", "lr_sensitivity_quick"):
            cfg = compose("train", [f"experiment={preset}"], return_hydra_config=True)
            params = cfg.hydra.sweeper.params
            decades = [float(d) for d in params.lr_decade.split(",")]
            assert params.optim == "sgd,sgd_mom,adam" and len(decades) == 7
            assert max(decades) - min(decades) == 3 and params.seed == "42,43,44"
            assert "diverged" not in cfg.hydra.callbacks.sweep_report.fail_on
        assert cfg.trainer.max_epochs == 2 and cfg.data.train_subset == 20000
