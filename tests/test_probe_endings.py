"""probe.py's endings: results.json `ok` only once every output is written, and a stop during
its start-up is one `error:` line and exit 128 + signal."""

import json
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import DATA_DIR, ROOT, compose

pytestmark = pytest.mark.skipif(not (DATA_DIR / "FashionMNIST" / "raw").is_dir(),
                                reason="FashionMNIST raw files not prepared (make data)")

SMALL = [f"paths.data_dir={DATA_DIR}", "model.hidden_sizes=[16]", "batch_size=128", "probe.draws=2",
         "probe.batches=1"]


def test_results_json_is_the_last_file_a_probe_writes(tmp_path, capsys):
    from src.probe import probe

    probe(compose(SMALL, tmp_path, "probe"))
    results = tmp_path / "results.json"
    assert json.loads(results.read_text())["status"] == "ok"
    others = [p for p in tmp_path.rglob("*") if p.is_file() and p != results]
    names = {p.relative_to(tmp_path).parts[0] for p in others}
    assert {"probe.json", "probe.png", "figures", "tensorboard"} <= names
    # it was written before the figures, TensorBoard and the tables: a stop there left `ok` behind
    latest = max(others, key=lambda p: p.stat().st_mtime_ns)
    assert results.stat().st_mtime_ns >= latest.stat().st_mtime_ns, latest


def test_a_stop_while_the_tables_print_is_an_interrupted_run(tmp_path, capsys, monkeypatch):
    """SIGTERM after the figures, before the tables were printed: it said `after the run had
    finished (its results.json is complete)` and left results.json `ok`."""
    import src.probe
    from src.cli import run_task
    from src.errors import Interrupted

    def stopped(result):
        raise Interrupted(signal.SIGTERM, at_once=True)  # as StopSignals raises it

    monkeypatch.setattr(src.probe, "print_tables", stopped)
    with pytest.raises(SystemExit) as info:
        run_task(src.probe.probe, compose(SMALL, tmp_path, "probe"))
    assert info.value.code == 128 + signal.SIGTERM
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: interrupted by SIGTERM; start it again: "), errors
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "interrupted" and r["signal"] == "SIGTERM"


# Runs probe.py as `python probe.py <args>` does, sending PROBE_TEST_SIGNAL to itself at the first
# import once PROBE_TEST_AFTER (`module` or `module:attribute`) is there: a signal during the
# seconds-long start-up, at the same point every time (after torch and Lightning at the latest).
SIGNAL_DURING_START_UP = textwrap.dedent("""
    import os, runpy, signal, sys

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, wherever pytest runs
    module, _, attribute = os.environ["PROBE_TEST_AFTER"].partition(":")


    class SignalDuringStartUp:
        def find_spec(self, name, path=None, target=None):
            there = hasattr(sys.modules.get(module), attribute) if attribute else name == module
            if there or name == "callbacks.diagnostics":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), int(os.environ["PROBE_TEST_SIGNAL"]))
            return None


    sys.meta_path.insert(0, SignalDuringStartUp())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.mark.parametrize("signum, after", [
    (signal.SIGINT, "torch"),  # as torch's import starts
    (signal.SIGTERM, "torch"),
    # mid-import, once torch has registered its exit-time FakeTensor statistics: they came after the
    # error line, three `[HYDRA] FakeTensor cache stats` lines
    (signal.SIGTERM, "torch._subclasses.fake_tensor:dump_cache_stats"),
])
def test_a_signal_during_start_up_is_one_line(tmp_path, signum, after):
    """SIGTERM killed probe.py silently (exit 143, no run dir, no line) and Ctrl-C printed a 60-line
    KeyboardInterrupt traceback: torch was imported at the top of probe.py, before any handler."""
    run = tmp_path / "run"
    args = [str(ROOT / "probe.py"), "model.hidden_sizes=[16]", f"hydra.run.dir={run}"]
    env = {"PROBE_TEST_SIGNAL": str(int(signum)), "PROBE_TEST_AFTER": after, "PATH": "/usr/bin:/bin",
           "PROJECT_ROOT": str(ROOT), "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", SIGNAL_DURING_START_UP, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 128 + signum, res.stderr[-2000:]
    name = signal.Signals(signum).name
    again = shlex.join(["python", "probe.py", *args[1:]])
    assert res.stderr.splitlines() == [f"error: interrupted by {name} before the run started; start it again: {again}"]
    assert res.stdout == "" and not run.exists()
