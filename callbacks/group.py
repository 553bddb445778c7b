"""Our callbacks as one Lightning callback, for speed on a GPU.

Lightning calls each of its six per-step hooks on every callback at every step (a profiler
section and all), whether the callback defines it or not: 7-18 µs a step per callback on this
CPU (six runs), for callbacks that do nothing (benchmarks/callback_dispatch.py). A step of
this MLP on a GPU is a few hundred µs, so the default set's ten callbacks would be a large
part of it.
`CallbackGroup` takes Lightning's calls once and forwards each hook only to the members whose
class defines it.

Only callbacks that Lightning does not treat specially are grouped: not its checkpoint,
progress-bar or early-stopping callbacks (it finds those by type), and not a callback with
state of its own (its checkpoint entry is keyed by its own `state_key`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping, ProgressBar

HOOKS = tuple(name for name in dir(pl.Callback) if name.startswith("on_") or name in ("setup", "teardown"))
_STATE = ("state_dict", "load_state_dict")


def _defines(cb: pl.Callback, name: str) -> bool:
    return getattr(type(cb), name) is not getattr(pl.Callback, name)


def groupable(cb: pl.Callback) -> bool:
    return (not isinstance(cb, (Checkpoint, ProgressBar, EarlyStopping))
            and not any(_defines(cb, name) for name in _STATE))


class CallbackGroup(pl.Callback):
    """Forwards each Lightning hook to the members that define it, in their order."""

    def __init__(self, members: Iterable[pl.Callback]):
        self.members = list(members)
        self._by_hook = {hook: [m for m in self.members if _defines(m, hook)] for hook in HOOKS}
        # Lightning reads state_key at every hook call (its profiler's section name): made once.
        self._state_key = "CallbackGroup[" + ",".join(m.state_key for m in self.members) + "]"

    @property
    def state_key(self) -> str:
        return self._state_key


def _forward(hook: str):
    def forward(self, *args, **kwargs):
        for member in self._by_hook[hook]:
            getattr(member, hook)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = hook
    return forward


for _hook in HOOKS:
    setattr(CallbackGroup, _hook, _forward(_hook))


def group_callbacks(callbacks: list[pl.Callback]) -> list[pl.Callback]:
    """The groupable callbacks as one CallbackGroup, where the first of them was; the others as
    they are. Fewer than two groupable: the list unchanged."""
    members = [cb for cb in callbacks if groupable(cb)]
    if len(members) < 2:
        return list(callbacks)
    first = callbacks.index(members[0])
    rest = [cb for cb in callbacks if not groupable(cb)]
    return rest[:first] + [CallbackGroup(members)] + rest[first:]


def each_callback(callbacks: Iterable[pl.Callback]) -> Iterator[pl.Callback]:
    """Every callback, the members of groups in their place."""
    for cb in callbacks:
        if isinstance(cb, CallbackGroup):
            yield from cb.members
        else:
            yield cb
