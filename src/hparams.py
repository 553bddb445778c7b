"""A run's row in TensorBoard's HParams tab.

TensorBoard ticks the first few hyperparameters of the experiment as its default columns, so
the ones this run's command line chose (the swept axes of a sweep: `optim`, `init`, `lr`, …)
come first, then `status`, then the constants. Metrics are the run's real `hp/test_acc` and
`hp/best_val_acc`, absent when the run has none (diverged, interrupted, skip_test) — never a 0.0
stand-in. The trial is named by the job's overrides (`init=kaiming,optim=adam`) or, for a single
run, by its run dir.
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
IMPORTANT_FIRST = ("optim", "lr", "init", "act_fn", "seed")


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
        "seed": int(cfg.seed),
        "accelerator": str(cfg.trainer.accelerator),
        "max_epochs": int(cfg.trainer.max_epochs),
    }


def ordered_hparams(hp: dict, overrides: list[str], status: str) -> dict:
    """The command line's choices first, then status, then the important ones, then the rest."""
    chosen = [OVERRIDE_TO_HPARAM.get(o.split("=", 1)[0].lstrip("+~")) for o in overrides]
    order = [k for k in chosen if k in hp] + ["status"] + [k for k in IMPORTANT_FIRST if k in hp] + list(hp)
    merged = {**hp, "status": status}
    return {k: merged[k] for k in dict.fromkeys(order)}


def log_hparams(loggers, cfg: DictConfig, results: dict, overrides: list[str], trial: str) -> None:
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = {f"hp/{k}": results[k] for k in ("test_acc", "best_val_acc") if results.get(k) is not None}
    hp = ordered_hparams(hparams_of(cfg), overrides, results["status"])
    for logger in loggers:
        writer = getattr(logger, "experiment", None)
        if not hasattr(writer, "_get_file_writer"):  # not TensorBoard: its own hyperparameter API
            logger.log_hyperparams(hp, metrics or None)
            continue
        exp, ssi, sei = hparams_summaries(hp, dict.fromkeys(METRICS, 0.0))  # names only
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
