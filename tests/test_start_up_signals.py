"""A SIGTERM while eval.py, surfaces.py or landscape.py import torch: their run dir had no
results.json (the import ran before run_task, under run_app's handler, which marks no run)."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_probe_endings import SIGNAL_DURING_START_UP


@pytest.mark.parametrize("script, args", [("eval.py", ["ckpt_path=/nonexistent"]), ("surfaces.py", []),
                                          ("landscape.py", ["run=/nonexistent"])])
def test_a_sigterm_while_torch_is_imported_leaves_an_interrupted_results_json(tmp_path, script, args):
    run = tmp_path / "run"
    argv = [str(ROOT / script), *args, f"hydra.run.dir={run}"]
    env = {"PROBE_TEST_SIGNAL": str(int(signal.SIGTERM)), "PROBE_TEST_AFTER": "torch", "PATH": "/usr/bin:/bin",
           "PROJECT_ROOT": str(ROOT), "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", SIGNAL_DURING_START_UP, *argv], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-2000:]
    again = shlex.join(["python", script, *argv[1:]])
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")] == [
        f"error: interrupted by SIGTERM; start it again: {again}"]
    r = json.loads((run / "results.json").read_text())
    assert (r["status"], r["signal"], r["again"]) == ("interrupted", "SIGTERM", again)
