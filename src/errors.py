"""Errors a user can fix, and their one-line messages. The entry scripts (src/cli.py) print
them as one `error:` line and exit 2."""

from __future__ import annotations

import re


class UserError(Exception):
    """Bad input: a config value, a path, a missing resource. The message says what is accepted."""


class ConfigError(UserError, ValueError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


# "Invalid learning rate lr=0: must be > 0" (our constructors' style) -> key lr, value 0.
_INVALID = re.compile(r"^Invalid (?:[\w ]+ )?(?P<key>\w+(?:\[\d+\])?)=(?P<value>.+?): (?P<why>.+)$")


def root_cause(e: BaseException) -> BaseException:
    """The innermost exception: Hydra wraps a constructor's error in InstantiationException."""
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1].strip() if text else type(e).__name__


def in_group(group: str, e: BaseException) -> str:
    """A constructor's complaint, said in config terms: `optim.lr=0: must be > 0`."""
    message = last_line(root_cause(e))
    if message.startswith(f"{group}.") or message.startswith(f"{group}="):
        return message  # the constructor already speaks in config keys (model.act_fn=...)
    m = _INVALID.match(message)
    if m:
        return f"{group}.{m['key']}={m['value']}: {m['why']}"
    return f"{group}: {message}"


def is_int(value) -> bool:
    """An integer as a config gives it: not a bool (YAML's `true` is an int to Python), not 1.5."""
    return isinstance(value, int) and not isinstance(value, bool)


def seed_value(key: str, value) -> int:
    """`value` if it is a seed numpy and torch accept, else the one-line error naming `key`
    (seed_everything's own is a traceback)."""
    if not (is_int(value) and 0 <= value < 2**32):
        raise ConfigError(f"{key}={value!r} must be an integer in [0, 2**32 - 1]")
    return value


def integer(key: str, value, low: int = 1) -> int:
    """`value` if it is an integer >= low, else the one-line error naming `key`."""
    if not is_int(value) or value < low:
        raise ConfigError(f"{key}={value!r} must be an integer >= {low}")
    return value


def check_accelerator(key: str, value) -> None:
    """`gpu`/`cuda` on a machine without CUDA: say so before Lightning's own message (which names
    a backend, not the machine)."""
    import torch

    if str(value) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={value} but CUDA is not available on this machine "
                          f"(torch.cuda.is_available() is False); use {key}=cpu or auto")


class StopRequested(BaseException):
    """SIGTERM or Ctrl-C where no job is in charge (src/cli.py run_app): a BaseException, so that
    Hydra's job wrapper, which catches every Exception of a job's last lines as that job's failure
    and goes on with the next job, lets it through (a SIGTERM there was swallowed, exit 0)."""

    def __init__(self, interrupted: Interrupted):
        self.interrupted = interrupted
        super().__init__(str(interrupted))


class Interrupted(Exception):
    """The run was asked to stop (SIGTERM from a scheduler, Ctrl-C). During a fit it is raised
    at a batch boundary by callbacks/interrupt.py, after last.ckpt was saved there; a second
    Ctrl-C raises it at once (`at_once`: no checkpoint of a half-done step). Outside a fit
    (start-up, the test, the other scripts) src/cli.py raises it at once. `reported`: train()
    wrote the interrupted results.json itself. The process exits 128 + signal."""

    def __init__(self, signum: int, at_once: bool = False):
        import re
        import signal

        if not isinstance(signum, int):  # rebuilt by a library as type(e)(message) (OmegaConf does)
            name = re.search(r"SIG[A-Z0-9]+", str(signum))
            signum = signal.Signals[name.group()].value if name and name.group() in signal.Signals.__members__ \
                else signal.SIGINT
            at_once = True
        self.signum, self.at_once, self.reported = int(signum), at_once, False
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
