"""``ort-cam audit --ray`` against a real Ray cluster started on this machine (never a mock):
the same summary and records as a single-process audit on 40 images of the demo model; a
worker killed with SIGKILL mid-run, and the audit still has every image exactly once; the
driver killed mid-run, the command rerun, and nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from audit_data import demo_dataset
from click.testing import CliRunner

from ort_cam.audit.distributed import (
    RAY_MISSING,
    TMP_PREFIX,
    default_workers,
    remove_stale_folders,
    wants_cuda,
)
from ort_cam.audit.image import AuditSpec
from ort_cam.audit.run import audit_model
from ort_cam.audit.store import read_results
from ort_cam.cli import main

ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'ort_cam[ray]'")

CLI = [sys.executable, "-c", "from ort_cam.cli import main; main()"]
STEPS = ["--steps", "4", "--deletion-steps", "4"]
SPEC = AuditSpec(steps=4, deletion_steps=4)
N = 40


@pytest.fixture(scope="module")
def cluster():
    """A new two-CPU Ray cluster on this machine (no dashboard), shared by the module."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return demo_dataset(tmp_path_factory.mktemp("ray_data"), N)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The single-process audit the Ray runs must equal."""
    out = tmp_path_factory.mktemp("single") / "audit"
    summary = audit_model(data["model"], data["csv"], out, spec=SPEC, html_page=False,
                          progress=False)
    return {"out": out, "summary": summary, "records": stripped(out)}


def stripped(out: Path) -> dict[str, dict]:
    """Records by key, without the seconds each took."""
    return {r["key"]: {k: v for k, v in r.items() if k != "seconds"}
            for r in read_results(out / "results.jsonl")}


def args(data, out: Path, *extra) -> list[str]:
    return [str(a) for a in ("audit", data["model"], data["csv"], *STEPS, "--no-report",
                             "--out", out, *extra)]


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def worker_pids() -> list[int]:
    """Processes of this test's cluster (descendants of this process: its raylet's workers)
    running ``AuditWorker`` (Ray titles them ``ray::AuditWorker``)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if not (p / "cmdline").read_bytes().startswith(b"ray::AuditWorker"):
                continue
            pid = int(p.name)
            while pid > 1 and pid != os.getpid():
                pid = parent(pid)
        except (OSError, ValueError, IndexError):
            continue
        if pid == os.getpid():
            pids.append(int(p.name))
    return pids


def wait_for_workers(n: int, proc: subprocess.Popen, timeout: float = 60) -> list[int]:
    """The cluster's AuditWorker pids once there are ``n`` (on a loaded machine the second
    actor can still be starting, untitled, when the first has written its records)."""
    deadline = time.monotonic() + timeout
    pids = worker_pids()
    while len(pids) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = worker_pids()
    return pids


def run_until(cmd: list[str], results: Path, n: int, timeout: float = 90):
    """Start ``cmd`` and return it once ``results`` holds ``n`` lines (it must still run)."""
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while lines(results) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the audit ended before {n} images: {proc.communicate()}"
    return proc


def same_as_reference(out: Path, reference: dict) -> None:
    recs = read_results(out / "results.jsonl")
    assert len(recs) == len({r["key"] for r in recs}) == N  # every image exactly once
    assert json.loads((out / "summary.json").read_text()) == reference["summary"]
    assert stripped(out) == reference["records"]
    thumbs = {p.name: p.read_bytes() for p in (out / "thumbs").iterdir()}
    assert thumbs == {p.name: p.read_bytes() for p in (reference["out"] / "thumbs").iterdir()}


def test_ray_audit_equals_the_single_process_audit(cluster, data, reference, tmp_path):
    out = tmp_path / "ray"
    res = CliRunner().invoke(main, args(data, out, "--ray", cluster, "--ray-workers", "2"))
    assert res.exit_code == 0, res.output
    same_as_reference(out, reference)
    counts = [line for line in res.output.splitlines() if line.startswith("worker ")]
    assert len(counts) == 2 and sum(int(c.split(": ")[1].split()[0]) for c in counts) == N
    assert reference["records"]["imgs/broken.png"]["skip"] == "unreadable image"
    assert json.loads((out / "audit.json").read_text())["about"]["ray"] == cluster


def test_ray_audit_with_road_and_arcc_equals_the_single_process_audit(cluster, data, tmp_path):
    """``--metrics road,arcc`` reaches the workers (they get the whole AuditSpec): the records,
    ROAD's and ARCC's values among them, equal a single-process audit's (3 images)."""
    rows = data["csv"].read_text().splitlines()
    small = data["csv"].parent / "three.csv"
    small.write_text("\n".join(rows[:4]) + "\n")
    spec = AuditSpec(steps=4, deletion_steps=4, metrics=("road", "arcc"))
    audit_model(data["model"], small, tmp_path / "single", spec=spec, html_page=False,
                progress=False)
    out = tmp_path / "ray"
    cli = [str(a) for a in ("audit", data["model"], small, *STEPS, "--no-report", "--out", out,
                            "--metrics", "road,arcc", "--ray", cluster, "--ray-workers", "2")]
    res = CliRunner().invoke(main, cli)
    assert res.exit_code == 0, res.output
    ours, want = stripped(out), stripped(tmp_path / "single")
    assert ours == want and len(ours) == 3
    first = next(iter(ours.values()))["methods"]["rsi"]
    assert {"road_combined", "coherency", "arcc"} <= set(first)
    assert json.loads((out / "summary.json").read_text()) == json.loads(
        (tmp_path / "single" / "summary.json").read_text())


def test_workers_sent_the_bytes_give_the_same_records(cluster, data, reference, tmp_path):
    """Workers that do not see the files get the model's and the images' bytes (a quarter
    of the images, the unreadable one among them)."""
    from ort_cam.audit.distributed import audit_model_ray

    out = tmp_path / "shipped"
    audit_model_ray(data["model"], data["csv"], out, spec=SPEC, shard="4/4", workers=2,
                    html_page=False, progress=False, ship=True)
    recs = stripped(out)
    assert len(recs) == N // 4 and "imgs/broken.png" in recs
    assert recs == {k: reference["records"][k] for k in recs}


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds workers in /proc")
def test_a_worker_killed_mid_run_loses_no_image(cluster, data, reference, tmp_path):
    out = tmp_path / "killed_worker"
    proc = run_until(CLI + args(data, out, "--ray", cluster, "--ray-workers", "2"),
                     out / "results.jsonl", 4)
    victims = wait_for_workers(2, proc)
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    done_at_kill = lines(out / "results.jsonl")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert done_at_kill < N, "the audit finished before the worker was killed"
    same_as_reference(out, reference)
    counts = [line for line in stdout.splitlines() if line.startswith("worker ")]
    assert any(f"pid {victims[0]} (lost)" in c for c in counts), stdout
    assert sum(int(c.split(": ")[1].split()[0]) for c in counts) == N
    assert not folders_of(victims)  # the replacement removed the killed worker's folder


def test_driver_killed_mid_run_then_rerun(cluster, data, reference, tmp_path):
    out = tmp_path / "killed_driver"
    cmd = CLI + args(data, out, "--ray", cluster, "--ray-workers", "2")
    proc = run_until(cmd, out / "results.jsonl", 4)
    workers = wait_for_workers(2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = len(read_results(out / "results.jsonl"))
    assert 4 <= done < N, done
    assert not (out / "summary.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    counts = [line for line in rerun.stdout.splitlines() if line.startswith("worker ")]
    assert sum(int(c.split(": ")[1].split()[0]) for c in counts) == N - done  # none redone
    same_as_reference(out, reference)
    assert len(workers) == 2 and not folders_of(workers)  # removed by the rerun's workers


def folders_of(pids: list[int]) -> list[Path]:
    return [f for pid in pids
            for f in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{pid}_*")]


def test_stale_folders_of_dead_workers_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead, alive = int(done.stdout), os.getpid()
    for pid in (dead, alive):
        (tmp_path / f"{TMP_PREFIX}{pid}_x1y2").mkdir()
    (tmp_path / f"{TMP_PREFIX}old").mkdir()  # no pid in its name: left alone
    remove_stale_folders()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{TMP_PREFIX}{alive}_x1y2", f"{TMP_PREFIX}old"])


def test_without_ray_installed_the_error_says_how_to_install(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    res = CliRunner().invoke(main, args(data, tmp_path / "x", "--ray"))
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == f"Error: {RAY_MISSING}"
    assert not (tmp_path / "x").exists()


def test_workers_and_gpus_from_the_cluster(cluster):
    assert wants_cuda("cuda", 0) and wants_cuda("CUDAExecutionProvider,cpu", 0)
    assert not wants_cuda("cpu", 8) and not wants_cuda("auto", 0) and wants_cuda(None, 1)
    assert default_workers(ray, {"num_cpus": 1, "num_gpus": 0}) == 2  # the 2-CPU cluster
    assert default_workers(ray, {"num_cpus": 2, "num_gpus": 0}) == 1


@pytest.mark.parametrize("source,ship", [("coco", False), ("voc", True)])
def test_segment_audit_on_ray_equals_the_single_process_audit(cluster, tmp_path, source, ship):
    """A segment audit (tests/region_data.py: COCO polygon and RLE masks; the same masks as
    VOC PNGs, sent to the workers as arrays with the images' bytes) gives the records of the
    single-process audit."""
    pytest.importorskip("torch")
    pytest.importorskip("pycocotools")
    import region_data
    import target_models as tm

    from ort_cam.audit.distributed import audit_model_ray

    data = region_data.seg_data(tmp_path / "d")
    path = data["coco"] if source == "coco" else region_data.voc_folder(data, tmp_path / "voc")
    kw = dict(layer=tm.MODELS["segmenter"].layer, label_map=data["map"],
              preprocess=region_data.PRE, spec=AuditSpec(steps=2, deletion_steps=2),
              html_page=False, progress=False)
    runtime = {"target_kind": "segment", "cache": False}
    audit_model(data["model"], path, tmp_path / "single", runtime={**runtime, "quiet": True},
                **kw)
    audit_model_ray(data["model"], path, tmp_path / "ray", workers=2, ship=ship,
                    runtime=runtime, **kw)
    single, on_ray = stripped(tmp_path / "single"), stripped(tmp_path / "ray")
    assert len(single) == 3 and all(r["status"] == "ok" for r in single.values())
    assert on_ray == single


def test_embedding_audit_on_ray_equals_the_single_process_audit(cluster, tmp_path):
    """An embedding audit (``--concepts``: its spec's vectors reach the workers) on Ray gives
    the records and summary of the single-process audit; a concept of the wrong length is
    refused in one line before any image, as without Ray (it was refused for any concepts)."""
    pytest.importorskip("torch")
    pytest.importorskip("pycocotools")
    import region_data
    import target_models as tm
    from tolerance import REBATCHED, assert_same_records

    from ort_cam.audit.regions import read_concepts

    data = region_data.emb_data(tmp_path / "d")
    layer = tm.MODELS["embedding"].layer
    audit_model(data["model"], data["coco"], tmp_path / "single", layer=layer,
                spec=AuditSpec(steps=2, deletion_steps=2,
                               concepts=read_concepts(data["concepts"])),
                preprocess=region_data.PRE, html_page=False, progress=False,
                runtime={"target_kind": "embedding", "quiet": True, "cache": False})
    cli = [str(a) for a in (
        "audit", data["model"], data["coco"], "--layer", layer, "--target-kind", "embedding",
        "--concepts", data["concepts"], "--preprocess", "raw", "--scale", 1 / 64, "--mean",
        "2,2,2", "--steps", 2, "--deletion-steps", 2, "--no-cache", "--no-report",
        "--ray", cluster, "--ray-workers", 2)]
    res = CliRunner().invoke(main, [*cli, "--out", str(tmp_path / "ray")])
    assert res.exit_code == 0, res.output
    single, on_ray = stripped(tmp_path / "single"), stripped(tmp_path / "ray")
    assert len(single) == 2 and all(r["status"] == "ok" for r in single.values())
    assert {r["target_kind"] for r in on_ray.values()} == {"embedding"}
    # The workers run onnxruntime with one thread each and explain one image per call; the
    # single-process audit runs onnxruntime's default threads and packs both images' paths
    # into shared runs: two float32 computations of the same numbers in other batches and
    # thread splits, bit for bit on this machine (measured: 0 apart) but not surely on
    # others, so REBATCHED (tests/tolerance.py: 14x the largest such difference seen) of
    # each value's magnitude (at least 1: cosines, metrics in [0, 1]).
    assert_same_records(on_ray, single, tol=REBATCHED)
    assert_same_records(json.loads((tmp_path / "ray" / "summary.json").read_text()),
                        json.loads((tmp_path / "single" / "summary.json").read_text()),
                        tol=REBATCHED)
    np.savez(data["concepts"], cat=np.ones(3), dog=np.ones(tm.EMBED_DIM))
    res = CliRunner().invoke(main, [*cli, "--out", str(tmp_path / "short")])
    lines = [line for line in res.output.strip().splitlines() if not line.startswith("ort_cam:")]
    assert res.exit_code == 1 and lines == [
        "Error: the concept 'cat' has 3 values; the embedding has 320: give vectors of that "
        "length"], res.output
    assert not (tmp_path / "short").exists()


def test_detection_head_overrides_reach_the_ray_workers(cluster, tmp_path):
    """A detection audit with the head read with objectness (``--objectness``, runtime
    ``target``) gives on Ray the records and ``target_head`` setting of the single-process
    audit (tests/test_audit_regions.py holds those to ``ort-cam explain``'s)."""
    pytest.importorskip("torch")
    pytest.importorskip("pycocotools")
    import region_data
    import target_models as tm
    from tolerance import REBATCHED, assert_same_records

    from ort_cam.audit.distributed import audit_model_ray

    data = region_data.obj_data(tmp_path / "d")
    kw = dict(layer=tm.MODELS["detector"].layer, label_map=data["map"],
              preprocess=region_data.PRE, spec=AuditSpec(steps=2, deletion_steps=2),
              html_page=False, progress=False)
    runtime = {"target_kind": "detection", "cache": False,
               "target": {"objectness": True, "layout": "channels"}}
    audit_model(data["model"], data["coco"], tmp_path / "single",
                runtime={**runtime, "quiet": True}, **kw)
    audit_model_ray(data["model"], data["coco"], tmp_path / "ray", workers=2, runtime=runtime,
                    **kw)
    single, on_ray = stripped(tmp_path / "single"), stripped(tmp_path / "ray")
    assert len(single) == 2 and all(r["status"] == "ok" for r in single.values())
    # one thread per worker and one image per call against the single-process audit's
    # threads and packed runs: REBATCHED, as for the embedding audit above (measured: 0 apart)
    assert_same_records(on_ray, single, tol=REBATCHED)
    settings = json.loads((tmp_path / "ray" / "audit.json").read_text())
    assert settings["target_head"] == {"objectness": True, "layout": "channels"}
