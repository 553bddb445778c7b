"""The sweep report's statistics (issue 12): groups of seeds, intervals, verdicts, provenance.

Every sweep here is written by hand (results.json + .hydra/overrides.yaml): no training. The
expected numbers are computed in the test from closed forms (for 2 degrees of freedom the t
distribution has one: quantile (2q-1)/sqrt(2q(1-q)), two-sided p = 1 - |t|/sqrt(t^2+2)).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

import src.resolvers  # noqa: F401  (presets use ${lr_around:...})
from src.report import find_jobs, load_job, write_report
from src.stats import compare, holm, prediction_interval, summarize

T_975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027


def p_two_sided_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(t * t + 2)


# --- a hand-made sweep -------------------------------------------------------------------------

PROVENANCE = {"python": "3.11.7", "torch": "2.14.1", "lightning": "2.6.6", "hydra": "1.3.8",
              "device_type": "cpu", "device": "AMD EPYC", "cpu_count": 2, "load_avg_1min": 1.0,
              "git_commit": "0123456789abcdef", "git_dirty": False}


def write_job(sweep: Path, number: int, overrides: dict, results: dict | None) -> Path:
    job = sweep / (f"{number}_" + ",".join(f"{k}={v}" for k, v in overrides.items()))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))
    return job


def ok_run(test_acc: float, best_val_acc: float, seed: int, group: str, number: int, **extra) -> dict:
    """A finished 3-epoch run whose best val epoch is 1; jobs finish 100 s apart, 10 s each."""
    provenance = {**PROVENANCE, "config_hash": f"hash-{group}",
                  "finished_at": f"2026-01-01T00:{number:02d}:00.000+00:00", **extra.pop("provenance", {})}
    return {"status": "ok", "test_acc": test_acc, "best_val_acc": best_val_acc, "best_val_epoch": 1,
            "epochs": 3, "val_scores": [best_val_acc - 0.03, best_val_acc, best_val_acc - 0.002],
            "train_losses": [1.0, 0.6, 0.5], "seconds": 10.0 + number,
            "config": {"seed": seed, "model": {"num_classes": 10}}, "provenance": provenance, **extra}


# Three optimizers x seeds 1..3: test and val accuracies differ, so a swapped column shows.
TEST = {"sgd": [0.8900, 0.8920, 0.8880], "sgd_mom": [0.8850, 0.8890, 0.8860], "adam": [0.8950, 0.8990, 0.8970]}
VAL = {"sgd": [0.9000, 0.9030, 0.9010], "sgd_mom": [0.8960, 0.8990, 0.8950], "adam": [0.9050, 0.9060, 0.9090]}


@pytest.fixture
def optim_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    n = 0
    for optim in TEST:
        for seed, (t, v) in enumerate(zip(TEST[optim], VAL[optim], strict=True), start=1):
            write_job(sweep, n, {"optim": optim, "seed": seed}, ok_run(t, v, seed, optim, n))
            n += 1
    # A fourth sgd seed that diverged: counted, never averaged.
    write_job(sweep, n, {"optim": "sgd", "seed": 4},
              {"status": "diverged", "error": "loss became nan at step 5", "test_acc": None,
               "best_val_acc": None, "val_scores": [], "train_losses": [2.3, None],
               "config": {"seed": 4}, "provenance": {**PROVENANCE, "config_hash": "hash-sgd"}})
    return sweep


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- statistics on fixed numbers ---------------------------------------------------------------

def test_summary_matches_the_hand_computed_interval():
    s = summarize([0.8900, 0.8920, 0.8880])
    sd = math.sqrt((0.0 ** 2 + 0.002 ** 2 + 0.002 ** 2) / 2)  # 0.002
    half = T_975_DF2 * sd / math.sqrt(3)
    assert (s.n, s.mean, s.min, s.max) == (3, pytest.approx(0.89), 0.888, 0.892)
    assert s.sd == pytest.approx(sd) and s.ci_low == pytest.approx(0.89 - half)
    assert s.ci_high == pytest.approx(0.89 + half) and s.half_width == pytest.approx(half)
    one = summarize([0.9])
    assert (one.n, one.mean, one.sd, one.ci_low, one.ci_high) == (1, 0.9, None, None, None)
    assert summarize([]).n == 0 and summarize([None, float("nan")]).n == 0
    same = summarize([0.5, 0.5, 0.5])
    assert same.ci_low == same.ci_high == 0.5
    lo, hi = prediction_interval(s)  # one more seed: wider by sqrt(1 + n) than the mean's
    assert hi - 0.89 == pytest.approx(half * math.sqrt(1 + 3))


def test_paired_t_when_the_seeds_match():
    a, b = {1: 0.8900, 2: 0.8920, 3: 0.8880}, {1: 0.8950, 2: 0.8990, 3: 0.8970}
    d = compare(a, b)  # differences 0.005, 0.007, 0.009: mean 0.007, sd 0.002
    se = 0.002 / math.sqrt(3)
    assert d.test == "paired t" and (d.n_a, d.n_b) == (3, 3)
    assert d.diff == pytest.approx(0.007)
    assert d.p == pytest.approx(p_two_sided_df2(0.007 / se), rel=1e-6)
    assert (d.ci_low, d.ci_high) == (pytest.approx(0.007 - T_975_DF2 * se), pytest.approx(0.007 + T_975_DF2 * se))
    # Swapping the sides flips the sign, not the p-value.
    r = compare(b, a)
    assert r.diff == pytest.approx(-0.007) and r.p == pytest.approx(d.p)


def test_welch_when_the_seeds_differ():
    from scipy import stats

    d = compare({1: 1.0, 2: 2.0, 3: 3.0}, {4: 2.0, 5: 4.0, 6: 6.0})  # variances 1 and 4
    t = 2 / math.sqrt(1 / 3 + 4 / 3)
    df = (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)  # 2.94, not the pooled 4
    assert d.test == "Welch t" and d.diff == pytest.approx(2.0)
    assert d.p == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
    half = stats.t.ppf(0.975, df) * math.sqrt(5 / 3)
    assert d.ci_low == pytest.approx(2 - half) and d.ci_high == pytest.approx(2 + half)


def test_untestable_pairs_say_why():
    assert compare({1: 0.9}, {1: 0.8}).p is None
    assert "2 or more seeds" in compare({1: 0.9}, {1: 0.8, 2: 0.7}).test
    same_shift = compare({1: 0.8, 2: 0.9}, {1: 0.81, 2: 0.91})
    assert same_shift.p is None and same_shift.ci_low == pytest.approx(0.01)


def test_holm_on_a_fixed_list():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


# --- groups and the report ---------------------------------------------------------------------

def test_groups_are_jobs_that_differ_only_in_seed(optim_sweep):
    write_report(optim_sweep)
    groups = read_csv(optim_sweep / "summary_groups.csv")
    assert [(g["optim"], g["seeds"], g["jobs"], g["not_ok"]) for g in groups] == [
        ("sgd", "3", "4", "diverged"), ("sgd_mom", "3", "3", ""), ("adam", "3", "3", "")]
    md = (optim_sweep / "summary.md").read_text()
    assert "| 1 | sgd | 3 of 4 (diverged) | 89.00 |" in md
    assert "1 diverged" in md.splitlines()[2]


def test_report_numbers_are_the_jobs_numbers(optim_sweep):
    """Every group number is recomputed here from the job dirs' results.json files: a wrong
    mean, a swapped column or a diverged run averaged in fails."""
    write_report(optim_sweep)
    jobs = {r["job"]: r for r in read_csv(optim_sweep / "summary.csv")}
    for row in read_csv(optim_sweep / "summary_groups.csv"):
        members = [name for name, r in jobs.items() if r["group"] == row["group"]]
        results = [json.loads((optim_sweep / name / "results.json").read_text()) for name in members]
        done = [r for r in results if r["status"] == "ok"]
        for metric in ("test_acc", "best_val_acc", "seconds"):
            values = [r[metric] for r in done]
            s = summarize(values)
            assert float(row[f"{metric}_mean"]) == pytest.approx(sum(values) / len(values)), metric
            assert float(row[f"{metric}_min"]) == min(values) and float(row[f"{metric}_max"]) == max(values)
            assert float(row[f"{metric}_ci_low"]) == pytest.approx(s.ci_low)
    for name, r in jobs.items():
        results = json.loads((optim_sweep / name / "results.json").read_text())
        for metric in ("test_acc", "best_val_acc"):
            assert (float(r[metric]) if r[metric] else None) == results[metric]
    md = (optim_sweep / "summary.md").read_text()
    best = max((r for r in jobs.values() if r["test_acc"]), key=lambda r: float(r["test_acc"]))
    assert f"Best single job by test accuracy: 89.90 % (`{best['job']}`)" in md
    assert best["optim"] == "adam" and best["seed"] == "2"


def test_verdicts_are_paired_and_holm_corrected(optim_sweep):
    write_report(optim_sweep)
    pairs = {(p["a"], p["b"]): p for p in read_csv(optim_sweep / "summary_pairs.csv")}
    assert set(pairs) == {("sgd", "sgd_mom"), ("sgd", "adam"), ("sgd_mom", "adam")}
    se = 0.002 / math.sqrt(3)
    p = {k: float(v["p"]) for k, v in pairs.items()}
    assert p[("sgd", "adam")] == pytest.approx(p_two_sided_df2(0.007 / se), rel=1e-6)
    smallest = min(p, key=p.get)
    assert float(pairs[smallest]["p_holm"]) == pytest.approx(min(1, 3 * p[smallest]))
    assert all(v["test"] == "paired t" and v["comparisons"] == "3" for v in pairs.values())
    adam = pairs[("sgd", "adam")]
    assert float(adam["diff_pt"]) == pytest.approx(0.7)
    md = (optim_sweep / "summary.md").read_text()
    half = 100 * T_975_DF2 * se
    assert (f"optim: adam − sgd: +0.70 pt [{0.7 - half:+.2f}, {0.7 + half:+.2f}], 3 seeds each, "
            f"paired by seed, p = {p[('sgd', 'adam')]:.3g}, Holm-adjusted") in md
    for v in pairs.values():
        assert v["sentence"].endswith("higher at 95 %" if float(v["p_holm"]) < 0.05 else "not distinguishable at 95 %")
    assert "3 pairs, 3 tested" in md


def test_one_seed_gives_no_interval_and_no_test(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep, 0, {"optim": "sgd"}, ok_run(0.89, 0.90, 42, "sgd", 0))
    write_job(sweep, 1, {"optim": "adam"}, ok_run(0.88, 0.91, 42, "adam", 1))
    write_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert md.count("1 seed: no interval") == 2
    assert "optim: adam − sgd: -1.00 pt, 1 seed each: not tested: needs 2 or more seeds" in md
    row = read_csv(sweep / "summary_groups.csv")[0]
    assert row["test_acc_ci_low"] == "" and row["test_acc_sd"] == ""


def test_a_sweep_that_never_validated_has_no_best_epoch(tmp_path):
    """`trainer.limit_val_batches=0`: every results.json says best_val_epoch -1. The Groups table
    read `-1.0 [-1.0, -1.0]` and summary_groups.csv -1.0; the job rows already said nothing."""
    sweep = tmp_path / "sweep"
    for n, (seed, acc) in enumerate([(1, 0.81), (2, 0.82)]):
        write_job(sweep, n, {"seed": seed, "trainer.limit_val_batches": 0},
                  {**ok_run(acc, 0.9, seed, "noval", n), "best_val_acc": None, "best_val_epoch": -1,
                   "val_scores": []})
    write_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "| 1 | 2 | 81.50 | [75.15, 87.85] | 0.71 | 81.00 – 82.00 | – | – | 10 [4, 17] |  |" in md
    assert "-1.0" not in md
    row = read_csv(sweep / "summary_groups.csv")[0]
    assert [row[f"best_val_epoch_{s}"] for s in ("mean", "sd", "ci_low", "ci_high", "min", "max")] == [""] * 6
    assert [r["best_val_epoch"] for r in read_csv(sweep / "summary.csv")] == ["", ""]


def test_identical_optimizers_are_not_told_to_sweep_more_seeds(tmp_path):
    """`optim=sgd,torch_sgd seed=1,2`: the same numbers on every seed. The summary said `1 with fewer
    than 2 finished seeds on a side ... (sweep seed=1,2,3)` to a sweep with 2 seeds on each side."""
    sweep = tmp_path / "sweep"
    for n, (optim, seed) in enumerate([("sgd", 1), ("sgd", 2), ("torch_sgd", 1), ("torch_sgd", 2)]):
        write_job(sweep, n, {"optim": optim, "seed": seed}, ok_run(0.80 + 0.01 * seed, 0.9, seed, optim, n))
    write_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert ("1 pair, none tested: 1 with identical difference on every seed.\n\n"
            "- optim: torch_sgd − sgd: +0.00 pt [+0.00, +0.00], 2 seeds each: not tested: identical "
            "difference on every seed\n") in md
    assert "seed=1,2,3" not in md


def test_different_torch_versions_are_never_pooled(tmp_path):
    sweep = tmp_path / "sweep"
    for n, (seed, torch_version) in enumerate([(1, "2.14.1"), (2, "2.14.1"), (3, "2.13.0"), (4, "2.13.0")]):
        write_job(sweep, n, {"optim": "sgd", "seed": seed},
                  ok_run(0.89 + n / 1000, 0.9, seed, "sgd", n, provenance={"torch": torch_version}))
    write_report(sweep)
    groups = read_csv(sweep / "summary_groups.csv")
    assert [(g["torch"], g["seeds"]) for g in groups] == [("2.14.1", "2"), ("2.13.0", "2")]
    assert groups[0]["notes"] == "not pooled: torch 2.14.1 (vs 2.13.0)"
    assert float(groups[0]["test_acc_mean"]) == pytest.approx(0.8905)
    assert read_csv(sweep / "summary_pairs.csv") == []  # same factors: nothing to compare
    assert "not pooled: torch 2.13.0 (vs 2.14.1)" in (sweep / "summary.md").read_text()


def test_device_types_are_never_pooled_nor_compared(tmp_path):
    sweep = tmp_path / "sweep"
    runs = [("sgd", 1, "cpu"), ("sgd", 2, "cpu"), ("sgd", 3, "cuda"), ("adam", 1, "cuda"), ("adam", 2, "cuda")]
    for n, (optim, seed, device) in enumerate(runs):
        write_job(sweep, n, {"optim": optim, "seed": seed},
                  ok_run(0.89 + n / 1000, 0.9, seed, optim, n, provenance={"device_type": device}))
    write_report(sweep)
    groups = read_csv(sweep / "summary_groups.csv")
    assert [(g["optim"], g["seeds"]) for g in groups] == [("sgd", "2"), ("sgd", "1"), ("adam", "2")]
    assert "device cpu (vs cuda)" in groups[0]["notes"]
    pairs = read_csv(sweep / "summary_pairs.csv")
    assert [(p["a"], p["b"]) for p in pairs] == [("sgd", "adam")]  # the cuda sgd group only
    assert pairs[0]["n_a"] == "1"


def test_did_not_learn_and_warnings_are_shown_per_run(tmp_path):
    sweep = tmp_path / "sweep"
    chance = ok_run(0.10, 0.105, 1, "const", 0)
    chance["val_scores"] = [0.1, 0.105, 0.1]
    write_job(sweep, 0, {"init": "const"}, chance)
    write_job(sweep, 1, {"init": "kaiming"},
              ok_run(0.88, 0.9, 1, "kaiming", 1, warnings=["layer 3: gradient variance below 1e-8"]))
    write_report(sweep)
    rows = read_csv(sweep / "summary.csv")
    assert rows[0]["notes"].startswith("did not learn (final val acc 10.0 %, chance 10 %)")
    assert rows[1]["notes"] == "layer 3: gradient variance below 1e-8"
    groups = read_csv(sweep / "summary_groups.csv")
    assert groups[0]["notes"] == "did not learn" and groups[1]["notes"] == ""
    md = (sweep / "summary.md").read_text()
    assert "did not learn" in md and "gradient variance below 1e-8" in md


def test_time_column_says_what_it_includes_and_whether_jobs_overlapped(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep, 0, {"optim": "sgd"}, ok_run(0.89, 0.9, 1, "sgd", 0))
    write_job(sweep, 1, {"optim": "adam"}, ok_run(0.89, 0.9, 1, "adam", 1))
    write_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "`seconds` is the wall time of `train(cfg)`" in md and "Jobs ran one after another." in md
    overlapping = ok_run(0.89, 0.9, 1, "sgd", 0, provenance={"load_avg_1min": 3.4})
    overlapping["provenance"]["finished_at"] = "2026-01-01T00:01:05.000+00:00"  # ran 55-65 s: inside job 1
    (next(sweep.glob("0_*")) / "results.json").write_text(json.dumps(overlapping))
    write_report(sweep)
    md = (sweep / "summary.md").read_text()
    assert "Up to 2 jobs ran at the same time" in md
    assert "Load average up to 3.4 on 2 cores: the machine was shared" in md


def test_regenerated_report_gives_the_same_files(optim_sweep, capsys):
    from src.report import main

    write_report(optim_sweep)
    names = ["summary.csv", "summary_groups.csv", "summary_pairs.csv", "summary_curves.csv", "summary.md"]
    first = {n: (optim_sweep / n).read_text() for n in names}
    for n in names:
        (optim_sweep / n).unlink()
    assert main([str(optim_sweep)]) == 0
    assert {n: (optim_sweep / n).read_text() for n in names} == first
    assert "## Verdicts" in capsys.readouterr().out


def test_report_writes_its_figures_to_tensorboard_once(optim_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_report(optim_sweep)
    write_report(optim_sweep)  # regenerated: replaces, does not add
    events = list((optim_sweep / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(optim_sweep / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"report/means", "report/val_curves"}
    image = acc.Images("report/means")[0]
    assert (image.width, image.height) == (750, 500) and image.encoded_image_string.startswith(b"\x89PNG")
    text = acc.Tensors("report/summary")[0].tensor_proto.string_val[0].decode()
    assert text == (optim_sweep / "summary.md").read_text()
    assert (optim_sweep / "summary.png").stat().st_size > 20_000


def test_report_of_an_empty_dir_is_one_error_line(tmp_path, capsys):
    from src.report import main

    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no job directories") and err.count("\n") == 1


def test_job_listing_api_is_kept(optim_sweep):
    """src/probe.py lists job dirs with find_jobs and reads them with load_job."""
    dirs = find_jobs(optim_sweep)
    assert [d.name.split("_")[0] for d in dirs] == [str(i) for i in range(10)]
    job = load_job(dirs[-1])
    assert job.status == "diverged" and job.overrides == {"optim": "sgd", "seed": "4"}


# --- provenance --------------------------------------------------------------------------------

def test_provenance_keys_and_a_group_key_stable_across_seeds(tmp_path):
    from conftest import compose

    from src.provenance import provenance

    p = provenance(compose(["seed=1"], tmp_path / "a"))
    for key in ("python", "torch", "lightning", "hydra", "device_type", "device", "git_commit",
                "git_dirty", "config_hash", "finished_at"):
        assert key in p, key
    assert p["device_type"] in ("cpu", "cuda", "mps") and p["device"]
    assert p["hydra"].startswith("1.3") and p["lightning"].startswith("2.")
    same = provenance(compose(["seed=2"], tmp_path / "b"))["config_hash"]  # other seed, other run dir
    assert same == p["config_hash"]
    assert provenance(compose(["seed=1", "optim=sgd"], tmp_path / "c"))["config_hash"] != same
    assert provenance(compose(["seed=1", "data.batch_size=128"], tmp_path / "d"))["config_hash"] != same


def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    import src.provenance as prov

    monkeypatch.setattr(prov, "REPO", tmp_path)
    assert prov.git_state() == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert prov.git_state() == (None, None)


def test_seed_presets_compose(tmp_path):
    from conftest import compose

    cfg = compose(["experiment=compare_optimizers_seeds"], tmp_path)
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.seed, cfg.model.act_fn) == (40, 256, 42, "relu")
    cfg = compose(["experiment=init_study_seeds"], tmp_path)
    assert cfg.optim._target_ == "src.optim.SGD" and cfg.trainer.max_epochs == 3
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        params = hydra_compose("train", ["experiment=compare_optimizers_seeds"], return_hydra_config=True).hydra.sweeper.params
        assert params.optim == "sgd,sgd_mom,adam" and params.seed == "range(42,47)"  # 42 = the 1-seed preset
        params = hydra_compose("train", ["experiment=init_study_seeds"], return_hydra_config=True).hydra.sweeper.params
        assert params.seed == "42,43,44" and params["model.act_fn"] == "tanh,relu"
        assert len(params.init.split(",")) == 8


@pytest.mark.parametrize("args, said", [
    (["--tolerance-pt", "-1"], "argument --tolerance-pt: -1 is not a number of points > 0"),
    (["--tolerance-pt", "nan"], "argument --tolerance-pt: nan is not a number of points > 0"),
    (["--tolerance-pt", "abc"], "argument --tolerance-pt: abc is not a number of points > 0"),
    ([], "the following arguments are required: sweep_dir")])
def test_report_arguments_are_one_error_line(tmp_path, capsys, args, said):
    """-1 and nan wrote 'within -1 pt of its best' into summary.md; argparse's own errors were
    two lines (usage, then `prog: error:`)."""
    from src.report import main

    with pytest.raises(SystemExit) as e:
        main([*([str(tmp_path)] if args else []), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: {said}")
    assert "usage: python -m src.report" in err and not list(tmp_path.iterdir())


def test_the_report_refuses_another_apps_sweep(tmp_path, capsys):
    """`python -m src.report <an eval.py -m sweep>` read its fine jobs as training runs with no
    results.json (`2 incomplete`), a probe sweep as `3 ok` with empty columns, exit 0."""
    from src.report import main

    for job in ("0_split=test", "1_split=val"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: eval\n")
        (tmp_path / job / "eval.json").write_text("{}")
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is an eval.py sweep; this report is of train.py sweeps\n"
    assert not (tmp_path / "summary.md").exists()
