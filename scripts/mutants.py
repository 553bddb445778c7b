"""Mutation testing: how many deliberately broken versions of the code the fast tests catch.

    make mutants                              # every module below, one after the other
    make mutants ARGS="optim init"            # some of them
    .venv/bin/python scripts/mutants.py --list

For each module, mutmut (PyPI) writes every small change it knows (`+` -> `-`, `<` -> `<=`,
a constant changed, a call argument dropped, ...) into a copy of the repo, learns once which
tests call each function (`mutmut run` records it), then runs each mutant against those of the
module's fast test files that reach the mutated function. A mutant is *killed* when a test
fails, *survived* when all pass. The score per module is written to docs/mutation-scores.md
and printed; the survivors of each module are listed under it.

Each module runs in its own copy of the repo under $MUTANTS_DIR (default /tmp/initopt-mutants),
so a run never touches the work tree and modules never share mutmut's cache. MUTANTS_KEEP=1
reuses a module's previous results and retests only its survivors (after adding tests); once it
called every survivor killed, equivalent ones too, so confirm with a fresh run (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("MUTANTS_DIR", "/tmp/initopt-mutants"))
TABLE = ROOT / "docs" / "mutation-scores.md"

# name: (file to mutate, which functions, fast test files, target %). "which functions" is None
# (all), or ("only" | "except", [function or Class.method names]).
MODULES: dict[str, tuple[str, tuple | None, list[str], int]] = {
    "optim": ("src/optim.py", None, ["tests/test_optim.py"], 90),
    "init": ("src/init.py", None, ["tests/test_init.py"], 90),
    "stats": ("src/stats.py", None, ["tests/test_truth_stats.py", "tests/test_report_stats.py", "tests/test_lr_curves.py",
                                     "tests/test_report_truth.py"], 80),
    # What a reader takes from the report: the job table, the groups of seeds and their numbers,
    # the best line (verdict sentences, lr curves and figures: see docs/testing.md).
    "report": ("src/report.py", ("only", ["Job.value", "Group.values", "Group.counted", "Group.repeated_seeds",
                                          "Group.summary", "_job_number", "find_jobs", "_bookkeeping",
                                          "status_of", "load_job", "swept_keys", "group_jobs", "_statuses",
                                          "_fmt", "rows_of", "to_csv", "group_rows", "_cell", "_md_table",
                                          "md_groups", "md_jobs", "comparison_metric"]),
               ["tests/test_report_units.py", "tests/test_report_truth.py", "tests/test_report_stats.py",
                "tests/test_lr_curves.py"], 80),
    # What the report says in words: the group labels, the verdict between two groups, the lr-curve
    # sentence, the notes, the tutorial's number, the provenance and timing lines (the tables and
    # figures: see docs/testing.md; with all four report test files a mutant took ~20 s).
    "report_words": ("src/report.py", ("only", ["Group.label", "_plural", "_short", "_why_apart", "Verdict.sentence",
                                                "_number", "_config_value", "curve_sentence", "_fmt_x", "notes_of",
                                                "tutorial_reference", "_group_notes", "provenance_lines",
                                                "timing_note"]),
                     ["tests/test_report_units.py"], 80),
    "divergence": ("callbacks/divergence.py", None,
                   ["tests/test_divergence.py", "tests/test_truth_divergence.py"], 80),
    # The numbers the diagnostics write: statistics, histogram buckets, the vanishing/exploding
    # watch, the logging schedule and its time budget (not the figures' drawing or labels).
    "diagnostics": ("callbacks/diagnostics.py", ("only", ["_summary_rows", "tensor_stats", "histogram_counts",
                                                          "add_histogram_fast", "finite_values", "BandWatch.direction",
                                                          "BandWatch.update", "_Diagnostics._due",
                                                          "_Diagnostics._adapt_interval", "_Diagnostics.log_values",
                                                          "_Diagnostics.record"]),
                    ["tests/test_diagnostics.py", "tests/test_truth_diagnostics.py", "tests/test_update_stats.py",
                     "tests/test_fake_cuda.py"], 80),
    # The update ratios ‖Δw‖/‖w‖ and Adam's effective steps (their histograms and medians).
    "update_stats": ("callbacks/update_stats.py", None,
                     ["tests/test_update_stats.py", "tests/test_diagnostics.py", "tests/test_fake_cuda.py"], 80),
    # The batches: the seeded per-epoch order, drop_last, DDP's rank slices, the mid-epoch skip
    # of a resume, the tensor loader and its state; the split and the normalisation.
    "data": ("src/data.py", ("only", ["EpochBatchSampler.__init__", "EpochBatchSampler.set_epoch",
                                      "EpochBatchSampler.sampler", "EpochBatchSampler.order",
                                      "EpochBatchSampler.batches", "EpochBatchSampler.__iter__",
                                      "EpochBatchSampler.__len__", "TensorLoader.__init__", "TensorLoader.__len__",
                                      "TensorLoader.__iter__", "TensorLoader.state_dict",
                                      "TensorLoader.load_state_dict", "split_indices", "resolve_on_device",
                                      "normalize"]),
             ["tests/test_data.py", "tests/test_pipelines.py", "tests/test_fake_cuda.py"], 80),
    # Where the files come from: verified raw files, Debian's .gz, corrupt or truncated ones, the
    # download, nothing; the IDX decoding (tiny stand-in files, test_data_files.py).
    "data_files": ("src/data.py", ("only", ["_sha256", "_check_raw_file", "_prepared", "_corrupt_files",
                                            "_writable_dir", "_decompress_system_files", "prepare_fashion_mnist",
                                            "read_idx", "load_raw", "load_split_tensors"]),
                   ["tests/test_data_files.py"], 80),
    # The theory beside the measurement: variances each init promises, the Gaussian gains of the
    # activations, the predicted and measured variance by depth, the flags (not the figure, nor
    # the callback's plumbing, which trains: test_probe.py's step-0 test covers it).
    "variance_probe": ("callbacks/variance_probe.py", ("only", ["init_variances", "activations_after", "_trapezoid",
                                                                "_standard_normal_trapezoid", "_gaussian_nodes",
                                                                "gaussian_moments", "_moment_table", "gaussian_gains",
                                                                "_softmax_gradient_table",
                                                                "softmax_gradient_second_moment", "mean_energy",
                                                                "predict", "measure",
                                                                "redraw", "probe_variances", "summarize",
                                                                "flag_lines", "_rounding_eps", "_rounding_bounds",
                                                                "rounding_noise"]),
                       ["tests/test_probe.py", "tests/test_probe_rounding.py", "tests/test_diagnostics.py"], 80),
    # probe.py's words: its settings, the sentences under the tables (trend, flags, gradients),
    # the rows (not the measuring: variance_probe; nor the sweep's combined table, whose one
    # test is an 8 s multirun per mutant).
    "probe_words": ("src/probe.py", ("only", ["_probe_settings", "header_arguments", "sci", "_ends",
                                              "trend_sentence", "flag_sentence", "gradient_sentence", "_shape",
                                              "table_rows"]),
                    ["tests/test_probe.py"], 80),
    # The loss landscape's numbers: flat vectors, directions, PCA of the path, the batched grid,
    # the memory plan, the settings, the grid's window, what the figures print (not the run
    # loading, the drawing, nor landscape_of_run: test_landscape.py trains for those).
    "landscape": ("src/landscape.py", ("only", ["Layout.of", "Layout.numel", "Layout.split", "Layout.flatten",
                                                "_epochs_done", "random_directions", "pca_of_path",
                                                "linear_and_activations", "_linear_params", "per_point_bytes",
                                                "evaluate_family", "evaluate_points", "evaluate_loop", "plain_loss",
                                                "fixed_subset", "memory_plan", "_pair", "read_settings",
                                                "grid_axis", "_window", "_rel", "_fmt_loss", "_loss_norm",
                                                "_loss_ticks", "short_name", "path_faithfulness"]),
                  ["tests/test_landscape_math.py"], 80),
    # The loss-surface playground: the surfaces, the config checks, the optimizers it builds, the
    # loop, the plot window, where the arrow for an end outside goes, the labels and the table (not
    # the drawing: plot_2d, plot_3d, mark_end's styles, run's files).
    "surfaces": ("src/surfaces.py", ("except", ["plot_2d", "plot_3d", "mark_end", "run"]),
                 ["tests/test_surfaces_math.py"], 80),
    # The training path's recorder: which steps, the weights of each, the files, the resume's clean-up.
    "weight_path": ("callbacks/weight_path.py", None, ["tests/test_weight_path.py"], 80),
    # Resuming: which checkpoint, its checks and messages, the atomic writer, the RNG states.
    "checkpointing": ("src/checkpointing.py", None, ["tests/test_checkpointing.py", "tests/test_evaluation.py"], 80),
    # TensorBoard's HParams tab: the trial's name, the columns, the values, the real metrics.
    "hparams": ("src/hparams.py", None, ["tests/test_hparams.py"], 80),
    # The LightningModule: the losses and accuracies it keeps and logs, checkpoint contents,
    # the config's optimizer settings over a resumed state, the records of optimizer and init.
    "module": ("src/module.py", None, ["tests/test_module.py", "tests/test_step_graph.py"], 80),
    # module.cuda_graph's replay: the outputs, the gradients, when a step runs eagerly, why a fit
    # does; cuda_capture's order of calls against recorded torch.cuda calls (what they compute
    # needs a GPU: tests/test_gpu.py).
    "step_graph": ("src/step_graph.py", None, ["tests/test_step_graph.py"], 80),
    # One Lightning callback for ours: each hook forwarded to the members that define it.
    "group": ("callbacks/group.py", None, ["tests/test_callback_group.py"], 80),
    # The small modules every run goes through: atomic writes, resolvers, the epoch line, the
    # graceful stop on SIGTERM / Ctrl-C (real signals during a tiny in-process fit), the sweep's
    # exit status, the step checkpoint's argument. All of each file, against test_plumbing.py.
    **{name: (path, None, ["tests/test_plumbing.py"], 80) for name, path in (
        ("utils", "src/utils.py"), ("progress", "callbacks/progress.py"),
        ("interrupt", "callbacks/interrupt.py"))},
    # The checkpoint callbacks: the step checkpoint's argument and its quiet save under the
    # module's own step; last.ckpt after every epoch and ModelCheckpoint's state key; the state
    # loaded from a moved run dir or into another one (test_step_checkpoint.py, no training).
    "step_checkpoint": ("callbacks/checkpoint.py", None, ["tests/test_plumbing.py", "tests/test_checkpointing.py",
                                                          "tests/test_step_checkpoint.py",
                                                          "tests/test_truth_training.py"], 80),
    # The resolvers, and the swept keys and job dir names they give the app (test_cli_units.py).
    "resolvers": ("src/resolvers.py", None, ["tests/test_plumbing.py", "tests/test_cli_units.py"], 80),
    # The sweep report's exit status (test_plumbing.py) and the refused sweep's folders (run_app).
    "hydra_callbacks": ("src/hydra_callbacks.py", None, ["tests/test_plumbing.py", "tests/test_cli_units.py"], 80),
    # The command line: the one `error:` line for each kind of bad input, how each ending exits,
    # the resume argv, the start line (in-process, real Hydra and OmegaConf exceptions).
    "cli": ("src/cli.py", None, ["tests/test_cli_units.py"], 80),
    # eval.py: which checkpoint a run dir means, its messages, accuracy and loss of a split.
    "evaluation": ("src/evaluation.py", None, ["tests/test_evaluation.py", "tests/test_eval_precision.py"], 80),
    # Where a number came from, and the config hash the sweep report groups jobs by.
    "provenance": ("src/provenance.py", None, ["tests/test_provenance.py"], 80),
    # train()'s first half: what no constructor checks, building from the config, how a
    # restarted multirun continues each job (in-process, no training); the end block.
    "training_setup": ("src/training.py", ("only", ["check_run_settings", "build_module", "build_callbacks",
                                                    "build_loggers", "continue_sweep_job", "config_changes",
                                                    "changes_on_resume", "first_try", "run_warnings", "print_end",
                                                    "duration_seconds"]),
                       ["tests/test_run_setup.py"], 80),
    # The results assembly: train() from `trainer.fit(` on, and what it calls to fill results.json
    # (the lines before it, building objects and the sweep-continue/resume logic, have their own
    # slower tests: test_endings.py, test_resume.py, test_determinism.py).
    "training": ("src/training.py", ("only", ["train", "_finite", "_stopped_early", "_not_best_val_tested",
                                              "_not_all_tested"], {"train": "trainer.fit("}),
                 ["tests/test_truth_training.py", "tests/test_truth_divergence.py"], 80),
}


def function_globs(path: str, which: tuple | None) -> list[str]:
    """mutmut name globs of the functions to mutate (empty: all of them)."""
    import ast

    if which is None:
        return []
    mode, names = which[:2]
    module = path[:-3].replace("/", ".")
    found = {}
    for node in ast.parse((ROOT / path).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = f"{module}.x_{node.name}__mutmut_*"
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = f"{module}.x\u01c1{node.name}\u01c1{item.name}__mutmut_*"
    chosen = [n for n in found if (n in names) == (mode == "only")]
    return [found[n] for n in chosen]


COPY = ["src", "callbacks", "conf", "tests", "train.py", "probe.py", "surfaces.py", "landscape.py", "eval.py",
        "pyproject.toml"]


def workspace(name: str, path: str, tests: list[str], which: tuple | None = None) -> Path:
    """A copy of the repo for one module, with mutmut's config in setup.cfg (pyproject.toml has
    no [tool.mutmut], so mutmut reads setup.cfg)."""
    ws = WORK / name
    keep = os.environ.get("MUTANTS_KEEP") == "1" and (ws / "mutants").is_dir()
    if not keep and ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in COPY:
        src, dst = ROOT / item, ws / item
        if dst.is_dir():
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dst)
    if which is not None and len(which) > 2:
        for function, marker in which[2].items():
            skip_lines_before(ws / path, function, marker)
    tests = [t for t in tests if (ROOT / t.split("::")[0]).exists()]
    cfg = ["[mutmut]", "source_paths =", "    src", "    callbacks", f"only_mutate = {path}",
           "also_copy =", "    conf", "    train.py", "    probe.py", "    surfaces.py", "    landscape.py", "    eval.py",
           "pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests] + [
           "pytest_add_cli_args =", "    -p", "    no:cacheprovider", ""]
    (ws / "setup.cfg").write_text("\n".join(cfg))
    # Tests that start `python train.py` run the mutated code in a subprocess, which inherits
    # MUTANT_UNDER_TEST; there mutmut's own hit recorder would assert on the `src.` prefix (see
    # mutmut_main). The subprocess's hits are never read: record nothing there.
    site = ws / ".mutmut_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('MUTANT_UNDER_TEST'):\n"
        "    import mutmut.stats\n"
        "    mutmut.stats.record_trampoline_hit = lambda name, caller=None: None\n")
    # The tests find the data at <repo>/data; mutmut runs them in <workspace>/mutants.
    (ws / "mutants").mkdir(exist_ok=True)
    data = ws / "mutants" / "data"
    if not data.exists():
        data.symlink_to((ROOT / "data").resolve())
    return ws


def _chosen(key: str, globs: list[str]) -> bool:
    return not globs or any(fnmatch(key, g) for g in globs)


def skip_lines_before(path: Path, function: str, marker: str) -> None:
    """In the workspace copy only: mutmut's `# pragma: no mutate start/end` around the statements
    of `function` before the one that contains `marker`, so mutmut leaves them alone."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {function}("))
    body = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("    ") and
                not lines[start:i + 1][-1].rstrip().endswith((",", "(")) and i > start
                and lines[i - 1].rstrip().endswith(":"))
    at = next(i for i in range(body, len(lines)) if marker in lines[i])
    while not (lines[at].startswith("    ") and not lines[at].startswith("     ")):
        at -= 1  # up to the statement of the function body that holds the marker
    lines[at:at] = ["    # pragma: no mutate end"]
    lines[body:body] = ["    # pragma: no mutate start"]
    path.write_text("\n".join(lines) + "\n")


def run_mutmut(ws: Path, path: str, globs: list[str], jobs: int) -> None:
    meta = ws / "mutants" / f"{path}.meta"
    names = globs
    if os.environ.get("MUTANTS_KEEP") == "1" and meta.exists():
        # Retest the previous survivors (and untested ones) only; killed mutants stay killed.
        names = _unsettled(meta, globs)
        if not names:
            return
    env = {**os.environ, "PROJECT_ROOT": str(ws / "mutants"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ws / ".mutmut_site"), os.environ.get("PYTHONPATH")]))}
    for _ in range(2):  # twice: a changed test selection makes mutmut forget earlier verdicts
        # mutmut draws a spinner on stdout; its full output goes to <workspace>/mutmut.log.
        with open(ws / "mutmut.log", "a") as log:
            subprocess.run([sys.executable, __file__, "--mutmut", "run", f"--max-children={jobs}", *names],
                           cwd=ws, env=env, check=False, stdout=log, stderr=subprocess.STDOUT)
        left = [k for k in _unsettled(meta, globs, codes=(None,))] if meta.exists() else []
        if not left:
            break
        names = left
    tail = (ws / "mutmut.log").read_text(errors="replace").replace("\r", "\n").splitlines()[-3:]
    print("\n".join(line.split("\u280b")[-1] for line in tail), flush=True)


def _unsettled(meta: Path, globs: list[str], codes=(None, 0, 33)) -> list[str]:
    """Mutants not (yet) killed: survived (0), no tests (33), not run (None)."""
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    return [k for k, code in exit_codes.items() if code in codes and _chosen(k, globs)]


def scores(ws: Path, path: str, globs: list[str]) -> dict:
    """Counts per status from mutmut's .meta file (exit codes -> status as mutmut names them)."""
    from mutmut.stats import status_by_exit_code

    meta = json.loads((ws / "mutants" / f"{path}.meta").read_text())
    counts: dict[str, int] = {}
    survivors = []
    for key, code in meta["exit_code_by_key"].items():
        if not _chosen(key, globs):
            continue
        status = status_by_exit_code[code] if code is not None else "not checked"
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests", "not checked", "suspicious"):
            survivors.append(f"{key}: {status}")
    counts["survivors"] = survivors
    return counts


def row(name: str, c: dict, target: int, seconds: float) -> str:
    killed = c.get("killed", 0) + c.get("timeout", 0) + c.get("segfault", 0)
    tested = sum(v for k, v in c.items() if k not in ("survivors", "skipped", "caught by type check"))
    score = 100 * killed / tested if tested else 0.0
    mark = "yes" if score >= target else "NO"
    return (f"| {name} | {MODULES[name][0]} | {tested} | {killed} | {c.get('survived', 0)} | "
            f"{c.get('no tests', 0)} | {c.get('timeout', 0)} | {score:.1f} % | {target} % | {mark} | {seconds:.0f} |")


def write_table(rows: dict[str, str], survivors: dict[str, list[str]]) -> None:
    lines = ["# Mutation scores", "", "Printed by `make mutants` (scripts/mutants.py); see docs/testing.md "
             "for what the survivors are.", "",
             "| module | file | mutants | killed | survived | no tests | timeout | score | target | met | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [rows[n] for n in MODULES if n in rows]
    lines += ["", "killed counts timeouts (a mutant that makes the tests hang is caught). "
              "Timings are wall seconds on the machine that ran it.", ""]
    for n in MODULES:
        if survivors.get(n):
            lines += [f"## Survivors: {n}", ""] + [f"- `{s}`" for s in survivors[n]] + [""]
    TABLE.write_text("\n".join(lines))


def previous_rows() -> dict[str, str]:
    """Rows of modules not run this time are kept from the last table."""
    if not TABLE.exists():
        return {}
    rows = {}
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in MODULES:
            rows[cells[0]] = line
    return rows


def previous_survivors() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    if not TABLE.exists():
        return out
    for line in TABLE.read_text().splitlines():
        if line.startswith("## Survivors: "):
            current = line.split(": ", 1)[1]
            out[current] = []
        elif current and line.startswith("- `"):
            out[current].append(line[3:-1])
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--mutmut"]:
        return mutmut_main(argv[1:])
    if argv[:1] == ["--list"]:
        for n, (path, which, tests, target) in MODULES.items():
            what = "all functions" if which is None else f"{which[0]} {', '.join(which[1])}"
            if which is not None and len(which) > 2:
                what += "".join(f" ({f}: from the line with {m!r} on)" for f, m in which[2].items())
            print(f"{n:11s} {path:24s} >= {target} %  {what}\n{'':11s} tests: {' '.join(tests)}")
        return 0
    names = argv or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"error: unknown module {unknown[0]!r}; one of: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    jobs = int(os.environ.get("MUTANTS_JOBS", "2"))
    rows, survivors = previous_rows(), previous_survivors()
    status = 0
    for name in names:
        path, which, tests, target = MODULES[name]
        if not (ROOT / path).exists():
            print(f"skip {name}: {path} does not exist")
            continue
        globs = function_globs(path, which)
        started = time.time()
        ws = workspace(name, path, tests, which)
        run_mutmut(ws, path, globs, jobs)
        seconds = time.time() - started
        c = scores(ws, path, globs)
        survivors[name] = c["survivors"]
        rows[name] = row(name, c, target, seconds)
        print(rows[name], flush=True)
        if "| NO |" in rows[name]:
            status = 1
    write_table(rows, survivors)
    print(TABLE.read_text())
    return status


def mutmut_main(args: list[str]) -> int:
    """mutmut's CLI, told that `src` is a package here, not a src-layout directory.

    mutmut 3 names a mutant after its file with a leading `src.` stripped (it assumes
    src/<package>/...), and puts mutants/src on sys.path; this repo imports `src.optim`, so the
    names would never match the running module and every mutant would survive untested."""
    import mutmut.__main__ as mm
    import mutmut.mutation.file_mutation as fm
    import mutmut.mutation.trampoline as tr
    import mutmut.stats as st
    import mutmut.utils.file_utils as fu
    import mutmut.utils.format_utils as fmt

    def get_mutant_name(relative_source_path: Path, mutant_method_name: str) -> str:
        module = str(relative_source_path)[: -len(relative_source_path.suffix)].replace(os.sep, ".")
        return f"{module}.{mutant_method_name}".replace(".__init__.", ".")

    def setup_source_paths() -> None:
        sys.path.insert(0, str(Path("mutants").absolute()))
        here = Path(".").resolve()
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]

    def record_trampoline_hit(name: str, caller: str | None = None) -> None:
        # mutmut's own asserts the name does not start with `src.`; otherwise the same.
        st.state()._stats.add(name)
        if caller is not None and st.config().track_dependencies:
            st.state().function_dependencies[name].add(caller)

    collect_stats = mm.collect_or_load_stats

    def collect_or_load_stats(*args, **kwargs):
        # mutmut records a test as covering a function only if the function ran during that
        # test; a module-scoped fixture runs in its first test only, so the other tests of the
        # file, which assert on the fixture's result, would never be run against the mutant.
        # Each function gets every test of the files that reach it.
        collect_stats(*args, **kwargs)
        by_file: dict[str, set[str]] = {}
        for test in mm.state().duration_by_test:
            by_file.setdefault(test.split("::")[0], set()).add(test)
        for tests in mm.state().tests_by_mangled_function_name.values():
            for file in {t.split("::")[0] for t in tests}:
                tests |= by_file.get(file, set())

    mm.collect_or_load_stats = collect_or_load_stats
    for module in (fmt, fm, mm):
        module.get_mutant_name = get_mutant_name
    for module in (st, tr):
        module.record_trampoline_hit = record_trampoline_hit
    for module in (fu, mm):
        module.setup_source_paths = setup_source_paths
    try:
        mm.cli(args, standalone_mode=False)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
