"""Kill an audit with SIGKILL half-way, rerun the same command, and get the summary.json of an
uninterrupted run (and every image exactly once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from audit_data import cli_args, make_dataset

from ort_cam.audit.store import read_results

CLI = [sys.executable, "-c", "from ort_cam.cli import main; main()"]
N = 40


def lines(path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_half_way_then_rerun_gives_the_same_summary(tmp_path):
    data = make_dataset(tmp_path / "data", n=N - 1)  # N - 1 images + one unreadable file
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(CLI + cli_args(data, killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 60
    while lines(results) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the audit finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_results(results))
    print(f"killed after {done} of {N} images")
    assert 5 <= done < N, done
    assert not (killed / "summary.json").exists()

    rerun = subprocess.run(CLI + cli_args(data, killed), env=env, capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    clean = tmp_path / "clean"
    whole = subprocess.run(CLI + cli_args(data, clean), env=env, capture_output=True,
                           text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr

    recs = read_results(results)
    assert len(recs) == len({r["key"] for r in recs}) == N
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((clean / "summary.json").read_text())
    assert a == b
    assert a["images"]["lines"] == N and a["splits"]["all"]["images"] > 0
