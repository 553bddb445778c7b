"""A run's row in TensorBoard's HParams tab.

TensorBoard sorts the experiment's hyperparameters by name and ticks the first five as its
default columns, so the experiment declares only the swept axes of the sweep (`optim`, `init`,
`lr`, `seed`, …) and a few that always matter (`optim`, `init`, `lr`, `status`); every value
still travels with the run. Metrics are the run's real `hp/test_acc` and
`hp/best_val_acc`, absent when the run has none (diverged, interrupted, skip_test) — never a 0.0
stand-in. The trial is named by the job's swept values (`adam · kaiming`); a single run's own
overrides are its columns and its name (`normal · std=0.1 · act_fn=tanh`), then its run dir.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

METRICS = ("hp/test_acc", "hp/best_val_acc")
# Where an override's key lands among the hyperparameters (`optim.lr=…` -> lr).
OVERRIDE_TO_HPARAM = {"optim": "optim", "init": "init", "seed": "seed", "optim.lr": "lr",
                      "optim.momentum": "momentum", "optim.weight_decay": "weight_decay",
                      "optim.betas": "beta1", "init.std": "init_std", "init.fill": "init_fill",
                      "init.nonlinearity": "init_nonlinearity", "model.act_fn": "act_fn",
                      "model.hidden_sizes": "hidden_sizes", "data.batch_size": "batch_size",
                      "trainer.accelerator": "accelerator", "trainer.max_epochs": "max_epochs"}
ALWAYS = ("optim", "init", "lr", "status")
PADDING = ("act_fn", "seed")  # when the sweep names fewer than five


def trial_name(overrides: list[str], swept: list[str]) -> str:
    """A sweep job's trial in the HParams tab: its swept values in the order of its overrides
    ("adam · kaiming"; TensorBoard's column is narrow); "" when it sweeps nothing."""
    pairs = (o.partition("=") for o in overrides)
    return " · ".join(value for key, _, value in pairs if key.lstrip("+~") in swept and value)


def run_name(overrides: list[str], keys: list[str], groups=("optim", "init", "model", "data")) -> str:
    """A single run's trial: the choice of a config group that says what is trained by its value,
    any other key as its last part = value ("normal · std=0.1 · act_fn=tanh · seed=3"): a bare 0.1
    or 3 would not say what it sets."""
    last: dict[str, str] = {}
    for key, _, value in (o.partition("=") for o in overrides):
        key = key.lstrip("+~")
        if key in keys and value:
            last[key] = value  # a key given twice: the last one counts, as in Hydra
    return " · ".join(value if key in groups else f"{key.rsplit('.', 1)[-1]}={value}" for key, value in last.items())


def hparams_of(cfg: DictConfig) -> dict:
    """Flat hyperparameters (scalars and strings only). Every run declares the same keys
    (0.0 / "" = not used), so no column goes missing in a sweep of different optimizers."""
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    init = OmegaConf.to_container(cfg.init, resolve=True)
    betas = optim.get("betas") or (0.0, 0.0)
    return {
        "optim": cfg.get("optim_name") or str(optim.get("_target_", "")).rsplit(".", 1)[-1],
        "lr": float(optim.get("lr", float("nan"))),
        "momentum": float(optim.get("momentum", 0.0) or 0.0),
        "beta1": float(betas[0]), "beta2": float(betas[1]),
        "weight_decay": float(optim.get("weight_decay", 0.0) or 0.0),
        "init": cfg.get("init_name") or str(init.get("_target_", "")).rsplit(".", 1)[-1],
        "init_fill": float(init.get("fill") or 0.0),
        "init_std": float(init.get("std") or 0.0),
        "init_nonlinearity": str(init.get("nonlinearity") or ""),
        "act_fn": cfg.model.act_fn,
        "hidden_sizes": str(list(cfg.model.hidden_sizes)),
        "batch_size": int(cfg.data.batch_size),
        # a name, not a quantity: TensorBoard shows a number as 1.0000, and filters it by range
        "seed": str(int(cfg.seed)),
        "accelerator": str(cfg.trainer.accelerator),
        "max_epochs": int(cfg.trainer.max_epochs),
    }


def columns(swept: list[str]) -> list[str]:
    """The hyperparameters the HParams table shows: the swept ones, then the ones that always
    matter, padded to five."""
    chosen = [OVERRIDE_TO_HPARAM.get(k, k.rsplit(".", 1)[-1]) for k in swept]
    cols = list(dict.fromkeys([*chosen, *ALWAYS]))
    return cols + [k for k in PADDING if k not in cols][: max(0, 5 - len(cols))]


def log_hparams(loggers, cfg: DictConfig, results: dict, swept: list[str], trial: str) -> None:
    from pytorch_lightning.loggers.logger import DummyLogger
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = {f"hp/{k}": results[k] for k in ("test_acc", "best_val_acc") if results.get(k) is not None}
    every = {**hparams_of(cfg), "status": results["status"]}
    hp = {k: every[k] for k in columns(swept) if k in every}
    for logger in loggers:
        if isinstance(logger, DummyLogger):  # trainer.fast_dev_run's stand-in: it writes nothing
            continue
        writer = getattr(logger, "experiment", None)
        if not hasattr(writer, "_get_file_writer"):  # not TensorBoard: the Logger API, one argument
            # (CSVLogger and WandbLogger take no metrics there: passing them failed every csv run)
            logger.log_hyperparams(every)
            if metrics:
                logger.log_metrics(metrics, step=results["global_step"])
            continue
        names = dict.fromkeys(METRICS, 0.0)  # the metrics' names only; their values come below
        exp, _, _ = hparams_summaries(hp, names)       # the columns
        _, ssi, sei = hparams_summaries(every, names)  # this run's every value
        data = HParamsPluginData.FromString(ssi.value[0].metadata.plugin_data.content)
        data.session_start_info.group_name = trial  # the "Trial ID" column
        ssi.value[0].metadata.plugin_data.content = data.SerializeToString()
        if results["status"] != "ok":
            end = HParamsPluginData.FromString(sei.value[0].metadata.plugin_data.content)
            end.session_end_info.status = Status.Value("STATUS_FAILURE")
            sei.value[0].metadata.plugin_data.content = end.SerializeToString()
        file_writer = writer._get_file_writer()  # as Lightning's own log_hyperparams does
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        if metrics:
            logger.log_metrics(metrics, step=results["global_step"])
