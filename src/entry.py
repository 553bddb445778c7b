"""What the entry scripts share: print the config, turn user errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from src.errors import UserError

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # called outside a Hydra app (tests calling run_task directly)
        return False


def run_task(task: Callable[[DictConfig], object], cfg: DictConfig, print_config: bool = True):
    """Run `task(cfg)`. A UserError becomes one line on stderr and a results.json marked failed;
    in a single run the process exits with status 2, in a multirun the sweep goes on."""
    from src.training import print_config_tree, write_failure

    if print_config and cfg.get("print_config", True):
        print_config_tree(cfg)
    try:
        return task(cfg)
    except UserError as e:
        out = Path(cfg.paths.output_dir)
        if out.exists():
            write_failure(out, e, cfg)
        print(f"error: {e}", file=sys.stderr, flush=True)
        if is_multirun():
            return None
        sys.exit(EXIT_USER_ERROR)
