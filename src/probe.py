"""`probe(cfg)`: the tutorial's variance tables for one init, without training.

Builds the model exactly as `train(cfg)` does (same seed, same order of random draws, so the
numbers equal step 0 of a training run), runs the diagnostic batch (first 1,024 training
images, unshuffled) and reports per linear layer: activation variance, weight-gradient variance
(cross-entropy on that batch) and weight variance. Writes probe.json, the distribution figures
and a TensorBoard run into the run dir. `ProbeSummary` (a Hydra callback) joins the jobs of a
multirun into probe_summary.md + probe_summary.csv in the sweep dir.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from callbacks.diagnostics import (
    activations_of,
    distribution_figures,
    linear_layers,
    save_figures,
    tensor_stats,
    weight_gradients_of,
    weights_of,
)
from src.report import find_jobs
from src.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

KINDS = ("activations", "gradients", "weights")


def probe(cfg: DictConfig) -> dict:
    """Initialise the configured model, measure it on the diagnostic batch, write probe.json."""
    from src.module import ClassifierModule

    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Same order as train(): seed, data, init, then the model, so the weights are step 0's.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    init_scheme = hydra.utils.instantiate(cfg.init)
    datamodule.prepare_data()
    module = ClassifierModule(hydra.utils.instantiate(cfg.model), init_scheme=init_scheme)
    net = module.net.to(cfg.get("device", "cpu"))
    n = int(cfg.batch_size)
    x, y = (t.to(net_device(net)) for t in datamodule.diagnostic_batch(n))

    values = {
        "activations": activations_of(net, x),
        "gradients": weight_gradients_of(net, x, y),
        "weights": weights_of(net),
    }
    stats = {kind: tensor_stats(v) for kind, v in values.items()}
    layers = linear_layers(net)
    shapes = {name: [m.in_features, m.out_features] for name, m in layers.items()}

    result = {kind: {name: s["var"] for name, s in stats[kind].items()} for kind in KINDS}
    result["meta"] = {
        "init": _choice("init") or str(cfg.init.get("_target_", "")).rsplit(".", 1)[-1],
        "init_cfg": OmegaConf.to_container(cfg.init, resolve=True),
        "act_fn": cfg.model.act_fn,
        "hidden_sizes": list(cfg.model.hidden_sizes),
        "seed": int(cfg.seed),
        "batch_size": int(x.shape[0]),
        "shapes": shapes,  # [in, out]
        "activation_means": {name: s["mean"] for name, s in stats["activations"].items()},
        "nonfinite": {kind: {k: s["nonfinite"] for k, s in stats[kind].items() if s["nonfinite"]}
                      for kind in KINDS},
        "overrides": _overrides(),
        "output_dir": str(out),
    }
    atomic_write_json(out / "probe.json", result)
    # Every run dir has a results.json with a status (src/entry.py writes the failed ones), so
    # the sweep report of conf/hydra/default.yaml counts probe jobs like training jobs.
    atomic_write_json(out / "results.json", {"status": "ok", "task": "probe", "probe": str(out / "probe.json"),
                                             "output_dir": str(out),
                                             "config": OmegaConf.to_container(cfg, resolve=True)})

    figures = distribution_figures(net, (x, y), title_suffix=f" ({result['meta']['init']}, {cfg.model.act_fn})")
    writer = _tensorboard(out, values) if cfg.get("tensorboard", True) else None
    save_figures(figures, out / "figures", writer, step=0)
    if writer is not None:
        writer.close()

    print_table(result)
    log.info("probe results in %s", out / "probe.json")
    return result


def net_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def _tensorboard(out: Path, values: dict):
    """The probe as step 0 of a TensorBoard run, written by the training callbacks' own code:
    the same tags, statistics and histograms."""
    from torch.utils.tensorboard import SummaryWriter

    from callbacks.diagnostics import ActivationStats, GradientStats, WeightStats

    writer = SummaryWriter(str(out / "tensorboard"))
    for stats in (ActivationStats(), GradientStats(), WeightStats()):
        stats.log_values(writer, values[stats.kind], 0)
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
# Tables
# ---------------------------------------------------------------------------------------------


def table_rows(result: dict) -> list[dict]:
    shapes = result["meta"]["shapes"]
    return [{"layer": name, "shape": f"{shapes[name][0]}→{shapes[name][1]}",
             "activation_var": result["activations"].get(name),
             "gradient_var": result["gradients"].get(name),
             "weight_var": result["weights"].get(name)} for name in shapes]


def fmt(v) -> str:
    return "—" if v is None or v != v else f"{v:.4g}"


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    meta = result["meta"]
    table = Table(title=f"init={meta['init']}  act_fn={meta['act_fn']}  "
                        f"batch={meta['batch_size']}  seed={meta['seed']}")
    for col, justify in (("layer", "left"), ("shape in→out", "left"), ("activation var", "right"),
                         ("weight-grad var", "right"), ("weight var", "right")):
        table.add_column(col, justify=justify)
    for row in table_rows(result):
        table.add_row(row["layer"], row["shape"], fmt(row["activation_var"]), fmt(row["gradient_var"]),
                      fmt(row["weight_var"]))
    Console(soft_wrap=True).print(table)


# ---------------------------------------------------------------------------------------------
# Multirun summary
# ---------------------------------------------------------------------------------------------


def summarize_sweep(sweep_dir: str | Path) -> tuple[Path, Path, list[str]] | None:
    """Join every job's probe.json under `sweep_dir` into probe_summary.md and .csv.
    Returns (md, csv, problems): one line per job that wrote no probe.json."""
    sweep_dir = Path(sweep_dir)
    jobs, problems = [], []
    for job_dir in find_jobs(sweep_dir):
        try:
            jobs.append((job_dir.name, json.loads((job_dir / "probe.json").read_text())))
        except (OSError, json.JSONDecodeError):
            problems.append(f"job {job_dir.name}: {_failure(job_dir)}")
    if not jobs:
        log.warning("no probe.json under %s; no summary written", sweep_dir)
        return None

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["job", "init", "act_fn", "layer", "in", "out", "activation_var", "gradient_var", "weight_var"])
    for job, r in jobs:
        for name, (d_in, d_out) in r["meta"]["shapes"].items():
            w.writerow([job, r["meta"]["init"], r["meta"]["act_fn"], name, d_in, d_out,
                        *(_csv(r[kind].get(name)) for kind in KINDS)])
    csv_path = sweep_dir / "probe_summary.csv"
    atomic_write_text(csv_path, buf.getvalue())

    # Markdown: one table per quantity, a row per job, a column per layer (the tutorial's view).
    layers = list(dict.fromkeys(name for _, r in jobs for name in r["meta"]["shapes"]))
    lines = [f"# Probe summary: {len(jobs)} jobs in {sweep_dir}", ""]
    for kind, title in zip(KINDS, ("Activation variance", "Weight-gradient variance", "Weight variance"), strict=True):
        lines += [f"## {title}", "", "| init | act_fn | " + " | ".join(layers) + " |",
                  "|---|---|" + "---:|" * len(layers)]
        for _, r in jobs:
            cells = [fmt(r[kind].get(name)) for name in layers]
            lines.append(f"| {_md_init(r['meta'])} | {r['meta']['act_fn']} | " + " | ".join(cells) + " |")
        lines.append("")
    if problems:
        lines += ["## Jobs without a result", "", *(f"- {p}" for p in problems), ""]
    md_path = sweep_dir / "probe_summary.md"
    atomic_write_text(md_path, "\n".join(lines))
    return md_path, csv_path, problems


def _failure(job_dir: Path) -> str:
    try:  # src.entry.run_task marks a job that hit a user error
        return "failed: " + json.loads((job_dir / "results.json").read_text()).get("error", "?")
    except (OSError, json.JSONDecodeError):
        return "incomplete: no probe.json (still running, killed, or crashed before writing it)"


def _md_init(meta: dict) -> str:
    # Name the init with its settings that differ from the scheme's own (normal std=0.1, const fill).
    extra = [f"{k}={v}" for k, v in meta.get("init_cfg", {}).items() if k != "_target_" and v is not None]
    return meta["init"] + (f" ({', '.join(extra)})" if extra else "")


def _csv(v):
    return "" if v is None else repr(float(v))


class ProbeSummary(Callback):
    """Hydra callback (conf/probe.yaml, hydra.callbacks): after a multirun, one combined table.
    The exit status is the sweep report's business (conf/hydra/default.yaml)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        written = summarize_sweep(sweep_dir) if sweep_dir.is_dir() else None
        if written is not None:
            md, csv_path, _ = written
            print(md.read_text(), flush=True)
            log.info("probe summary: %s and %s", md, csv_path)
