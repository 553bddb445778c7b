"""Test a checkpoint: `python eval.py ckpt_path=<run dir or .ckpt> [split=val] [precision=32-true]`."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import run_app, run_task  # noqa: E402


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig):
    from src.evaluation import evaluate

    return run_task(evaluate, cfg)


if __name__ == "__main__":
    run_app(main)
