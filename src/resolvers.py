"""OmegaConf resolvers of this app; importing the module registers them.

`${lr_around:<optim name>,<decade>}` is the tutorial's learning rate of that optimizer times
10**decade, rounded to 4 significant digits. It gives every optimizer its own log grid in
one cartesian Hydra sweep: `optim=sgd,adam lr_decade=-1,0,1` runs SGD at 0.01/0.1/1 and Adam
at 1e-4/1e-3/1e-2 (conf/experiment/lr_sensitivity.yaml).

`${cores_at_least:<n>}` is max(n, the machine's core count): a preset of n jobs runs all of
them at once on a small machine (no core idles while a last job runs alone) and one per core
on a big one (conf/experiment/compare_optimizers.yaml; docs/performance.md).

`${job_dir_name:<job num>,<override_dirname>}` names a sweep job's dir `<num>_<overrides>`, as
Hydra would, but within what a file system allows: a name over MAX_DIR_NAME bytes keeps the
swept overrides and replaces the fixed ones by their count and a hash of all of them
(`3_optim=adam,seed=2,and_12_more_1a2b3c4d`), so the same job gets the same dir again.

Imported by train.py before Hydra composes, and by src/hydra_callbacks.py, which every
launcher's job process imports, so jobs in worker processes resolve it too.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from omegaconf import OmegaConf

# The learning rates the tutorial uses (SGD 0.1, SGD-momentum 0.1, Adam 1e-3); torch_* are the
# library versions of the same optimizers.
TUTORIAL_LR = {"sgd": 0.1, "sgd_mom": 0.1, "adam": 1e-3,
               "torch_sgd": 0.1, "torch_sgd_mom": 0.1, "torch_adam": 1e-3}


def lr_around(optim_name: str, decade: float) -> float:
    if optim_name not in TUTORIAL_LR:
        raise ValueError(f"lr_around: no tutorial learning rate for optim={optim_name}; "
                         f"known: {', '.join(TUTORIAL_LR)}")
    return float(f"{TUTORIAL_LR[optim_name] * 10 ** float(decade):.4g}")


OmegaConf.register_new_resolver("lr_around", lr_around, replace=True)


def cores_at_least(n: int) -> int:
    return max(int(n), os.cpu_count() or 1)


OmegaConf.register_new_resolver("cores_at_least", cores_at_least, replace=True)


def swept_keys_of(sweep_dir: str | os.PathLike, sweeper_params: dict | None = None) -> list[str]:
    """The keys a multirun sweeps: its sweeper's params (a preset's `hydra.sweeper.params`;
    given, or as saved in <sweep_dir>/multirun.yaml), then the sweep overrides of its command
    line as Hydra saved them there (`optim=sgd,adam`, `seed=range(1,4)`; not a list value such as
    `model.hidden_sizes=[64,32]`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.utils import read_yaml_mapping

    hydra_cfg = read_yaml_mapping(Path(sweep_dir) / "multirun.yaml").get("hydra") or {}
    if sweeper_params is None:
        sweeper_params = (hydra_cfg.get("sweeper") or {}).get("params")
    keys = [str(k).lstrip("+~") for k in (sweeper_params or {})]
    parser = OverridesParser.create()
    for arg in (hydra_cfg.get("overrides") or {}).get("task") or []:
        try:
            (override,) = parser.parse_overrides([str(arg)])
        except Exception:  # one odd override must cost neither a report nor a job's dir
            continue
        if override.is_sweep_override():
            keys.append(override.get_key_element().lstrip("+~"))
    return list(dict.fromkeys(keys))


MAX_DIR_NAME = 200  # bytes: file systems allow 255 for one name; room for what tools add
_ITEM = re.compile(r",(?=[+~]?[\w./@-]+=)")  # a comma that starts the next `key=`, not one inside a list


def job_dir_name(num, override_dirname) -> str:
    name = f"{num}_{override_dirname}"  # Hydra's own `${hydra.job.num}_${hydra.job.override_dirname}`
    if len(name.encode()) <= MAX_DIR_NAME:
        return name
    from hydra.core.hydra_config import HydraConfig

    swept = set(swept_keys_of(HydraConfig.get().sweep.dir))
    items = _ITEM.split(str(override_dirname))
    kept = [item for item in items if item.split("=", 1)[0].lstrip("+~") in swept]
    digest = hashlib.sha256(str(override_dirname).encode()).hexdigest()[:8]
    tail = f"and_{len(items) - len(kept)}_more_{digest}"
    head = f"{num}_{','.join(kept)}," if kept else f"{num}_"
    budget = MAX_DIR_NAME - len(tail.encode())
    if len(head.encode()) > budget:  # the swept ones alone are too long: cut, the hash tells them apart
        head = head.encode()[:budget].decode(errors="ignore")
    return head + tail


OmegaConf.register_new_resolver("job_dir_name", job_dir_name, replace=True)
