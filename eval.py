"""Test a checkpoint: `python eval.py ckpt_path=<run dir or .ckpt> [split=val] [precision=32-true]`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import run_app, run_task  # noqa: E402


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig):
    return run_task(import_and_evaluate, cfg)


def import_and_evaluate(cfg: DictConfig):
    # torch and Lightning are imported inside the task: a stop during their seconds-long import
    # left the run dir without a results.json (run_task writes `interrupted` there now)
    from src.evaluation import evaluate

    return evaluate(cfg)


if __name__ == "__main__":
    run_app(main)
