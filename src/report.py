"""Sweep report: what a multirun found, with the seed-to-seed noise and where each number came from.

Written by the Hydra callback at the end of every multirun (src/hydra_callbacks.py) and
regenerated on an existing sweep dir with

    python -m src.report logs/train/multiruns/<timestamp> [--tolerance-pt 1.0]

Writes into the sweep dir:
  summary.md         groups, verdicts, curves, the tutorial's numbers, every job
  summary.png        the figures (also in tensorboard/, one image per figure)
  summary.csv        one row per job;  summary_groups.csv  one row per group of seeds;
  summary_pairs.csv  one verdict per pair;  summary_curves.csv  one row per curve line

Reading order of this file: jobs (one per job dir) -> groups (jobs that differ only in seed)
-> verdicts (pairs of groups that differ in one swept factor) -> curves (a numeric factor
with 3+ values) -> text -> figures -> write_report. The statistics are in src/stats.py.
Each job dir's results.json is the source of truth; .hydra/overrides.yaml says what the job
was. A job dir without a results.json is listed as `incomplete`, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from src.resolvers import TUTORIAL_LR, swept_keys_of
from src.stats import (
    ALPHA,
    Difference,
    Summary,
    Tolerance,
    compare,
    holm,
    mean_and_band,
    prediction_interval,
    summarize,
    tolerance_range,
)
from src.utils import atomic_write_bytes, atomic_write_text, read_yaml, read_yaml_mapping

# Test accuracies printed by the tutorial (40 epochs, batch 256, Kaiming init, ReLU, seed 42).
TUTORIAL_TEST_ACC = {"sgd": 0.8909, "sgd_mom": 0.8883, "adam": 0.8946}
# Statuses that make a multirun "not clean" (see src/hydra_callbacks.py for the exit status).
BAD_STATUSES = ("failed", "diverged", "incomplete", "interrupted")
METRICS = ("status", "test_acc", "best_val_acc", "best_val_epoch", "epochs", "seconds", "error")
# Summarized per group of seeds; accuracies are fractions in results.json, shown in %.
GROUP_METRICS = ("test_acc", "best_val_acc", "best_val_epoch", "seconds")
ACCURACIES = {"test_acc", "best_val_acc", "tutorial_test_acc"}
# A run whose final val accuracy is at most chance + 2 pt did not learn (same rule as issue 17).
CHANCE_MARGIN = 0.02
TOLERANCE_PT = 1.0
FIRST_EPOCH_OFF_AXIS = 10  # from this many epochs on, the val curves' y axis leaves out the first


# --- jobs ------------------------------------------------------------------------------------

@dataclass
class Job:
    name: str
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)  # config group -> option (optim: adam)
    results: dict = field(default_factory=dict)
    status: str = "incomplete"
    error: str = ""
    notes: list[str] = field(default_factory=list)  # "did not learn", the run's own warnings

    def get(self, key: str):
        return self.results.get(key)

    def value(self, metric: str) -> float | None:
        """The metric of a finished (`ok`) job; None for any other status, or a sentinel."""
        v = self.results.get(metric) if self.status == "ok" else None
        try:
            v = float(v) if v is not None and not isinstance(v, bool) else None
        except (TypeError, ValueError):  # a hand-edited or damaged results.json: no number
            return None
        return without_sentinel(metric, v) if v is not None and math.isfinite(v) else None

    def factor(self, key: str) -> str:
        """The job's value of a swept key: its override; else its config group's option or its
        config's value, so a default named in one sweep and left out in another is one setting
        (they were two groups, `init=kaiming` and `init=`, compared with each other)."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return self.choices[key]
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return ""
            node = node[part]
        if node is None:
            return "null"  # as an explicit `key=null` override writes it: one setting
        return "" if isinstance(node, dict) else str(node)

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def config(self) -> dict:
        return self.results.get("config") or {}

    @property
    def provenance(self) -> dict:
        return self.results.get("provenance") or {}

    @property
    def seed(self):
        """The job's seed, "42" whether an override (a string) or the config (an int) gave it: two
        sweeps into one dir, one with seed=42 and one leaving it at its default 42, ran one seed."""
        seed = self.overrides.get("seed", self.config.get("seed"))
        if seed is None:
            return None
        number = same_setting(str(seed))
        return str(int(number)) if isinstance(number, float) and number.is_integer() else str(seed)

    @property
    def val_scores(self) -> list:
        return [v for v in (self.results.get("val_scores") or []) if v is not None]


def without_sentinel(metric: str, value):
    """None for results.json's `best_val_epoch: -1` (no epoch was validated, e.g.
    trainer.limit_val_batches=0, so there is no best one); the value otherwise. The job rows and
    the group numbers both read it here: averaged, -1 read `-1.0 [-1.0, -1.0]` in the Groups table."""
    if metric == "best_val_epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return None
    return value


def same_setting(value: str):
    """What makes two written values one setting: `1e-3` and `0.001`, `true` and `True`, `[1, 2]`
    and `[1,2]`."""
    try:
        return float(value)
    except ValueError:
        pass
    text = value.replace(" ", "") if value.startswith("[") else value
    return text.lower() if text.lower() in ("true", "false", "null", "none") else text


def _job_number(path: Path) -> tuple:
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (math.inf, path.name)


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job dirs: sub-directories Hydra made (.hydra/) or that hold a results.json."""
    dirs = [p for p in Path(sweep_dir).iterdir()
            if p.is_dir() and ((p / ".hydra").is_dir() or (p / "results.json").exists())]
    return sorted(dirs, key=_job_number)


def status_of(results: dict) -> str:
    """`ok` unless results.json says otherwise; an `ok` run whose loss went NaN/inf (written as
    null by atomic_write_json) is `diverged`."""
    status = results.get("status") or "incomplete"
    if status == "ok" and any(v is None for v in (results.get("train_losses") or [])):
        return "diverged"
    return status


def notes_of(job: Job) -> list[str]:
    """`did not learn` for a run that ended at chance level, then the run's own warnings."""
    warnings = [str(w) for w in (job.results.get("warnings") or [])]
    notes = []
    classes = (job.config.get("model") or {}).get("num_classes") or 10
    if job.status == "ok" and job.val_scores and not any("did not learn" in w for w in warnings):
        chance = 1 / classes
        if job.val_scores[-1] <= chance + CHANCE_MARGIN:
            notes.append(f"did not learn (final val acc {100 * job.val_scores[-1]:.1f} %, "
                         f"chance {100 * chance:.0f} %)")
    return notes + warnings


def load_job(path: Path) -> Job:
    job = Job(name=path.name, path=path)
    overrides = read_yaml(path / ".hydra" / "overrides.yaml")
    for item in overrides if isinstance(overrides, list) else []:
        key, _, value = str(item).partition("=")
        job.overrides[key.lstrip("+~")] = value
    hydra_cfg = read_yaml_mapping(path / ".hydra" / "hydra.yaml")
    job.choices = {k: str(v) for k, v in
                   ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices", {}).items()
                   if "/" not in k and v is not None}
    results_path = path / "results.json"
    if not results_path.exists():
        job.error = "no results.json (job still running, killed, or crashed before writing it)"
        return job
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as e:
        job.error = f"unreadable results.json: {e}"
        return job
    if not isinstance(results, dict):
        job.error = f"unreadable results.json: a JSON {type(results).__name__}, not an object"
        return job
    job.results = results
    job.status = status_of(job.results)
    job.error = job.results.get("error") or ("loss became NaN/inf" if job.status == "diverged" else "")
    for group in ("optim", "init"):  # a job whose .hydra/ is gone still says what it was
        job.choices.setdefault(group, str(job.config.get(f"{group}_name") or ""))
    job.notes = notes_of(job)
    return job


def swept_keys(jobs: list[Job], sweep_dir: Path) -> list[str]:
    """The overrides that make jobs differ: those declared as sweeps in the command line or
    in hydra.sweeper.params (multirun.yaml), plus any whose value differs between jobs."""
    declared = set(swept_keys_of(sweep_dir))
    keys: list[str] = []
    for job in jobs:
        for k in job.overrides:
            values = {same_setting(j.factor(k)) for j in jobs}
            if k not in keys and (k in declared or len(values) > 1) and not _bookkeeping(k):
                keys.append(k)
    return keys


def _sweeper(sweep_dir: Path) -> tuple[dict, dict] | None:
    """multirun.yaml's `hydra` and `hydra.sweeper` sections; None when there are none."""
    hydra_cfg = read_yaml_mapping(Path(sweep_dir) / "multirun.yaml").get("hydra")
    sweeper = hydra_cfg.get("sweeper") if isinstance(hydra_cfg, dict) else None
    return (hydra_cfg, sweeper) if isinstance(sweeper, dict) else None


def is_search(sweep_dir: Path) -> bool:
    """Whether the sweep was an Optuna search (multirun.yaml): its points are sampled trials,
    not a grid, and the report's sentences say so."""
    found = _sweeper(sweep_dir)
    return found is not None and "optuna" in str(found[1].get("_target_", "")).lower()


def planned_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep asked for (multirun.yaml): the product of its sweeps' lengths for
    Hydra's basic sweeper (the command line's over a preset's params of the same key), an Optuna
    search's n_trials; None when it cannot be told (another sweeper, glob, an unreadable file)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = _sweeper(sweep_dir)
    if found is None:
        return None
    hydra_cfg, sweeper = found
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        trials = sweeper.get("n_trials")
        return trials if isinstance(trials, int) and not isinstance(trials, bool) and trials > 0 else None
    if not target.endswith("BasicSweeper"):
        return None
    params = sweeper.get("params") or {}
    task = (hydra_cfg.get("overrides") or {}).get("task") or []
    counts: dict[str, int] = {}
    parser = OverridesParser.create()
    try:
        for arg in [f"{k}={v}" for k, v in params.items()] + [str(a) for a in task]:
            (override,) = parser.parse_overrides([arg])
            key = override.get_key_element().lstrip("+~")
            counts[key] = len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
    except Exception:  # glob, interval, an odd value: no count rather than a wrong one
        return None
    return math.prod(counts.values())


def fixed_overrides(jobs: list[Job], swept: list[str]) -> list[str]:
    """The overrides every job was given alike (`data.train_subset=5000`): the numbers are of
    that setting, which only the job dirs' names said."""
    if not jobs:
        return []
    common = dict(jobs[0].overrides)
    for job in jobs[1:]:
        common = {k: v for k, v in common.items() if job.overrides.get(k) == v}
    return [f"{k}={v}" for k, v in common.items() if k not in swept and not _bookkeeping(k)]


def _bookkeeping(key: str) -> bool:
    """How a job was started or where it wrote (`print_config`, `verbose`, `+sweep.rerun`, paths),
    not what it trained: never a factor (provenance's config_hash leaves them out too)."""
    from src.provenance import BOOKKEEPING_KEYS

    top = key.split(".")[0]
    return (top in BOOKKEEPING_KEYS and top != "seed") or key.endswith(("_dir", "_path"))


def tutorial_reference(job: Job) -> float | None:
    """The tutorial's published test accuracy, when this job ran the tutorial's setting."""
    config = job.config
    name = job.choices.get("optim")
    if name not in TUTORIAL_TEST_ACC or not config:
        return None
    model, data, trainer = config.get("model", {}), config.get("data", {}), config.get("trainer", {})
    try:
        lr = float(config.get("optim", {}).get("lr", 0))
    except (TypeError, ValueError):  # an unresolved interpolation in a failed job's config
        return None
    same = (job.choices.get("init") == "kaiming" and model.get("act_fn") == "relu"
            and list(model.get("hidden_sizes") or []) == [512, 256, 256, 128]
            and data.get("batch_size") == 256 and trainer.get("max_epochs") == 40
            and not trainer.get("limit_train_batches") and not data.get("train_subset")
            and math.isclose(lr, TUTORIAL_LR[name]))
    return TUTORIAL_TEST_ACC[name] if same else None


# --- groups: jobs that differ only in seed -----------------------------------------------------

@dataclass
class Group:
    number: int
    factors: dict[str, str]  # swept key -> value, seed excluded
    jobs: list[Job]
    apart: str = ""  # why these jobs are not pooled with others of the same factors

    def label(self, keys: list[str] | None = None, compact: bool = False) -> str:
        """The group's values of `keys`; `compact` (figure ticks): long numbers to 3 digits, as
        Optuna's lr 0.00031489116479568613 is 0.000315."""
        keys = list(self.factors) if keys is None else keys

        def shown(value: str) -> str:
            number = _number(value) if compact and len(str(value)) > 7 else None
            return str(value) if number is None else f"{number:.3g}"

        if len(keys) == 1:
            return shown(self.factors[keys[0]])
        return ",".join(f"{_short(k)}={shown(self.factors[k])}" for k in keys) or "all jobs"

    def values(self, metric: str) -> dict:
        """Metric of each `ok` job, keyed by seed; a seed that ran twice counts once, its later
        job (the same config and seed is the same run again, not another sample). By job name
        when a job has no seed: no pairing."""
        done = [j for j in self.counted if j.value(metric) is not None]
        by_seed = None not in (j.seed for j in done)
        return {(j.seed if by_seed else j.name): j.value(metric) for j in done}

    @property
    def counted(self) -> list[Job]:
        """The `ok` jobs that count: the last of each seed to finish (every one without a seed)."""
        last = {(j.seed if j.seed is not None else j.name): j for j in _by_finish(self.jobs) if j.status == "ok"}
        return list(last.values())

    @property
    def repeated_seeds(self) -> dict:
        """{seed: [its jobs, in the order they finished]} for each seed that more than one `ok` job ran."""
        runs: dict = {}
        for j in _by_finish(self.jobs):
            if j.status == "ok" and j.seed is not None:
                runs.setdefault(j.seed, []).append(j)
        return {seed: jobs for seed, jobs in runs.items() if len(jobs) > 1}

    def summary(self, metric: str) -> Summary:
        return summarize(list(self.values(metric).values()), bounds=self.bounds(metric))

    def bounds(self, metric: str) -> tuple[float, float] | None:
        """The values a metric can take, which its interval is cut to (stats.summarize)."""
        if metric in ACCURACIES:
            return 0.0, 1.0
        if metric == "best_val_epoch":
            epochs = [e for j in self.counted if (e := j.value("epochs")) is not None]
            return 0.0, (max(epochs) - 1 if epochs else math.inf)
        if metric in ("seconds", "epochs"):
            return 0.0, math.inf
        return None

    @property
    def not_ok(self) -> list[Job]:
        return [j for j in self.jobs if j.status != "ok"]

    @property
    def did_not_learn(self) -> bool:
        ok = [j for j in self.jobs if j.status == "ok"]
        return bool(ok) and all(any(n.startswith("did not learn") for n in j.notes) for j in ok)

    @property
    def environment(self) -> set:
        return {(j.provenance.get("torch"), j.provenance.get("device_type"))
                for j in self.jobs if j.provenance}


def _by_finish(jobs: list[Job]) -> list[Job]:
    """In the order they finished (provenance.finished_at); a job without it keeps its place in
    dir order, before those with it. Two sweeps into one dir both have a job 0: dir order alone
    would count the earlier run of a repeated seed as "the last"."""
    order = {id(j): i for i, j in enumerate(jobs)}
    return sorted(jobs, key=lambda j: (bool(j.provenance.get("finished_at")), str(j.provenance.get("finished_at") or ""),
                                       order[id(j)]))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


POOL_FIELDS = (("torch", "torch"), ("device_type", "device"), ("config_hash", "config"))


def _pool_key(job: Job) -> tuple | None:
    """Jobs are pooled only when torch version, device type and config hash all agree."""
    p = job.provenance
    return tuple(p.get(f) for f, _ in POOL_FIELDS) if p else None


def group_jobs(jobs: list[Job], factor_keys: list[str]) -> list[Group]:
    by_factors: dict[tuple, list[Job]] = {}
    shown: dict[tuple, tuple] = {}  # the values as the first job of the group wrote them
    for job in jobs:
        values = tuple(job.factor(k) for k in factor_keys)
        key = tuple(same_setting(v) for v in values)
        by_factors.setdefault(key, []).append(job)
        shown.setdefault(key, values)
    groups: list[Group] = []
    for key, members in by_factors.items():
        values = shown[key]
        pools: dict = {}
        for job in members:
            pools.setdefault(_pool_key(job), []).append(job)
        unknown = pools.pop(None, [])
        if len(pools) <= 1:  # jobs without provenance (failed early, incomplete) join the pool
            parts = [(members, "")]
        else:
            parts = [(js, _why_apart(key, list(pools))) for key, js in pools.items()]
            if unknown:
                parts.append((unknown, "no provenance (failed or incomplete jobs)"))
        for js, why in parts:
            groups.append(Group(len(groups) + 1, dict(zip(factor_keys, values, strict=True)), js, why))
    return groups


def _why_apart(key: tuple, keys: list[tuple]) -> str:
    reasons = []
    for i, (_, name) in enumerate(POOL_FIELDS):
        others = sorted({str(k[i]) for k in keys if k[i] != key[i]})
        if others:
            reasons.append(f"{name} {key[i]} (vs {', '.join(others)})")
    return "not pooled: " + "; ".join(reasons)


# --- verdicts: pairs of groups that differ in one swept factor ----------------------------------

@dataclass
class Verdict:
    key: str  # the factor the two groups differ in
    a: Group
    b: Group
    d: Difference  # b − a
    context: str  # the other factors, e.g. "init=xavier"
    p_holm: float | None = None
    m: int = 0  # number of comparisons the Holm correction ran over

    def sentence(self) -> str:
        """One line, differences in percentage points (the metric is an accuracy)."""
        head = f"{_short(self.key)}: {self.b.factors[self.key]} − {self.a.factors[self.key]}"
        if self.context:
            head += f" ({self.context})"
        if not (self.d.n_a and self.d.n_b):
            return f"{head}: not compared, no finished job on one side"
        text = f"{head}: {100 * self.d.diff:+.2f} pt"
        if self.d.ci_low is not None:
            text += f" [{100 * self.d.ci_low:+.2f}, {100 * self.d.ci_high:+.2f}]"
        seeds = (f"{_plural(self.d.n_a, 'seed')} each" if self.d.n_a == self.d.n_b
                 else f"{self.d.n_a} vs {_plural(self.d.n_b, 'seed')}")
        if self.p_holm is None:
            return f"{text}, {seeds}: {self.d.test}"
        how = "paired by seed" if self.d.test == "paired t" else "Welch (seeds not paired)"
        if self.p_holm < ALPHA:
            higher = self.b if self.d.diff > 0 else self.a
            verdict = f"{higher.factors[self.key]} higher at 95 %"
        else:
            verdict = "not distinguishable at 95 %"
        return (f"{text}, {seeds}, {how}, p = {self.d.p:.3g}, Holm-adjusted {self.p_holm:.3g} "
                f"(of {self.m}): {verdict}")


def verdicts(groups: list[Group], factor_keys: list[str], metric: str, skip_keys=()) -> list[Verdict]:
    """Every pair of groups that differ in exactly one factor (not one in `skip_keys`: a curve
    shows those), run in the same torch version and device type; Holm over all tested pairs."""
    found = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            differing = [k for k in factor_keys if a.factors[k] != b.factors[k]]
            # a group with no provenance (all its jobs failed early) ran nowhere that could differ:
            # its pairs are listed ("not compared, no finished job on one side"), not dropped
            apart = a.environment and b.environment and a.environment != b.environment
            if len(differing) != 1 or differing[0] in skip_keys or apart:
                continue
            context = ",".join(f"{_short(k)}={a.factors[k]}" for k in factor_keys
                               if k != differing[0] and len({g.factors[k] for g in groups}) > 1)
            found.append(Verdict(differing[0], a, b, compare(a.values(metric), b.values(metric)), context))
    tested = [v for v in found if v.d.p is not None]
    for v, p in zip(tested, holm([v.d.p for v in tested]), strict=True):
        v.p_holm, v.m = p, len(tested)
    return found


# --- curves: a numeric factor with 3 or more values ----------------------------------------------

@dataclass
class CurveLine:
    label: str  # the other factors, e.g. "adam"
    points: list[Group]  # sorted by x
    x: list[float]
    tolerance: Tolerance | None = None


@dataclass
class Curve:
    key: str  # the swept key
    x_name: str  # what x is: the key itself, or the config value it sets (curve_x)
    log: bool
    lines: list[CurveLine]
    sampled: bool = False  # the x values are an Optuna search's trials, not a grid


def _number(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _shown(value):
    """A setting as a table shows it: a long fraction to 4 digits (Optuna's lr
    0.00031489116479568613 is 0.0003149; summary.csv keeps it whole), anything else as it is."""
    number = _number(value) if isinstance(value, str) and len(value) > 7 else None
    return value if number is None or number.is_integer() else f"{number:.4g}"


def _config_value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _x_of(group: Group, key: str, x_name: str) -> float | None:
    """The swept value, or the resolved config value it maps to (lr_decade -> optim.lr), read
    from the first job whose results.json holds a resolved config."""
    if x_name == key:
        return _number(group.factors[key])
    for job in group.jobs:
        x = _number(_config_value(job.config, x_name))
        if x is not None:
            return x
    return None


def find_curves(groups: list[Group], factor_keys: list[str], metric: str,
                tolerance_pt: float = TOLERANCE_PT, sampled: bool = False) -> list[Curve]:
    curves = []
    for key in factor_keys:
        values = {g.factors[key] for g in groups}
        if len(values) < 3 or any(_number(v) is None for v in values):
            continue
        # A preset may say which config value the swept key sets (curve_x: {lr_decade: optim.lr}).
        mapping = next(((j.config.get("curve_x") or {}) for g in groups for j in g.jobs
                        if j.config.get("curve_x")), {})
        x_name = str(mapping.get(key, key))
        rest = [k for k in factor_keys if k != key and len({g.factors[k] for g in groups}) > 1]
        by_rest: dict[tuple, list[Group]] = {}
        for g in groups:
            by_rest.setdefault(tuple(g.factors[k] for k in rest), []).append(g)
        lines = []
        for values_rest, members in by_rest.items():
            placed = sorted(((x, g) for g in members if (x := _x_of(g, key, x_name)) is not None),
                            key=lambda t: t[0])
            label = ",".join(f"{_short(k)}={v}" for k, v in zip(rest, values_rest, strict=True))
            if len(rest) == 1:
                label = str(values_rest[0])
            # one line (an Optuna search, one optimizer's lr sweep): named by its optimizer when
            # every job ran the same one ("sgd is within 1 pt...", not "all is within...")
            optims = {j.choices.get("optim") for g in groups for j in g.jobs} - {None, ""}
            label = label or (optims.pop() if len(optims) == 1 else "all")
            lines.append(CurveLine(label, [g for _, g in placed], [x for x, _ in placed]))
        xs = [x for line in lines for x in line.x]
        log = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 10
        for line in lines:
            line.tolerance = tolerance_range(
                line.x, [g.summary(metric).mean for g in line.points],
                [not g.not_ok for g in line.points], tolerance_pt / 100, log)
        curves.append(Curve(key, x_name, log, lines, sampled))
    return curves


def _fmt_x(x: float) -> str:
    return f"{x:.3g}"


def resolved_x(curves: list[Curve]) -> dict[str, dict[int, float]]:
    """For curves whose x is a config value the swept key sets (optim.lr for lr_decade): that
    value per group number, shown beside the swept key in the group tables."""
    return {c.x_name: {g.number: x for line in c.lines for x, g in zip(line.x, line.points, strict=True)}
            for c in curves if c.x_name != c.key}


def curve_sentence(curve: Curve, line: CurveLine, metric: str, tolerance_pt: float) -> str:
    t = line.tolerance
    failed = [f"{_fmt_x(x)} ({len(g.not_ok)} of {len(g.jobs)} {_statuses(g.not_ok)})"
              for x, g in zip(line.x, line.points, strict=True) if g.not_ok]
    tail = f"; not ok at {', '.join(failed)}" if failed else ""
    if t is None:
        return f"{line.label}: no point with a finished job{tail}."
    s = line.points[t.best].summary(metric)
    best_text = f"{100 * s.mean:.2f} %" + (f" [{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]"
                                           if s.ci_low is not None else " (1 seed: no interval)")
    x = _short(curve.x_name)
    where = f"its best ({best_text} at {x} = {_fmt_x(line.x[t.best])})"
    ends = (t.open_low, t.open_high)
    if t.low == t.high:
        if curve.sampled:  # an Optuna search: the points are its trials' values, not a grid
            point = f"that {x} of the {len(line.x)} tried" if len(line.x) > 1 else f"that {x}"
            side = {(True, False): "the lowest (its best may lie below it: search lower)",
                    (False, True): "the highest (its best may lie above it: search higher)",
                    (True, True): "the only one tried (its best may lie elsewhere: search further)"}.get(ends)
        else:
            side = {(True, False): "the grid's lowest", (False, True): "the grid's highest"}.get(
                ends, "at the grid's edge") + " (its best may lie beyond the grid: sweep further)"
            point = "that grid point"
        edge = f", {side}" if t.open_low or t.open_high else ""
        return f"{line.label} is within {tolerance_pt:g} pt of {where} only at {point}{edge}{tail}."
    unit = ("decade" if abs(t.width - 1) < 1e-9 else "decades") if curve.log else x
    at_least = "at least " if (t.open_low or t.open_high) else ""
    if curve.sampled:
        reach = {(True, False): f"reaches the lowest {x} tried", (False, True): f"reaches the highest {x} tried",
                 (True, True): f"spans every {x} tried"}.get(ends)
    else:
        reach = "reaches the grid's edge"
    edge = f" (the range {reach})" if at_least else ""
    return (f"{line.label} stays within {tolerance_pt:g} pt of {where} over {at_least}{t.width:.2g} "
            f"{unit}, {_fmt_x(line.x[t.low])} to {_fmt_x(line.x[t.high])}{edge}{tail}.")


def _statuses(jobs: list[Job]) -> str:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    return ", ".join(s if n == len(jobs) else f"{n} {s}" for s, n in counts.items())


# --- text: csv and markdown -----------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def device_column(p: dict) -> str | None:
    """`cpu`, or the GPU's name: what the jobs table shows (a cpu,gpu sweep names each row's)."""
    if not p:
        return None
    return "cpu" if p.get("device_type") == "cpu" else p.get("device") or p.get("device_type")


def rows_of(jobs: list[Job], keys: list[str], groups: list[Group]) -> tuple[list[str], list[dict]]:
    """One row per job, as in summary.csv (accuracies as fractions)."""
    with_ref = any(tutorial_reference(j) is not None for j in jobs)
    group_of = {j.name: g.number for g in groups for j in g.jobs}
    header = ["job", "group", *keys, *METRICS[:-1]] + (["tutorial_test_acc"] if with_ref else [])
    header += ["device", "notes", "error"]
    rows = []
    for j in jobs:
        row = {"job": j.name, "group": group_of.get(j.name), **{k: j.factor(k) for k in keys},
               "status": j.status, "device": device_column(j.provenance)}
        for m in ("test_acc", "best_val_acc", "best_val_epoch", "epochs", "seconds"):
            row[m] = without_sentinel(m, j.get(m)) if j.results else None
        if with_ref:
            row["tutorial_test_acc"] = tutorial_reference(j)
        row["notes"] = "; ".join(j.notes)
        row["error"] = j.error
        rows.append(row)
    return header, rows


def to_csv(header: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in header})
    return buf.getvalue()


def group_rows(groups: list[Group], factor_keys: list[str], curves: list[Curve]) -> tuple[list[str], list[dict]]:
    xs = resolved_x(curves)
    header = ["group", *factor_keys, *xs, "seeds", "jobs", "not_ok"]
    for m in GROUP_METRICS:
        header += [f"{m}_{s}" for s in ("mean", "sd", "ci_low", "ci_high", "min", "max")]
    header += ["notes", "config_hash", "torch", "device"]
    rows = []
    for g in groups:
        row = {"group": g.number, **g.factors, **{name: x.get(g.number) for name, x in xs.items()},
               "seeds": len(g.counted), "jobs": len(g.jobs),
               "not_ok": _statuses(g.not_ok), "notes": "; ".join(_group_notes(g))}
        for m in GROUP_METRICS:
            s = g.summary(m)
            row.update({f"{m}_mean": s.mean, f"{m}_sd": s.sd, f"{m}_ci_low": s.ci_low,
                        f"{m}_ci_high": s.ci_high, f"{m}_min": s.min, f"{m}_max": s.max})
        provs = [j.provenance for j in g.jobs if j.provenance]
        for col, f in (("config_hash", "config_hash"), ("torch", "torch"), ("device", "device")):
            row[col] = " | ".join(dict.fromkeys(str(p.get(f)) for p in provs))
        rows.append(row)
    return header, rows


def _group_notes(g: Group) -> list[str]:
    notes = [g.apart] if g.apart else []
    for seed, jobs in g.repeated_seeds.items():
        # full names: a seed runs twice only when two sweeps share the dir, and both have a job 0
        notes.append(f"seed {seed} ran {len(jobs)} times (jobs {', '.join(j.name for j in jobs)}): counted "
                     f"once, the last to finish ({jobs[-1].name})")
    if g.did_not_learn:
        notes.append("did not learn")
    # What a job's own warnings say its numbers are not (src/training.py): a group of them is
    # compared with the others all the same, so the group row says how many.
    counted = g.counted
    for start, what in (("stopped early", "stopped early"), ("test_acc is of", "test_acc not of the best-val checkpoint"),
                        ("trainer.fast_dev_run", "fast_dev_run smoke test"),
                        ("test_acc is over", "test_acc over part of the test set"),
                        ("val_scores are over", "val scores over part of the val split")):
        hits = sum(any(str(w).startswith(start) for w in j.results.get("warnings") or []) for j in counted)
        if hits:
            notes.append(f"{what}: {hits} of {_plural(len(counted), 'job')}, see Jobs")
    commits = {(j.provenance.get("git_commit"), j.provenance.get("git_dirty")) for j in g.jobs if j.provenance}
    if len(commits) > 1:
        notes.append(f"ran on {len(commits)} code versions (git commit/dirty)")
    return notes


def pair_rows(found: list[Verdict], metric: str) -> tuple[list[str], list[dict]]:
    header = ["factor", "a", "b", "context", "metric", "diff_pt", "ci_low_pt", "ci_high_pt",
              "n_a", "n_b", "test", "p", "p_holm", "comparisons", "sentence"]
    rows = []
    for v in found:
        scaled = [None if x is None else 100 * x for x in (v.d.diff, v.d.ci_low, v.d.ci_high)]
        rows.append(dict(zip(header, [v.key, v.a.factors[v.key], v.b.factors[v.key], v.context, metric,
                                      *scaled, v.d.n_a, v.d.n_b, v.d.test, v.d.p, v.p_holm, v.m,
                                      v.sentence()], strict=True)))
    return header, rows


def curve_rows(curves: list[Curve], metric: str, tolerance_pt: float) -> tuple[list[str], list[dict]]:
    header = ["key", "x", "line", "best_x", "best_mean", "best_ci_low", "best_ci_high", "tolerance_pt",
              "within_from", "within_to", "width", "width_unit", "reaches_grid_edge", "not_ok_at",
              "sentence"]
    rows = []
    for c in curves:
        for line in c.lines:
            t, row = line.tolerance, {"key": c.key, "x": c.x_name, "line": line.label,
                                      "tolerance_pt": tolerance_pt,
                                      "width_unit": "decades" if c.log else c.x_name,
                                      "sentence": curve_sentence(c, line, metric, tolerance_pt)}
            row["not_ok_at"] = " ".join(_fmt_x(x) for x, g in zip(line.x, line.points, strict=True) if g.not_ok)
            if t is not None:
                s = line.points[t.best].summary(metric)
                row.update(best_x=line.x[t.best], best_mean=s.mean, best_ci_low=s.ci_low,
                           best_ci_high=s.ci_high, within_from=line.x[t.low], within_to=line.x[t.high],
                           width=round(t.width, 6), reaches_grid_edge=t.open_low or t.open_high)
            rows.append(row)
    return header, rows


def _cell(metric: str, s: Summary, with_ci: bool = True) -> str:
    """`89.12 [88.80, 89.44]` (accuracies in %); just the value for one seed."""
    if s.n == 0:
        return "–"
    scale, digits = (100, 2) if metric in ACCURACIES else (1, 1 if metric == "best_val_epoch" else 0)
    text = f"{scale * s.mean:.{digits}f}"
    if with_ci and s.ci_low is not None:
        text += f" [{scale * s.ci_low:.{digits}f}, {scale * s.ci_high:.{digits}f}]"
    return text


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    esc = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in esc)]


def provenance_lines(jobs: list[Job]) -> list[str]:
    provs = [j.provenance for j in jobs if j.provenance]
    if not provs:
        return ["Provenance: none recorded (results.json without a `provenance` entry)."]

    def values(key):
        return ", ".join(dict.fromkeys(str(p.get(key)) for p in provs))

    commits = dict.fromkeys(f"{str(p.get('git_commit'))[:10]}{' (dirty)' if p.get('git_dirty') else ''}"
                            for p in provs)
    return [f"Provenance ({len(provs)} of {len(jobs)} jobs): Python {values('python')}, torch {values('torch')}, "
            f"Lightning {values('lightning')}, Hydra {values('hydra')}; device {values('device_type')} "
            f"({values('device')}); commit {', '.join(commits)}."]


def timing_note(jobs: list[Job]) -> str:
    """What `seconds` includes, and whether jobs shared the machine (overlapping in time, or a
    load average above the core count)."""
    spans = []
    for j in jobs:
        try:
            seconds = float(j.get("seconds"))
        except (TypeError, ValueError):
            continue
        if not math.isfinite(seconds) or seconds < 0:
            continue
        end = None
        if j.provenance.get("finished_at"):
            try:
                end = datetime.fromisoformat(j.provenance["finished_at"]).timestamp()
            except ValueError:
                pass
        if end is None:
            end = (j.path / "results.json").stat().st_mtime
        # Shrunk by a little on both sides: back-to-back jobs must not count as overlapping. At most
        # a quarter of the span, so a job under a second keeps a span (it turned inside out and
        # parallel short jobs read "one after another").
        trim = min(0.5, seconds / 4)
        spans.append((end - seconds + trim, end - trim))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda t: (t[0], t[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    text = ("`seconds` is the wall time of `train(cfg)` inside the job: data loading, model build, "
            "training, validation and the test pass; not the interpreter start and imports. ")
    text += (f"Up to {most} jobs ran at the same time, so their times include waiting for shared cores."
             if most > 1 else "Jobs ran one after another.")
    loads = [(j.provenance.get("load_avg_1min"), j.provenance.get("cpu_count")) for j in jobs if j.provenance]
    busy = [(ld, n) for ld, n in loads if ld is not None and n and ld > n]
    if busy:
        ld, n = max(busy)
        text += f" Load average up to {ld:.1f} on {n} cores: the machine was shared; times are upper bounds."
    return text


def md_groups(groups: list[Group], varying: list[str], metric: str, curves: list[Curve]) -> list[str]:
    lines = ["## Groups: jobs that differ only in seed", "",
             "Mean over seeds, [95 % interval of the mean] (Student t); sd = standard deviation "
             "across seeds. Accuracies in %. Only `ok` jobs enter the numbers.", ""]
    table, xs = [], resolved_x(curves)
    for g in groups:
        s = g.summary(metric)
        seeds = f"{len(g.counted)}" if not g.not_ok else f"{len(g.counted)} of {len(g.jobs)} ({_statuses(g.not_ok)})"
        ci = (f"[{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]" if s.ci_low is not None
              else "1 seed: no interval" if s.n == 1 else "–")
        table.append([str(g.number), *(_shown(g.factors[k]) for k in varying),
                      *(_fmt_x(x[g.number]) if g.number in x else "" for x in xs.values()),
                      seeds, _cell(metric, s, False), ci,
                      "–" if s.sd is None else f"{100 * s.sd:.2f}",
                      "–" if s.n == 0 else f"{100 * s.min:.2f} – {100 * s.max:.2f}",
                      *(_cell(m, g.summary(m)) for m in GROUP_METRICS if m != metric),
                      "; ".join(_group_notes(g))])
    others = [m.replace("_", " ").replace("epoch", "epoch (from 0)") for m in GROUP_METRICS if m != metric]
    return lines + _md_table(["#", *map(_short, varying), *xs, "seeds", _metric_name(metric), "95 % CI",
                              "sd", "min – max", *others, "notes"], table)


def md_verdicts(found: list[Verdict], groups: list[Group], metric: str,
                curves: list[Curve] = ()) -> list[str]:
    if not found:
        if len(groups) <= 1:
            return []
        if curves:  # the pairs along a curve's axis are that curve's business
            axes = ", ".join(f"`{c.key}`" for c in curves)
            return ["", f"No pair of groups differs in exactly one factor other than {axes} (within the "
                    "same torch version and device type); pairs along it are read off its curve below."]
        return ["", "No pair of groups differs in exactly one factor (within the same torch version "
                "and device type): no verdicts."]
    m = max(v.m for v in found)
    lines = ["", f"## Verdicts: pairs that differ in one factor ({_metric_name(metric)})", ""]
    if m:
        lines += [f"{_plural(len(found), 'pair')}, {m} tested; p-values Holm-adjusted for "
                  f"{_plural(m, 'comparison')}, so 'higher at 95 %' keeps the chance of any false claim "
                  "in this list ≤ 5 %. Brackets: 95 % interval of the difference (per pair, not adjusted).", ""]
    else:
        seeds = _seeds_preset(groups)  # init_study was told `seed=1,2,3`, not its own init_study_seeds
        why = [f"{n} with {reason if reason != FEW_SEEDS or not seeds else FEW_SEEDS.replace(')', f', or {seeds})')}"
               for reason, n in _untested_reasons(found).items()]
        lines += [f"{_plural(len(found), 'pair')}, none tested: {'; '.join(why)}.", ""]
    return lines + [f"- {v.sentence()}" for v in found]


def _seeds_preset(groups: list[Group]) -> str | None:
    """`experiment=<preset>_seeds` where every job ran one preset that has a seeds version."""
    presets = {j.choices.get("experiment") for g in groups for j in g.jobs}
    if len(presets) != 1 or not (preset := presets.pop()) or preset == "None":
        return None
    from src.config import ROOT

    seeds = f"{preset}_seeds"
    return f"`experiment={seeds}`" if (ROOT / "conf" / "experiment" / f"{seeds}.yaml").is_file() else None


FEW_SEEDS = "fewer than 2 finished seeds on a side, which a test needs (sweep `seed=1,2,3`)"


def _untested_reasons(found: list[Verdict]) -> dict[str, int]:
    """{why: how many pairs} for the pairs without a test, empty sides first, then too few seeds,
    then stats.compare's other reasons as they come. Only too few seeds is told to sweep more
    seeds: every pair that was not empty counted as that, and `optim=sgd,torch_sgd seed=1,2` (the
    same numbers on every seed) was told `sweep seed=1,2,3`."""
    counts: dict[str, int] = {"no finished job on one side": 0, FEW_SEEDS: 0}
    for v in found:
        if v.d.p is not None:
            continue
        if not (v.d.n_a and v.d.n_b):
            why = "no finished job on one side"
        elif min(v.d.n_a, v.d.n_b) < 2:
            why = FEW_SEEDS
        else:
            why = v.d.test.removeprefix("not tested: ")
        counts[why] = counts.get(why, 0) + 1
    return {why: n for why, n in counts.items() if n}


def md_curves(curves: list[Curve], metric: str, tolerance_pt: float) -> list[str]:
    lines = []
    for c in curves:
        unit = "decades" if c.log else _short(c.x_name)
        lines += ["", f"## {_metric_name(metric).capitalize()} against {c.x_name}"
                  + (f" (swept as {c.key})" if c.x_name != c.key else ""), "",
                  f"Within {tolerance_pt:g} pt of the best mean (`--tolerance-pt`); width in {unit}. "
                  "A point with a diverged or failed job never counts as within.", ""]
        lines += [f"- {curve_sentence(c, line, metric, tolerance_pt)}" for line in c.lines]
    return lines


def md_tutorial(groups: list[Group]) -> list[str]:
    """Per optimizer that ran the tutorial's setting: is its published number inside our
    interval of the mean, and inside the range of a single run?"""
    refs = []
    for g in groups:
        ref = next((r for j in g.jobs if (r := tutorial_reference(j)) is not None), None)
        s = g.summary("test_acc")
        if ref is None or s.n == 0:
            continue
        text = (f"- {g.jobs[0].choices.get('optim')}: ours {100 * s.mean:.2f} %, tutorial {100 * ref:.2f} % "
                f"({100 * (s.mean - ref):+.2f} pt)")
        if s.ci_low is None:
            text += "; 1 seed: no interval"
        else:
            lo, hi = prediction_interval(s)
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # a single run's accuracy lies in [0, 1]
            text += (f"; tutorial {'inside' if s.ci_low <= ref <= s.ci_high else 'outside'} our 95 % "
                     f"interval of the mean [{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}] over {s.n} seeds, "
                     f"{'inside' if lo <= ref <= hi else 'outside'} the 95 % range of a single run "
                     f"[{100 * lo:.2f}, {100 * hi:.2f}]")
        refs.append(text)
    if not refs:
        return []
    return ["", "## Against the tutorial's published test accuracies", "",
            "The tutorial ran one seed; whether its number is unusual for our setup is the "
            "single-run range (prediction interval), whether our mean matches it is the interval "
            "of the mean.", "", *refs]


def md_jobs(jobs: list[Job], header: list[str], rows: list[dict], metric: str) -> list[str]:
    shown = [h for h in header if h != "group"]
    cells = []
    for row in rows:
        out = []
        for h in shown:
            v = row[h]
            if h == "job":
                v = row["job"].split("_", 1)[0]  # the full name is in summary.csv
            elif h in ACCURACIES and v is not None:
                v = f"{100 * v:.2f} %"
            elif h == "seconds" and v is not None:
                v = f"{v:.0f}"
            elif h not in ("status", "notes", "error", "device"):
                v = _shown(v)
            out.append(_fmt(v))
        cells.append(out)
    lines = ["", "## Jobs", "", *_md_table(["#" if h == "job" else h for h in shown], cells)]
    ok = [j for j in jobs if j.value(metric) is not None]
    if ok:
        best = max(ok, key=lambda j: j.value(metric))
        lines += ["", f"Best single job by {_metric_name(metric)}: {100 * best.value(metric):.2f} % "
                  f"(`{best.name}`); compare groups, not single jobs."]
    return lines + ["", timing_note(jobs)]


def _metric_name(metric: str) -> str:
    return metric.replace("_", " ").replace("acc", "accuracy")


def to_markdown(sweep_dir: Path, jobs: list[Job], keys: list[str], groups: list[Group], metric: str,
                found: list[Verdict], curves: list[Curve], tolerance_pt: float,
                header: list[str], rows: list[dict]) -> str:
    varying = [k for k in keys if k != "seed" and len({g.factors[k] for g in groups}) > 1]
    counts = {s: sum(j.status == s for j in jobs) for s in dict.fromkeys(j.status for j in jobs)}
    swept = [f"{k} ({_plural(len({same_setting(j.factor(k)) for j in jobs}), 'value')})" for k in keys]
    planned = planned_jobs(sweep_dir)
    # a sweep stopped before some jobs started: they have no dir, and nothing else would say so
    missing = (f" (of {planned} planned: {planned - len(jobs)} never started; to run them, start the same "
               "command with this hydra.sweep.dir)") if planned is not None and planned > len(jobs) else ""
    fixed = fixed_overrides(jobs, keys)
    lines = [f"# Sweep report: `{sweep_dir}`", "",
             f"{len(jobs)} jobs{missing}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
             + (f"; swept: {', '.join(swept)}" if swept else ""), "",
             *([f"Given to every job: {' '.join(f'`{o}`' for o in fixed)}", ""] if fixed else []),
             *provenance_lines(jobs), ""]
    lines += md_groups(groups, varying, metric, curves)
    lines += md_verdicts(found, groups, metric, curves)
    lines += md_curves(curves, metric, tolerance_pt)
    lines += md_tutorial(groups)
    lines += md_jobs(jobs, header, rows, metric)
    lines += ["", "Files: `summary.csv` (jobs, full names), `summary_groups.csv`, `summary_pairs.csv`, "
              f"`summary_curves.csv`, `summary.png`; TensorBoard: `tensorboard --logdir {sweep_dir}` "
              f"({hparams_rows(jobs)}; the `tensorboard` run holds these figures).", ""]
    return "\n".join(lines)


def tensorboard_in(config) -> bool | None:
    """Whether a run's config (results.json's, .hydra/config.yaml) built a TensorBoardLogger;
    None when it has no logger section to say."""
    if not isinstance(config, dict) or "logger" not in config:
        return None
    loggers = config["logger"] if isinstance(config["logger"], dict) else {}
    return any(isinstance(lg, dict) and str(lg.get("_target_", "")).rsplit(".", 1)[-1] == "TensorBoardLogger"
               for lg in loggers.values())


def logged_to_tensorboard(job: Job) -> bool:
    """A TensorBoardLogger in the job's config; its tensorboard/ dir where the config is unknown.
    The dir alone is no proof: landscape.py once made one in logger=csv runs."""
    said = tensorboard_in(job.results.get("config") if isinstance(job.results, dict) else None)
    return (job.path / "tensorboard").is_dir() if said is None else said


def hparams_rows(jobs: list[Job]) -> str:
    """What TensorBoard's HParams tab will list: only jobs whose logger was TensorBoard wrote a row
    (a logger=csv sweep has none, and was told to look for one per job)."""
    logged = sum(1 for j in jobs if logged_to_tensorboard(j))
    if logged == len(jobs):
        return "HParams tab: one row per job"
    if logged == 0:
        return "no HParams rows: no job logged to TensorBoard (logger=tensorboard does)"
    return f"HParams tab: a row for each of the {logged} of {len(jobs)} jobs that logged to TensorBoard"


# --- figures -------------------------------------------------------------------------------------

PANEL_SIZE = (7.5, 5.0)  # inches; 100 dpi: each panel is readable alone in TensorBoard
# Shades per hue of tab10 (blue, orange, green, red, purple, brown, pink, grey, olive, cyan).
FAMILIES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "YlOrBr", "RdPu", "Greys", "YlGn", "GnBu")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zoom(values: list[float], pad: float = 0.15, min_span: float = 0.5) -> tuple[float, float]:
    """Axis limits that fit `values` (in %) with a margin: a 1-pt difference stays visible."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    return lo - pad * span, hi + pad * span


def _color(i: int):
    import matplotlib

    return matplotlib.colormaps["tab10"](i % 10)


def group_colors(groups: list[Group], varying: list[str]) -> dict[int, tuple]:
    """One colour per group: a hue per value of the first varying factor, and for a second
    factor a shade of that hue (light to dark in sweep order), so 20 lines stay legible."""
    import matplotlib

    if len(varying) < 2:
        return {g.number: _color(i) for i, g in enumerate(groups)}
    first = list(dict.fromkeys(g.factors[varying[0]] for g in groups))
    second = list(dict.fromkeys(g.factors[varying[1]] for g in groups))
    colors = {}
    for g in groups:
        family = matplotlib.colormaps[FAMILIES[first.index(g.factors[varying[0]]) % len(FAMILIES)]]
        shade = 0.45 + 0.5 * second.index(g.factors[varying[1]]) / max(1, len(second) - 1)
        colors[g.number] = family(shade)
    return colors


def figure_means(groups: list[Group], factor_keys: list[str], metric: str):
    """One row per group: mean with its 95 % interval, every seed as a dot, the tutorial's
    value as a star, and the numbers at the right. Rows at chance level or without a finished
    job are named at the left edge instead of stretching the axis."""
    plt = _pyplot()
    varying = [k for k in factor_keys if len({g.factors[k] for g in groups}) > 1]
    colors = group_colors(groups, varying)
    fig, ax = plt.subplots(figsize=(PANEL_SIZE[0], max(PANEL_SIZE[1], 1.2 + 0.26 * len(groups))))
    learned = [g for g in groups if not g.did_not_learn and g.summary(metric).n]
    shown = [100 * v for g in learned for v in g.values(metric).values()]
    shown += [100 * x for g in learned for x in (g.summary(metric).ci_low, g.summary(metric).ci_high) if x is not None]
    shown += [100 * r for g in learned for j in g.jobs if (r := tutorial_reference(j)) is not None]
    if shown:
        ax.set_xlim(*_zoom(shown, pad=0.05))
    edge = ax.get_yaxis_transform()  # x in axes fraction, y in data: text at the panel's edges
    for y, g in enumerate(groups):
        s, vals = g.summary(metric), [100 * v for v in g.values(metric).values()]
        if s.n == 0 or g.did_not_learn:
            text = _statuses(g.not_ok) if s.n == 0 else f"did not learn ({100 * s.mean:.1f} %)"
            ax.text(0.01, y, "◀ " + text, transform=edge, va="center", fontsize=8, color="crimson")
            continue
        jitter = [0.12 * ((k % 5) - 2) / 2 for k in range(len(vals))]
        ax.scatter(vals, [y + 0.22 + d for d in jitter], s=12, color="0.5", zorder=3)
        err = None if s.ci_low is None else [[100 * (s.mean - s.ci_low)], [100 * (s.ci_high - s.mean)]]
        ax.errorbar([100 * s.mean], [y], xerr=err, fmt="o", color=colors[g.number], capsize=4,
                    markersize=6, zorder=4)
        numbers = (f"{100 * s.mean:.2f} [{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]" if s.ci_low is not None
                   else f"{100 * s.mean:.2f} (1 seed)")
        ax.text(1.01, y, numbers, transform=edge, va="center", fontsize=8)
        ref = next((r for j in g.jobs if (r := tutorial_reference(j)) is not None), None)
        if ref is not None:
            ax.scatter([100 * ref], [y], marker="*", s=110, color="darkorange", edgecolor="k",
                       linewidth=0.5, zorder=5)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([g.label(varying, compact=True) for g in groups], fontsize=10 if len(groups) <= 8 else 8)
    ax.set_ylim(len(groups) - 0.5, -0.5)  # first group on top
    name = metric.replace("_", " ")
    title = f"{name}: mean and 95 % CI over seeds (bars); grey dots: single seeds"
    if any(tutorial_reference(j) is not None for g in groups for j in g.jobs):
        title += "\n★ the tutorial's published value (one seed)"
    ax.set(xlabel=f"{name} (%)", title=title)
    ax.grid(axis="x", alpha=0.3)
    return fig


MAX_VAL_CURVES = 8  # more lines than this in one panel cannot be told apart


def val_curve_groups(groups: list[Group], curves: list[Curve], metric: str) -> tuple[list[Group], str]:
    """The groups the val-curves panel draws, and what the title says of the choice: every one
    that learned, up to MAX_VAL_CURVES; past that, each learning-rate curve's best setting (★),
    or else the best MAX_VAL_CURVES by the comparison metric (all are in summary.md)."""
    drawn = [g for g in groups if any(j.val_scores for j in g.counted) and not g.did_not_learn]
    if len(drawn) <= MAX_VAL_CURVES:
        return drawn, ""
    best = {id(line.points[line.tolerance.best]) for c in curves for line in c.lines if line.tolerance}
    best_drawn = [g for g in drawn if id(g) in best]
    # one line's best alone (a single-optimizer lr sweep) says less than the 8 best groups
    if 2 <= len(best_drawn) <= MAX_VAL_CURVES:
        x_names = ", ".join(sorted({_short(c.x_name) for c in curves}))
        return best_drawn, f"each line's best {x_names} (★) of {len(drawn)} groups"
    ranked = {id(g) for g in sorted(drawn, key=lambda g: -(g.summary(metric).mean or 0.0))[:MAX_VAL_CURVES]}
    return [g for g in drawn if id(g) in ranked], (f"the {MAX_VAL_CURVES} best of {len(drawn)} groups by "
                                               f"{_metric_name(metric)}")


def figure_val_curves(groups: list[Group], factor_keys: list[str], curves: list[Curve] = (),
                      metric: str = "test_acc"):
    """Validation accuracy per epoch: mean over seeds ± 95 % band, one line per group (up to
    MAX_VAL_CURVES of them: val_curve_groups)."""
    import matplotlib.ticker

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=PANEL_SIZE)
    varying = [k for k in factor_keys if len({g.factors[k] for g in groups}) > 1]
    colors = group_colors(groups, varying)
    picked, choice = val_curve_groups(groups, list(curves), metric)
    picked_ids = {id(g) for g in picked}
    shown, hidden = [], 0
    for g in groups:
        runs = [j.val_scores for j in g.counted if j.val_scores]
        if not runs:
            continue
        if g.did_not_learn:
            hidden += 1
            continue
        if id(g) not in picked_ids:
            continue
        length = min(len(r) for r in runs)
        mean, half = mean_and_band([r[:length] for r in runs])
        epochs = list(range(length))  # from 0, as best_val_epoch, the checkpoints and the progress bar count
        ax.plot(epochs, 100 * mean, color=colors[g.number], marker="o" if length < 4 else None,
                label=f"{g.label(varying, compact=True)} ({_plural(len(runs), 'seed')})")
        ax.fill_between(epochs, (100 * (mean - half)).clip(0, 100), (100 * (mean + half)).clip(0, 100),
                        color=colors[g.number], alpha=0.2)  # an accuracy's band ends at 0 and 100 %
        # the first epoch sits far below the rest of a long run: the axis zooms on the rest;
        # a short run's every epoch stays in view
        shown += list(100 * mean[1:] if length >= FIRST_EPOCH_OFF_AXIS else 100 * mean)
    if shown:
        ax.set_ylim(*_zoom(shown, pad=0.08))
    title = "Validation accuracy: mean ± 95 % band over seeds"
    notes = [f"not drawn: {_plural(hidden, 'group')} that did not learn"] if hidden else []
    if choice:
        notes.insert(0, f"drawn: {choice}")
    if notes:  # wrapped: a panel's width holds ~70 characters of it (it ran off the figure)
        import textwrap

        title += "\n" + "\n".join(textwrap.wrap(f"({'; '.join(notes)})", 70))
    ax.set(xlabel="epoch", ylabel="val accuracy (%)", title=title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    if ax.lines:
        many = len(ax.lines) > 8
        ax.legend(fontsize=6 if many else 7, loc="lower right", ncol=2 if many else 1)
    return fig


def _plus_minus(s) -> str:
    """A heatmap cell's interval: `±half-width`, or `[low, high]` where the interval was cut to
    what the metric can take (mean ± half-width would then leave [0, 100] %)."""
    if s.half_width is None:
        return "1 seed"
    if s.ci_low > s.mean - s.half_width + 1e-12 or s.ci_high < s.mean + s.half_width - 1e-12:
        return f"[{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]"
    return f"±{100 * s.half_width:.2f}"


def figure_heatmap(groups: list[Group], rows_key: str, cols_key: str, metric: str):
    """Means of a two-factor sweep, coloured by the distance to the best cell (so 1 pt shows),
    annotated with ± the 95 % half-width (the interval itself where it was cut)."""
    import numpy as np

    plt = _pyplot()
    row_values = list(dict.fromkeys(g.factors[rows_key] for g in groups))
    col_values = list(dict.fromkeys(g.factors[cols_key] for g in groups))
    cell = {(g.factors[rows_key], g.factors[cols_key]): g for g in groups}
    means = {k: g.summary(metric).mean for k, g in cell.items()}
    learned = [100 * m for k, m in means.items() if m is not None and not cell[k].did_not_learn]
    best = max(learned) if learned else 0.0
    spread = min(10.0, max(2.0, best - min(learned))) if learned else 2.0
    grid = np.full((len(row_values), len(col_values)), np.nan)
    for (r, c), m in means.items():
        if m is not None and not cell[(r, c)].did_not_learn:
            grid[row_values.index(r), col_values.index(c)] = 100 * m - best
    fig, ax = plt.subplots(figsize=(max(PANEL_SIZE[0], 1.3 * len(col_values) + 2.5), PANEL_SIZE[1]))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")  # grey: no mean, or did not learn
    im = ax.imshow(grid, cmap=cmap, vmin=-spread, vmax=0, aspect="auto")
    fig.colorbar(im, ax=ax, label=f"pt below the best cell ({best:.2f} %)", extend="min")
    for (r, c), g in cell.items():
        s = g.summary(metric)
        if s.n == 0:
            text = _statuses(g.not_ok)
        elif g.did_not_learn:
            text = f"{100 * s.mean:.1f}\ndid not learn"
        else:
            text = f"{100 * s.mean:.2f}\n" + _plus_minus(s)
        value = grid[row_values.index(r), col_values.index(c)]
        light = not np.isnan(value) and im.norm(value) > 0.6  # dark text on the yellow end
        ax.text(col_values.index(c), row_values.index(r), text, ha="center", va="center", fontsize=8,
                color="k" if light or np.isnan(value) else "w")
    name = metric.replace("_", " ")
    ax.set(xticks=range(len(col_values)), xticklabels=col_values, yticks=range(len(row_values)),
           yticklabels=row_values, xlabel=cols_key, ylabel=rows_key,
           title=f"{name} (%) by {_short(rows_key)} × {_short(cols_key)}: mean ± 95 % half-width")
    return fig


def figure_curve(curve: Curve, metric: str, tolerance_pt: float):
    """Metric against a numeric factor: one line per other factor with its 95 % band over seeds.
    A strip above the data shows each line's range within `tolerance_pt` of its best (★); a
    strip below marks diverged/failed jobs at their x (×, with the count of seeds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=PANEL_SIZE)
    strip = 0.045 * len(curve.lines)  # axes fraction per strip: one row per line
    means = [100 * m for line in curve.lines for g in line.points if (m := g.summary(metric).mean) is not None]
    lo, hi = _zoom(means, pad=0.05) if means else (0.0, 100.0)
    lo = max(lo, hi - 20)  # the top 20 pt stay readable; lower points become ▼ at the floor
    total = (hi - lo) / (1 - 2 * strip)
    ax.set_ylim(lo - strip * total, hi + strip * total)
    strips = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, line in enumerate(curve.lines):
        color, t = _color(i), line.tolerance
        summaries = [g.summary(metric) for g in line.points]
        xs = [x for x, s in zip(line.x, summaries, strict=True) if s.n]
        ys = [max(lo, 100 * s.mean) for s in summaries if s.n]
        ax.plot(xs, ys, marker="o", color=color, label=line.label)
        # the interval of the mean, cut to what an accuracy can take; a point of 1 seed: none
        # ... and to the data area: the strips above and below belong to the ranges and the ×
        # marks (a point drawn as ▼ at the floor keeps a band only where it reaches the data area)
        band = [(y, y) if s.ci_low is None else (min(max(100 * s.ci_low, lo), hi), min(max(100 * s.ci_high, lo), hi))
                for y, s in zip(ys, (s for s in summaries if s.n), strict=True)]
        ax.fill_between(xs, [b[0] for b in band], [b[1] for b in band], color=color, alpha=0.18)
        for x, s in zip(line.x, summaries, strict=True):
            if s.n and 100 * s.mean < lo:
                ax.plot([x], [lo], marker="v", color=color, markersize=8)
                ax.annotate(f"{100 * s.mean:.0f}", (x, lo), textcoords="offset points", xytext=(6, -3),
                            fontsize=7, color=color)
        if t is not None:
            best = line.points[t.best].summary(metric)
            ax.plot([line.x[t.best]], [100 * best.mean], marker="*", markersize=15, color=color,
                    markeredgecolor="k", zorder=5)
            y = 1 - strip + 0.045 * (i + 0.5)
            ax.plot([line.x[t.low], line.x[t.high]], [y, y], color=color, linewidth=5,
                    solid_capstyle="butt", transform=strips)
            ax.plot([line.x[t.best]], [y], marker="*", color="k", markersize=7, transform=strips)
            open_ = "≥ " if t.open_low or t.open_high else ""
            unit = (" decade" if abs(t.width - 1) < 1e-9 else " decades") if curve.log else ""
            # one point at the grid's edge: "≥ 0 decades" is true but says nothing
            edge = "best at the edge of those tried" if curve.sampled else "best at the grid's edge"
            label = edge if t.low == t.high and open_ else f"{open_}{t.width:.2g}{unit}"
            ax.annotate(label, (line.x[t.high], y), xycoords=strips,
                        textcoords="offset points", xytext=(8, 0), va="center", fontsize=8, color=color)
        for x, g in zip(line.x, line.points, strict=True):
            if g.not_ok:
                y = 0.045 * (i + 0.5)
                ax.plot([x], [y], marker="x", color=color, markersize=8, mew=2, transform=strips)
                ax.annotate(f"{len(g.not_ok)}/{len(g.jobs)}", (x, y), xycoords=strips,
                            textcoords="offset points", xytext=(5, 0), va="center", fontsize=7, color=color)
    top, bottom = ax.get_ylim()[1], ax.get_ylim()[0]
    ax.axhspan(top - strip * total, top, color="0.94", zorder=0)
    ax.axhspan(bottom, bottom + strip * total, color="0.94", zorder=0)
    ax.set_yticks([tick for tick in ax.get_yticks() if lo <= tick <= hi])  # no ticks in the strips
    if curve.log:
        ax.set_xscale("log")
    name = metric.replace("_", " ")
    ax.set(xlabel=curve.x_name + (" (log scale)" if curve.log else ""), ylabel=f"{name} (%)",
           title=f"{name} vs {curve.x_name}: mean ± 95 % band over seeds\n"
                 f"top: range within {tolerance_pt:g} pt of the best ★;  bottom: × seeds diverged/failed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    return fig


def heatmap_axes(groups: list[Group], factor_keys: list[str], curve_keys: list[str]) -> tuple[str, str] | None:
    """A heatmap for exactly two varying factors, neither drawn as a curve; init/optim first."""
    varying = [k for k in factor_keys if len({g.factors[k] for g in groups}) > 1]
    if len(varying) != 2 or any(k in curve_keys for k in varying):
        return None
    first = [k for k in ("init", "optim") if k in varying]
    ordered = first + [k for k in varying if k not in first]
    return ordered[0], ordered[1]


def render(fig):
    """The figure as an RGBA array (rendered once; used for summary.png and for TensorBoard)."""
    import numpy as np

    plt = _pyplot()
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return image


def png_bytes(image) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    plt.imsave(buf, image, format="png")
    return buf.getvalue()


def tile(images: list, columns: int = 2):
    """Panels side by side, two per row, padded white to a common cell size."""
    import numpy as np

    height = max(im.shape[0] for im in images)
    width = max(im.shape[1] for im in images)
    rows = math.ceil(len(images) / columns)
    sheet = np.full((rows * height, min(columns, len(images)) * width, 4), 255, dtype=np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * height:r * height + im.shape[0], c * width:c * width + im.shape[1]] = im
    return sheet


def write_tensorboard(logdir: Path, images: dict[str, object], markdown: str) -> None:
    """The report's figures (one image each) and summary.md as TensorBoard summaries, written with
    tensorboard's own event writer (no torch import). A regenerated report replaces the old one."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    suffix = ".sweep_report"
    for old in logdir.glob(f"events.out.tfevents.*{suffix}"):
        old.unlink()
    writer = EventFileWriter(str(logdir), filename_suffix=suffix)
    for tag, image in images.items():
        png = summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=4,
                                        encoded_image_string=png_bytes(image))
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=png)])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=text_pb("report/summary", markdown)))
    writer.close()


def figures(groups: list[Group], factor_keys: list[str], metric: str, curves: list[Curve],
            tolerance_pt: float) -> dict[str, object]:
    """Tag -> rendered panel, in the order of summary.png."""
    panels = {"report/means": figure_means(groups, factor_keys, metric),
              "report/val_curves": figure_val_curves(groups, factor_keys, curves, metric)}
    axes = heatmap_axes(groups, factor_keys, [c.key for c in curves])
    if axes:
        panels["report/heatmap"] = figure_heatmap(groups, *axes, metric)
    for c in curves:
        panels[f"report/curve_{c.x_name}"] = figure_curve(c, metric, tolerance_pt)
    return {tag: render(fig) for tag, fig in panels.items()}


def header_image(sweep_dir: Path, jobs: list[Job], width_px: int):
    """A one-line title strip above the panels: the sweep, the job count, what is not shown."""
    plt = _pyplot()
    not_ok = [j for j in jobs if j.status != "ok"]
    text = f"{sweep_dir.name}: {len(jobs)} jobs"
    if not_ok:
        text += "  ·  not ok: " + ", ".join(f"#{j.number} {j.status}" for j in not_ok[:12])
        text += " …" if len(not_ok) > 12 else ""
    fig = plt.figure(figsize=(width_px / 100, 0.45), dpi=100)
    fig.text(0.01, 0.5, text, va="center", fontsize=10, color="crimson" if not_ok else "k")
    fig.canvas.draw()
    import numpy as np

    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return image


# --- the report ----------------------------------------------------------------------------------

def comparison_metric(jobs: list[Job]) -> str:
    """test_acc, unless no job has one (skip_test=true): then best_val_acc."""
    return "test_acc" if any(j.value("test_acc") is not None for j in jobs) else "best_val_acc"


def write_report(sweep_dir: str | Path, tolerance_pt: float = TOLERANCE_PT) -> list[Job]:
    """Write the summary files, summary.png and tensorboard/ into `sweep_dir`; return the jobs."""
    import numpy as np

    sweep_dir = Path(sweep_dir)
    jobs = [load_job(p) for p in find_jobs(sweep_dir)]
    keys = swept_keys(jobs, sweep_dir)
    factor_keys = [k for k in keys if k != "seed"]
    groups = group_jobs(jobs, factor_keys)
    metric = comparison_metric(jobs)
    curves = find_curves(groups, factor_keys, metric, tolerance_pt, sampled=is_search(sweep_dir))
    found = verdicts(groups, factor_keys, metric, skip_keys=[c.key for c in curves])

    header, rows = rows_of(jobs, keys, groups)
    atomic_write_text(sweep_dir / "summary.csv", to_csv(header, rows))
    atomic_write_text(sweep_dir / "summary_groups.csv", to_csv(*group_rows(groups, factor_keys, curves)))
    atomic_write_text(sweep_dir / "summary_pairs.csv", to_csv(*pair_rows(found, metric)))
    atomic_write_text(sweep_dir / "summary_curves.csv", to_csv(*curve_rows(curves, metric, tolerance_pt)))
    markdown = to_markdown(sweep_dir, jobs, keys, groups, metric, found, curves, tolerance_pt, header, rows)
    atomic_write_text(sweep_dir / "summary.md", markdown)

    panels = figures(groups, factor_keys, metric, curves, tolerance_pt)
    sheet = tile(list(panels.values()))
    sheet = np.concatenate([header_image(sweep_dir, jobs, sheet.shape[1]), sheet])
    atomic_write_bytes(sweep_dir / "summary.png", png_bytes(sheet))
    write_tensorboard(sweep_dir / "tensorboard", panels, markdown)
    return jobs


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage + error pair as one `error:` line, like every entry point's."""

    def error(self, message):
        usage = self.format_usage().strip().removeprefix("usage: ")
        print(f"error: {message}; usage: {usage}", file=sys.stderr)
        sys.exit(2)


def tolerance_pt(text: str) -> float:
    """--tolerance-pt: points of accuracy, > 0 and finite (-1 and nan gave 'within -1 pt')."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a number of points > 0 (accepted: e.g. 0.5, 1, 2)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m src.report",
                           description="Write summary.md/.csv/.png and tensorboard/ into a sweep dir.")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--tolerance-pt", type=tolerance_pt, default=TOLERANCE_PT,
                        help="curves: width of the range within this many points of the best (default 1)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if not find_jobs(args.sweep_dir):
        print(f"error: no job directories in {args.sweep_dir} (expected <n>_<overrides>/ with "
              ".hydra/ or results.json)", file=sys.stderr)
        return 2
    if (app := _app_of(args.sweep_dir)) not in (None, "train"):
        # its jobs are no training runs: read as such, they were `incomplete` or `ok` without scores
        article = "an" if app[:1] in "aeiou" else "a"
        print(f"error: {args.sweep_dir} is {article} {app}.py sweep; this report is of train.py sweeps", file=sys.stderr)
        return 2
    write_report(args.sweep_dir, args.tolerance_pt)
    print((args.sweep_dir / "summary.md").read_text())
    return 0


def _app_of(sweep_dir: Path) -> str | None:
    """The app whose multirun made `sweep_dir`, as Hydra wrote it down (None: it does not say)."""
    for config in (sweep_dir / "multirun.yaml", *(j / ".hydra" / "hydra.yaml" for j in find_jobs(sweep_dir)[:1])):
        hydra = read_yaml_mapping(config).get("hydra")
        name = (hydra.get("job") or {}).get("name") if isinstance(hydra, dict) else None
        if isinstance(name, str):
            return name
    return None


if __name__ == "__main__":
    sys.exit(main())
