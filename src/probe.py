"""`probe(cfg)`: the tutorial's variance tables for one init, without training, with the theory beside
the measurement.

Builds the model exactly as `train(cfg)` does (same seed, same order of random draws, so draw 0 on
the diagnostic batch equals step 0 of a training run), then

- the tutorial's numbers (draw 0, first 1,024 training images): activation, weight-gradient and
  weight variance per linear layer (probe.json keys `activations`, `gradients`, `weights`);
- theory beside measurement (key `variance`, callbacks/variance_probe.py): per layer the forward
  and backward variance the mean-field formula predicts, the measured mean and 95 % band over
  `probe.draws` init draws x `probe.batches` batches, and a flag where they disagree.

Writes probe.json, figures/probe.png (variance vs depth), the distribution figures and a
TensorBoard run into the run dir, and prints three tables, each with one line on what to look for.
`ProbeSummary` (a Hydra callback) joins the jobs of a multirun into probe_summary.md + .csv.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import textwrap
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from callbacks.diagnostics import (
    activations_of,
    distribution_figures,
    init_label,
    linear_layers,
    register_depth_chart,
    save_figures,
    tensor_stats,
    weight_gradients_of,
    weights_of,
)
from callbacks.variance_probe import (  # noqa: F401  (trend_sentence: probe's API, tests use it)
    QUANTITIES,
    _finite,
    flag_lines,
    probe_title,
    probe_variances,
    save_probe_figure,
    trend_sentence,
    trends,
    variance_figure,
)
from src.utils import atomic_write_json, atomic_write_text, read_json_object

log = logging.getLogger(__name__)

KINDS = ("activations", "gradients", "weights")
# Overrides that say where things are, not what is measured: never in a header.
_PLACE_KEYS = ("paths.", "hydra.", "data.data_dir", "tensorboard", "device")


def probe(cfg: DictConfig) -> dict:
    """Initialise the configured model, measure it, write probe.json and the figures."""
    from src.module import ClassifierModule

    settings = _probe_settings(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Same order as train(): seed, data, init, then the model, so the weights are step 0's.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    init_scheme = hydra.utils.instantiate(cfg.init)
    datamodule.prepare_data()
    module = ClassifierModule(hydra.utils.instantiate(cfg.model), init_scheme=init_scheme)
    net = module.net.to(settings["device"])
    n = settings["batch_size"]
    device = next(net.parameters()).device
    x_all, y_all = (t.to(device) for t in datamodule.diagnostic_batch(n * settings["batches"]))
    batches = [(x_all[i:i + n], y_all[i:i + n]) for i in range(0, len(x_all), n)]
    x, y = batches[0]

    values = {
        "activations": activations_of(net, x),
        "gradients": weight_gradients_of(net, x, y),
        "weights": weights_of(net),
    }
    stats = {kind: tensor_stats(v) for kind, v in values.items()}
    layers = linear_layers(net)
    shapes = {name: [m.in_features, m.out_features] for name, m in layers.items()}
    report = probe_variances(net, init_scheme, batches, draws=settings["draws"], seed=int(cfg.seed),
                             tolerance=settings["tolerance"])
    report["warnings"] = flag_lines(report)
    if len(x_all) < n * settings["batches"]:  # a training split smaller than asked for: say what was measured
        sizes = sorted({len(b[0]) for b in batches}, reverse=True)
        line = (f"probe: asked for {settings['batches']} batches of {n} images, the training split has "
                f"{len(x_all)}: measured on {len(batches)} batch{'es' if len(batches) != 1 else ''} of "
                f"{' and '.join(map(str, sizes))} images")
        report["warnings"].insert(0, line)
        print(f"warning: {line}", file=sys.stderr, flush=True)

    result = {kind: {name: s["var"] for name, s in stats[kind].items()} for kind in KINDS}
    init_name = _choice("init") or str(cfg.init.get("_target_", "")).rsplit(".", 1)[-1]
    result["variance"] = report
    result["meta"] = {
        "init": init_name,
        "init_cfg": OmegaConf.to_container(cfg.init, resolve=True),
        "act_fn": cfg.model.act_fn,
        "hidden_sizes": list(cfg.model.hidden_sizes),
        "seed": int(cfg.seed),
        "batch_size": int(x.shape[0]),
        "shapes": shapes,  # [in, out]
        "activation_means": {name: s["mean"] for name, s in stats["activations"].items()},
        "gradient_means": {name: s["mean"] for name, s in stats["gradients"].items()},
        # draw 0's layers whose ∂loss/∂output is float32 rounding noise: their weight gradient is too
        "rounding_noise_gradients": report["rounding_noise_draw_0"],
        "nonfinite": {kind: {k: s["nonfinite"] for k, s in stats[kind].items() if s["nonfinite"]}
                      for kind in KINDS},
        "input_second_moment": float(x.detach().double().pow(2).mean()),
        "arguments": header_arguments(result_meta_init(init_name, cfg), cfg.model.act_fn, _overrides()),
        "overrides": _overrides(),
        "output_dir": str(out),
    }
    atomic_write_json(out / "probe.json", result)

    label = f"{result['meta']['arguments']}"
    figures = {f"distributions/{k}": f for k, f in
               distribution_figures(net, (x, y), title=f"{label} · at init").items()}
    writer = _tensorboard(out, values) if cfg.get("tensorboard", True) else None
    save_figures(figures, out / "figures", writer, step=0)
    save_probe_figure(variance_figure(report, probe_title(label, report)), out / "probe.png", writer)
    if writer is not None:
        writer.close()

    print_tables(result)
    log.info("probe results in %s", out / "probe.json")
    # Every run dir has a results.json with a status (src/cli.py writes the failed ones), so a
    # sweep's tooling counts probe jobs like training jobs. `ok` is written last: a stop before it
    # (mid-figure, mid-table) is then reported and marked as interrupted, not as a finished run
    # whose figures and TensorBoard run are missing.
    atomic_write_json(out / "results.json", {"status": "ok", "task": "probe", "probe": str(out / "probe.json"),
                                             "warnings": report["warnings"], "output_dir": str(out),
                                             "config": OmegaConf.to_container(cfg, resolve=True)})
    return result


def _probe_settings(cfg: DictConfig) -> dict:
    """probe.py's own values, checked before any work: each bad one is one `error:` line."""
    from src.data import check_model_fits_data
    from src.errors import ConfigError, integer, seed_value

    seed_value("seed", cfg.get("seed", 0))  # as train.py (conf/probe.yaml always has one)
    check_model_fits_data(cfg.get("model"))
    p = cfg.get("probe")
    if p is None:
        p = {}
    if not isinstance(p, (DictConfig, dict)):
        raise ConfigError(f"probe={p!r} is not a group of settings; set its keys: probe.draws=10 probe.batches=4 "
                          "probe.tolerance=0.1")
    settings = {"draws": integer("probe.draws", p.get("draws", 10)),
                "batches": integer("probe.batches", p.get("batches", 4)),
                "batch_size": integer("batch_size", cfg.get("batch_size", 1024))}
    tolerance = p.get("tolerance", 0.1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ConfigError(f"probe.tolerance={tolerance!r} must be a number >= 0 (relative, e.g. 0.1)")
    settings["tolerance"] = float(tolerance)
    if not isinstance(cfg.get("tensorboard", True), bool):  # `maybe` read as true
        raise ConfigError(f"tensorboard={cfg.get('tensorboard')!r} must be true or false")
    device = str(cfg.get("device", "cpu"))
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a device; use cpu, cuda or cuda:<index>") from None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not supported here; use cpu, cuda or cuda:<index>")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but CUDA is not available on this machine; use device=cpu")
    settings["device"] = device
    return settings


def result_meta_init(init_name: str, cfg: DictConfig) -> str:
    """`normal std=0.1`: the init's config name with its non-null settings."""
    label = init_label(OmegaConf.to_container(cfg.init, resolve=True))
    return " ".join([init_name, *label.split(" ")[1:]])


def header_arguments(init: str, act_fn: str, overrides: list[str]) -> str:
    """`init=normal std=0.1 act_fn=identity` plus every other non-default argument given."""
    rest = [o for o in overrides if not o.lstrip("+~").startswith(("init", "model.act_fn", *_PLACE_KEYS))]
    return " ".join([f"init={init}", f"act_fn={act_fn}", *rest])


def _tensorboard(out: Path, values: dict):
    """The probe as step 0 of a TensorBoard run, written by the training callbacks' own code:
    the same tags, statistics, histograms and depth charts."""
    from torch.utils.tensorboard import SummaryWriter

    from callbacks.diagnostics import ActivationStats, GradientStats, WeightStats

    writer = SummaryWriter(str(out / "tensorboard"))
    for stats in (ActivationStats(), GradientStats(var_band=None), WeightStats()):
        stats.log_values(writer, values[stats.kind], 0)
        register_depth_chart(writer, stats.kind)
    return writer


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # no Hydra app running (tests calling probe directly)
        return None


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


# ---------------------------------------------------------------------------------------------
# Tables: one number format per column, one sentence under each on what to look for
# ---------------------------------------------------------------------------------------------


def sci(v) -> str:
    """Every variance in one format: 3 significant digits, scientific (1.02e+00, 9.99e-05)."""
    return "—" if v is None or v != v else f"{v:.2e}"


def not_compared(report: dict, quantity: str) -> dict[str, list[str]]:
    """{reason: [layer, ...]} for the layers whose prediction was never held against a band: they
    are neither flagged nor explained."""
    reasons: dict[str, list[str]] = {}
    for name, row in report["layers"].items():
        r = row[quantity]
        if not _finite(r["mean"]):
            why = "the measured variance is not finite"
        elif not _finite(r["predicted"]):
            why = "the predicted variance is not finite"
        elif not _finite(r["lo"]) or not _finite(r["hi"]):
            why = "one draw gives no band; probe.draws >= 2 does"
        else:
            continue
        reasons.setdefault(why, []).append(name)
    return reasons


def rounding_zeros(report: dict, quantity: str) -> list[str]:
    """The layers where measured and predicted are both ≈ 0: the measurement is rounding noise and
    the prediction is no larger (callbacks/variance_probe.py summarize), which agree."""
    return [name for name, row in report["layers"].items()
            if row[quantity].get("numerically_zero") and not row[quantity]["flag"]]


def flag_sentence(report: dict, quantity: str) -> str:
    flagged = report["flags"][quantity]
    skipped = not_compared(report, quantity)
    zeros = rounding_zeros(report, quantity)
    total = len(report["layers"])
    n_skipped = sum(len(names) for names in skipped.values())
    why = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in skipped.items())
    if n_skipped == total:
        return f"No layer could be compared with the prediction: {why}."
    both_zero = (f"Measured and predicted are both ≈ 0 at {', '.join(zeros)} (the measurement is float32 rounding "
                 "noise, docs/diagnostics.md)") if zeros else ""
    banded = total - n_skipped - len(zeros) - len(flagged)  # compared against the band and explained by it
    if flagged:
        verdict = (f"Flagged ({', '.join(flagged)}): measurement and prediction differ by more than {report['draws']} "
                   "draws and the theory's tolerance explain; an assumption fails there (docs/diagnostics.md).")
        verdict += f" {both_zero}." if zeros else ""
    elif not banded:
        verdict = f"{both_zero}: the formula explains {'it' if not n_skipped else 'it there'}."
    elif not n_skipped and not zeros:
        verdict = ("The prediction lies inside the band (or within the theory's tolerance) at every layer: "
                   "the formula explains it.")
    else:
        others = "other " if zeros else ""
        layers = f"the 1 {others}layer" if banded == 1 else f"all {banded} {others}layers"
        inside = (f"the prediction lies inside the band (or within the theory's tolerance) at {layers}"
                  f"{' compared' if n_skipped else ''}")
        verdict = (f"{both_zero}, and {inside}: the formula explains {'it' if not n_skipped else 'it there'}." if zeros
                   else f"{inside[0].upper()}{inside[1:]}: the formula explains it there.")
    return f"{verdict} {n_skipped} of {total} layers not compared: {why}." if n_skipped else verdict


WIDTH = 80  # the terminal the tables are laid out for


def _paragraph(text: str) -> str:
    """A sentence under a table, wrapped at WIDTH with the tables' indent (it ran to 236 columns)."""
    return textwrap.fill(text, width=WIDTH, initial_indent="  ", subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)


def print_tables(result: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    meta, report = result["meta"], result["variance"]
    names = list(meta["shapes"])
    batches = f"{report['batches']} batch{'es' if report['batches'] != 1 else ''}"
    console.print(f"[bold]probe[/bold]  {meta['arguments']}   (seed {meta['seed']}, {report['draws']} draws × "
                  f"{batches} of {report['batch_size']} images)")
    titles = {"forward": "Forward: variance of each Linear's output",
              "backward": "Backward: variance of ∂loss/∂(Linear output), per-sample loss"}
    said = trends(report)
    for q in QUANTITIES:
        # One line a row in 80 columns: the band as one word without spaces, no column wrapped
        # (its cell broke every row in two: `7.77e+00 –` / `8.03e+00`).
        table = Table(title=titles[q], title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for col, justify in (("layer", "left"), ("in→out", "left"), ("predicted", "right"),
                             ("measured", "right"), ("95 % band", "center"),
                             ("meas/pred", "right"), ("flag", "center")):
            table.add_column(col, justify=justify, no_wrap=True)
        skipped = {layer for group in not_compared(report, q).values() for layer in group}
        zeros = set(rounding_zeros(report, q))
        for name in names:
            r = report["layers"][name][q]
            ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
            # —: no verdict, not a pass; ≈0: both numerically zero, which agree
            flag = "!" if r["flag"] else "—" if name in skipped else "≈0" if name in zeros else ""
            table.add_row(name, _shape(meta, name), sci(r["predicted"]), sci(r["mean"]),
                          f"{sci(r['lo'])}–{sci(r['hi'])}", ratio, flag)
        console.print(table)
        console.print(_paragraph(f"{said[q]} {flag_sentence(report, q)}") + "\n")

    table = Table(title="The tutorial's numbers (draw 0, the diagnostic batch)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col, justify in (("layer", "left"), ("in→out", "left"), ("activation var", "right"),
                         ("weight-grad var", "right"), ("weight var", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for row in table_rows(result):
        table.add_row(row["layer"], row["shape"], sci(row["activation_var"]), sci(row["gradient_var"]),
                      sci(row["weight_var"]))
    console.print(table)
    console.print(_paragraph(gradient_sentence(result)))


def gradient_sentence(result: dict) -> str:
    grads = {k: v for k, v in result["gradients"].items() if v is not None and v == v}
    means = result["meta"].get("gradient_means", {})
    # draw 0's layers whose ∂loss/∂output is rounding noise: their weight gradient (that δ times
    # the layer's input) is noise too, however it compares with its own mean
    noise = set(result["meta"].get("rounding_noise_gradients") or [])
    # "All equal" relative to the gradient's own size: a tiny but varied gradient is not symmetric.
    zero = [k for k, v in grads.items() if k in noise or v <= 1e-12 * (means.get(k) or 0.0) ** 2 or v == 0.0]
    if zero:
        return (f"Weight-gradient variance ≈ 0 in {', '.join(zero)}: every unit of those layers gets the same "
                "gradient, so they stay identical (symmetry never broken).")
    positive = [v for v in grads.values() if v > 0]
    if len(positive) < 2:
        return "Weight-gradient variance: too few layers to compare."
    spread = max(positive) / min(positive)
    return (f"Weight-gradient variance spans ×{spread:.3g} across layers: one learning rate suits every layer "
            "only when this is small (the tutorial's reason to balance gradients).")


def _shape(meta: dict, name: str) -> str:
    d_in, d_out = meta["shapes"][name]
    return f"{d_in}→{d_out}"


def table_rows(result: dict) -> list[dict]:
    shapes = result["meta"]["shapes"]
    return [{"layer": name, "shape": f"{shapes[name][0]}→{shapes[name][1]}",
             "activation_var": result["activations"].get(name),
             "gradient_var": result["gradients"].get(name),
             "weight_var": result["weights"].get(name)} for name in shapes]


# ---------------------------------------------------------------------------------------------
# Multirun summary
# ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ["job", "init", "act_fn", "layer", "in", "out", "activation_var", "gradient_var", "weight_var",
               *(f"{q}_{s}" for q in QUANTITIES for s in ("predicted", "mean", "lo", "hi", "flag"))]


def summarize_sweep(sweep_dir: str | Path, bad_statuses=None) -> tuple[Path, Path, list[str]] | None:
    """Join every job's probe.json under `sweep_dir` into probe_summary.md and .csv.
    Returns (md, csv, problems): one line per job that wrote no probe.json or has a bad status."""
    from src.report import BAD_STATUSES, find_jobs, load_job

    bad_statuses = BAD_STATUSES if bad_statuses is None else tuple(bad_statuses)
    sweep_dir = Path(sweep_dir)
    jobs, problems = [], []
    for job_dir in find_jobs(sweep_dir):
        job = load_job(job_dir)
        record = read_json_object(job_dir / "probe.json")
        if not isinstance(record.get("meta"), dict):  # none, or not one probe.py wrote
            if job.status in bad_statuses or job.status == "ok":
                problems.append(f"job {job_dir.name}: {job.status}: {job.error or 'no readable probe.json'}")
            continue
        jobs.append((job_dir.name, record))
        if job.status in bad_statuses:
            problems.append(f"job {job_dir.name}: {job.status}: {job.error}")
    if not jobs:
        log.warning("no probe.json under %s; no summary written", sweep_dir)
        return None

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for job, r in jobs:
        variance = (r.get("variance") or {}).get("layers", {})
        for name, (d_in, d_out) in r["meta"]["shapes"].items():
            extra = []
            for q in QUANTITIES:
                row = (variance.get(name) or {}).get(q) or {}
                extra += [_csv(row.get("predicted")), _csv(row.get("mean")), _csv(row.get("lo")),
                          _csv(row.get("hi")), "" if row.get("flag") is None else str(bool(row["flag"]))]
            w.writerow([job, r["meta"]["init"], r["meta"]["act_fn"], name, d_in, d_out,
                        *(_csv(r[kind].get(name)) for kind in KINDS), *extra])
    csv_path = sweep_dir / "probe_summary.csv"
    atomic_write_text(csv_path, buf.getvalue())

    # Markdown: one table per quantity, a row per job, a column per layer (the tutorial's view).
    layers = list(dict.fromkeys(name for _, r in jobs for name in r["meta"]["shapes"]))
    lines = [f"# Probe summary: {len(jobs)} jobs in {sweep_dir}", "",
             "Variances in one format (3 significant digits). Cells of the first two tables: measured mean "
             "over the draws (predicted); `!` = flagged, the prediction is off by more than the band and "
             "the theory's tolerance explain; `≈0` = what was measured is float32 rounding noise "
             "(docs/diagnostics.md).", ""]
    for q, title, look in (
            ("forward", "Forward: variance of each Linear's output", "Read along a row: a constant row is "
             "variance-preserving (Kaiming + ReLU); a row shrinking or growing by a factor per layer vanishes "
             "or explodes."),
            ("backward", "Backward: variance of ∂loss/∂(Linear output)", "Read a row from the right: the "
             "gradient reaching the first layers; a steady fall towards the left is a vanishing gradient.")):
        lines += [f"## {title}", "", "| init | act_fn | " + " | ".join(layers) + " |",
                  "|---|---|" + "---:|" * len(layers)]
        for _, r in jobs:
            variance = (r.get("variance") or {}).get("layers", {})
            cells = []
            for name in layers:
                row = (variance.get(name) or {}).get(q)
                measured = "≈0" if row and row.get("numerically_zero") else sci(row["mean"]) if row else ""
                cells.append("—" if not row else f"{measured} ({sci(row['predicted'])}){' !' if row['flag'] else ''}")
            lines.append(f"| {_md_init(r['meta'])} | {r['meta']['act_fn']} | " + " | ".join(cells) + " |")
        lines += ["", look, ""]
    for kind, title, look in zip(
            KINDS, ("Activation variance (draw 0)", "Weight-gradient variance (draw 0)", "Weight variance (draw 0)"),
            ("The tutorial's printed numbers: compare a row with the tutorial's table for the same init.",
             "A value ≈ 0 in a hidden layer means every unit gets the same gradient (constant init).",
             "What the init drew; the predicted variances above start from these formulas."), strict=True):
        lines += [f"## {title}", "", "| init | act_fn | " + " | ".join(layers) + " |",
                  "|---|---|" + "---:|" * len(layers)]
        for _, r in jobs:
            cells = [sci(r[kind].get(name)) for name in layers]
            lines.append(f"| {_md_init(r['meta'])} | {r['meta']['act_fn']} | " + " | ".join(cells) + " |")
        lines += ["", look, ""]
    if problems:
        lines += ["## Jobs without a result", "", *(f"- {p}" for p in problems), ""]
    md_path = sweep_dir / "probe_summary.md"
    atomic_write_text(md_path, "\n".join(lines))
    return md_path, csv_path, problems


def _md_init(meta: dict) -> str:
    # Name the init with its settings that differ from the scheme's own (normal std=0.1, const fill).
    extra = [f"{k}={v}" for k, v in meta.get("init_cfg", {}).items() if k != "_target_" and v is not None]
    return meta["init"] + (f" ({', '.join(extra)})" if extra else "")


def _csv(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


class ProbeSummary(Callback):
    """Hydra callback of conf/probe.yaml: after a multirun, one combined table (probe_summary.md
    + .csv) and nothing else — it replaces the training sweep report there. Exit status as the
    sweep report's (src/hydra_callbacks.py): 1 when a job has a status in `fail_on`."""

    def __init__(self, exit_on_failure: bool = True, fail_on: list[str] | None = None, **_report_settings) -> None:
        # _report_settings: the replaced sweep report's other keys (conf/hydra/default.yaml).
        self.exit_on_failure = exit_on_failure
        self.fail_on = list(fail_on) if fail_on is not None else None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        written = summarize_sweep(sweep_dir, self.fail_on)
        problems = written[2] if written is not None else [f"no probe.json under {sweep_dir}"]
        if written is not None:
            md, csv_path, _ = written
            print(md.read_text(), flush=True)
            log.info("probe summary: %s and %s", md, csv_path)
        from src.hydra_callbacks import say_failures

        say_failures(problems, self.exit_on_failure)


def net_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device
