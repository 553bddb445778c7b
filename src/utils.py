"""Atomic writes: a killed run never leaves a truncated file behind (temp file, fsync, rename).
And the readers of a run's files that never fail: a broken file reads as nothing."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def umask_mode() -> int:
    # mkstemp creates 0600 files; give the renamed file the mode an ordinary open() would.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON; write them as null so any reader can parse the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_bytes(path, (json.dumps(_json_safe(obj), indent=indent) + "\n").encode())


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object file (a run's results.json) as a dict; {} when it is missing, unreadable or
    not an object: the callers only ask what it says, never need to know why it says nothing."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's value (a run's .hydra/*.yaml); None when it is missing or unreadable."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """read_yaml, for a file that should hold a mapping: {} when it does not."""
    value = read_yaml(path)
    return value if isinstance(value, dict) else {}


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_savefig(fig, path: str | os.PathLike, **kw) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kw)
    atomic_write_bytes(path, buf.getvalue())
