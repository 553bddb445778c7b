"""The sweep report's numbers against the jobs' results.json, on a hand-made sweep dir.

Only the report's command (`python -m src.report <dir>`, called in-process as `main([dir])`) and
its output files are used, so these tests keep their meaning when the report is rewritten. The
sweep is built so that a wrong report shows: the best `ok` job is neither first nor last, a job
that diverged or failed has a higher accuracy on record than every `ok` job would suggest, and
the cells of the optim x init grid hold two seeds each, with different means.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

OPTIMS, INITS, SEEDS = ("sgd", "adam"), ("xavier", "kaiming"), (1, 2)
# test accuracy of each ok job: (optim, init, seed) -> value; the best is adam/xavier/seed 2
TEST_ACC = {
    ("sgd", "xavier", 1): 0.812345, ("sgd", "xavier", 2): 0.823456,
    ("sgd", "kaiming", 1): 0.845678, ("sgd", "kaiming", 2): 0.791234,
    ("adam", "xavier", 1): 0.867891, ("adam", "xavier", 2): 0.889012,
    ("adam", "kaiming", 1): 0.856789, ("adam", "kaiming", 2): 0.758899,
}


def _write_job(sweep: Path, number: int, overrides: dict, results: dict | None) -> str:
    name = f"{number}_" + ",".join(f"{k}={v}" for k, v in overrides.items())
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {k}={v}\n" for k, v in overrides.items()))
    (job / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n"
        f"      optim: {overrides['optim']}\n      init: {overrides['init']}\n")
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))
    return name


def _ok_results(test_acc: float, optim: str, init: str, seed: int, number: int) -> dict:
    # val curves whose best epoch is not the last (and differs between jobs)
    best_epoch = number % 3
    vals = [0.70 + 0.01 * number, 0.72 + 0.01 * number, 0.71 + 0.01 * number]
    vals[best_epoch] = 0.80 + 0.001 * number
    return {"status": "ok", "test_acc": test_acc, "best_val_acc": vals[best_epoch], "best_val_epoch": best_epoch,
            "epochs": 3, "val_scores": vals, "train_scores": [0.6, 0.7, 0.75], "train_losses": [1.0, 0.8, 0.7],
            "seconds": 12.5 + number, "config": {"optim_name": optim, "init_name": init, "seed": seed,
                                                 "optim": {"lr": 0.1}, "model": {"act_fn": "relu"},
                                                 "trainer": {"max_epochs": 3}, "data": {"batch_size": 256}}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict[str, dict | None]]:
    """8 ok jobs (optim x init x seed), then a diverged, a failed and an incomplete job."""
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    jobs: dict[str, dict | None] = {}
    number = 0
    for optim in OPTIMS:
        for init in INITS:
            for seed in SEEDS:
                r = _ok_results(TEST_ACC[(optim, init, seed)], optim, init, seed, number)
                jobs[_write_job(sweep, number, {"optim": optim, "init": init, "seed": seed}, r)] = r
                number += 1
    diverged = {"status": "diverged", "test_acc": None, "best_val_acc": 0.95, "best_val_epoch": 0, "epochs": 1,
                "val_scores": [0.95], "train_losses": [2.3, None], "seconds": 3.0, "diverged_step": 12,
                "error": "loss became nan at step 12 (epoch 1): optim.lr=50 is probably too high",
                "config": {"optim_name": "sgd", "init_name": "xavier", "seed": 3}}
    failed = {"status": "failed", "error": "trainer.accelerator=gpu but CUDA is not available"}
    for overrides, r in (({"optim": "sgd", "init": "xavier", "seed": 3}, diverged),
                         ({"optim": "adam", "init": "kaiming", "seed": 3}, failed),
                         ({"optim": "adam", "init": "xavier", "seed": 3}, None)):
        jobs[_write_job(sweep, number, overrides, r)] = r
        number += 1
    return sweep, jobs


@pytest.fixture(scope="module")
def report(sweep):
    """Run the report command once; keep what it prints and the matplotlib figures it draws."""
    import contextlib
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from src.report import main

    figures: list = []
    original = FigureCanvasAgg.draw

    def keep(canvas, *args, **kwargs):  # every render, by savefig or canvas.draw, goes through here
        figures.append(canvas.figure)
        return original(canvas, *args, **kwargs)

    sweep_dir, jobs = sweep
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(FigureCanvasAgg, "draw", keep)
        assert main([str(sweep_dir)]) == 0
    return sweep_dir, jobs, figures, printed.getvalue()


def _csv_rows(sweep_dir: Path) -> dict[str, dict]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return {row["job"]: row for row in csv.DictReader(f)}


def _number(cell: str):
    return None if cell == "" else float(cell)


def test_csv_has_every_job_with_its_results_json_numbers(report):
    sweep_dir, jobs, _, _ = report
    rows = _csv_rows(sweep_dir)
    assert set(rows) == set(jobs)  # every job dir, the incomplete one included
    for name, r in jobs.items():
        row = rows[name]
        if r is None:
            assert row["status"] == "incomplete" and row["test_acc"] == ""
            continue
        assert row["status"] == r["status"], name
        for key in ("test_acc", "best_val_acc"):
            assert _number(row[key]) == r.get(key), (name, key)  # the exact float, not rounded
        for key in ("best_val_epoch", "epochs"):
            expected = r.get(key)
            assert (None if row[key] == "" else int(row[key])) == expected, (name, key)
        if r.get("error"):
            assert r["error"] in row["error"]


def test_csv_swept_columns_are_each_jobs_overrides(report):
    sweep_dir, jobs, _, _ = report
    for name, row in _csv_rows(sweep_dir).items():
        overrides = dict(part.split("=") for part in name.split("_", 1)[1].split(","))
        for key in ("optim", "init", "seed"):
            assert row[key] == overrides[key], (name, key)


def _best_ok(jobs: dict) -> tuple[str, float]:
    ok = {n: r["test_acc"] for n, r in jobs.items() if r and r["status"] == "ok"}
    name = max(ok, key=ok.get)
    return name, ok[name]


def test_the_best_line_names_the_best_ok_job(report):
    sweep_dir, jobs, _, printed = report
    name, acc = _best_ok(jobs)
    names = list(jobs)
    assert names.index(name) not in (0, len(names) - 1)  # the set-up: best is neither end
    md = (sweep_dir / "summary.md").read_text()
    best_lines = [line for line in md.splitlines() if re.search(r"\bbest\b", line, re.I) and "_" in line]
    assert len(best_lines) == 1, best_lines
    line = best_lines[0]
    assert name in line and f"{100 * acc:.2f}" in line
    others = [n for n in jobs if n != name]
    assert not any(f"`{n}`" in line or f"({n})" in line for n in others)
    assert line in printed  # the command prints the report it wrote


def _section(md: str, title: str) -> list[str]:
    """The lines of the markdown section headed `title` (any level)."""
    lines, inside = [], False
    for line in md.splitlines():
        if line.startswith("#"):
            inside = line.lstrip("#").strip().lower() == title.lower()
            continue
        if inside:
            lines.append(line)
    return lines


def test_markdown_job_rows_show_each_jobs_percentages(report):
    sweep_dir, jobs, _, _ = report
    md = (sweep_dir / "summary.md").read_text()
    md_rows = [line for line in (_section(md, "jobs") or md.splitlines()) if line.startswith("| ")]
    for name, r in jobs.items():
        number = name.split("_", 1)[0]
        row = next(line for line in md_rows if line.split("|")[1].strip() in (number, name))
        if r and r.get("test_acc") is not None:
            assert f"{100 * r['test_acc']:.2f}" in row, name
            assert f"{100 * r['best_val_acc']:.2f}" in row, name
        assert (r or {}).get("status", "incomplete") in row, name


def _cells() -> dict[tuple[str, str], list[float]]:
    """optim x init -> the ok jobs' test accuracies (the seeds of that cell)."""
    return {(o, i): [TEST_ACC[(o, i, s)] for s in SEEDS] for o in OPTIMS for i in INITS}


def _t_half_width(values: list[float]) -> float:
    """95 % half-width of the mean, Student t, computed here with scipy."""
    from scipy import stats

    n = len(values)
    return stats.t.ppf(0.975, n - 1) * stats.tstd(values) / n**0.5


def test_group_rows_are_the_mean_over_the_ok_seeds(report):
    """summary_groups.csv, when the report writes one: per optim x init, the mean, min and max of
    the ok jobs' numbers (the diverged / failed / incomplete job of a cell left out) and its 95 %
    interval."""
    sweep_dir, jobs, _, _ = report
    path = sweep_dir / "summary_groups.csv"
    if not path.exists():
        pytest.skip("this report writes no per-group table")
    with open(path, newline="") as f:
        rows = {(r["optim"], r["init"]): r for r in csv.DictReader(f)}
    for (optim, init), values in _cells().items():
        row = rows[(optim, init)]
        mean = sum(values) / len(values)
        assert float(row["test_acc_mean"]) == pytest.approx(mean, abs=1e-12)
        assert (float(row["test_acc_min"]), float(row["test_acc_max"])) == (min(values), max(values))
        half = _t_half_width(values)
        # cut to [0, 1]: the mean of accuracies lies there (few seeds give a wide interval)
        assert float(row["test_acc_ci_low"]) == pytest.approx(max(mean - half, 0.0), abs=1e-9)
        assert float(row["test_acc_ci_high"]) == pytest.approx(min(mean + half, 1.0), abs=1e-9)
        ok_val = [r["best_val_acc"] for n, r in jobs.items() if r and r["status"] == "ok"
                  and f"optim={optim},init={init}," in n]
        assert float(row["best_val_acc_mean"]) == pytest.approx(sum(ok_val) / len(ok_val), abs=1e-12)
        assert int(row["seeds"]) == len(values)


def test_heatmap_cells_are_the_mean_over_seeds(report):
    """The optim x init grid shows, in each cell, the mean of its ok jobs (and not one seed)."""
    _, _, figures, _ = report
    heatmaps = [ax for fig in figures for ax in fig.axes if ax.images and ax.texts]
    assert heatmaps, "the report drew no heatmap"
    shown = []
    for ax in heatmaps:
        for text in ax.texts:
            m = re.match(r"\s*(\d+\.\d+)", text.get_text())
            if m:
                shown.append(float(m.group(1)))
    for (optim, init), values in _cells().items():
        mean = sum(values) / len(values)
        assert round(100 * mean, 2) in shown, (optim, init, 100 * mean, shown)
    singles = {round(100 * v, 2) for v in TEST_ACC.values()}
    assert not singles & set(shown), singles & set(shown)
