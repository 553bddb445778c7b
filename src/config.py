"""Compose a config without a command line (tests, benchmarks, notebooks)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str], output_dir: str | Path, config_name: str = "train"):
    """The config `python <config_name>.py <overrides>` would get, with its run dir at output_dir."""
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import src.resolvers  # noqa: F401  (the presets' ${lr_around:…})

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        # quoted: a sweep job's dir name holds `=` and `,` (0_optim=sgd,seed=1)
        quote = "'" if "'" not in str(output_dir) else '"'
        cfg = compose(config_name, overrides=[*overrides, f"hydra.run.dir={quote}{output_dir}{quote}"],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations in the config
    with open_dict(cfg):
        del cfg["hydra"]  # the task function never sees it in a real run
    return cfg
