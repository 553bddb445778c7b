"""OmegaConf resolvers of this app; importing the module registers them.

`${lr_around:<optim name>,<decade>}` is the tutorial's learning rate of that optimizer times
10**decade, rounded to 4 significant digits. It gives every optimizer its own log grid in
one cartesian Hydra sweep: `optim=sgd,adam lr_decade=-1,0,1` runs SGD at 0.01/0.1/1 and Adam
at 1e-4/1e-3/1e-2 (conf/experiment/lr_sensitivity.yaml).

`${cores_at_least:<n>}` is max(n, the machine's core count): a preset of n jobs runs all of
them at once on a small machine (no core idles while a last job runs alone) and one per core
on a big one (conf/experiment/compare_optimizers.yaml; docs/performance.md).

Imported by train.py before Hydra composes, and by src/hydra_callbacks.py, which every
launcher's job process imports, so jobs in worker processes resolve it too.
"""

from __future__ import annotations

import os

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
