"""What a user waits for: `ort-cam explain` on one image, steps="auto", Grad-CAM alone.

resnet50 (random weights) at its last block, 224², the same threads throughout:

  1. `ort-cam explain MODEL IMAGE` in a fresh process, cold cache (emptied) and warm cache
     (its entry from the cold run): the process's wall time against the explanation's own
     time (results.jsonl: preprocessing + the explanation's total). Goals: warm <= 1.5x,
     cold <= 2x. Then the same processes run through tools/startup_phases.py, which prints
     where the time goes: python's start and imports, the model digest, the cache read,
     session creation, the first run and the path's runs, the methods, image decode, panel
     (PNG) and arrays (npz).
  2. steps="auto" against a fixed run at the m where auto stopped, same image, interleaved,
     one intra-op thread: wall and process-CPU-time ratios (goal <= 1.1; on a shared
     machine the CPU time is the steadier measure of the work) and the inputs each ran.
  3. Grad-CAM alone: session runs and their batch sizes (goal: one run, batch 1), and its
     time against the three methods at m = 50.

    python tools/bench_startup.py [--repeats 3] [--threads 2] [--only-startup]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    export_torchvision,
    interleaved_medians,
    interleaved_wall_cpu,
)

LAST = "/layer4/layer4.2/relu_2/Relu_output_0"


def photo(path: Path) -> Path:
    """A real photo (scikit-image's chelsea) when installed, else a seeded noise image."""
    from PIL import Image

    try:
        from skimage import data

        pixels = data.chelsea()
    except ImportError:
        pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def explain_args(model: Path, image: Path, out: Path, threads: int) -> list[str]:
    return ["explain", str(model), str(image), "--layer", LAST, "--out", str(out), "--json",
            "--threads", str(threads), "--providers", "cpu"]


def cli_once(model: Path, image: Path, out: Path, cache: Path, threads: int,
             phases: bool = False, tree: Path | None = None) -> dict[str, Any]:
    """One `ort-cam explain` process: its wall time and the explanation's own time; with
    ``phases``, run through tools/startup_phases.py, which times each phase. ``tree``: the
    ort_cam source to run (PYTHONPATH), else the one this interpreter imports."""
    env = dict(os.environ, ORT_CAM_CACHE=str(cache))
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    args = explain_args(model, image, out, threads)
    report = out.parent / (out.name + ".phases.json")
    if phases:
        cmd = [sys.executable, str(Path(__file__).with_name("startup_phases.py")), str(report),
               "--", *args]
    else:
        cmd = [shutil.which("ort-cam") or str(Path(sys.executable).parent / "ort-cam"), *args]
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"ort-cam explain failed:\n{done.stderr}")
    rec = json.loads(done.stdout.strip().splitlines()[-1])
    own = rec["timings"]["total"] + rec["timings"].get("preprocess", 0.0)
    shutil.rmtree(out)
    row: dict[str, Any] = {"wall": wall, "explain": own, "cpu": cpu}
    if phases:
        got = json.loads(report.read_text())
        row["phases"] = {"python start": wall - got["inner"], **got["phases"]}
        report.unlink()
    return row


def startup(model: Path, image: Path, tmp: Path, threads: int, repeats: int,
            against: Path | None = None) -> None:
    """Cold and warm cache, plain `ort-cam` and phase-timed processes, round-robin; with
    ``against`` (another ort_cam tree), its processes too, in the same rounds."""
    trees: dict[str, Path | None] = {"this tree": None}
    if against is not None:
        trees["against"] = against
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i in range(repeats):
        for t, (label, tree) in enumerate(trees.items()):
            cache = tmp / f"cache{t}"
            for timed in (False, True):
                shutil.rmtree(cache, ignore_errors=True)
                for kind in ("cold", "warm"):
                    out = tmp / f"{kind}{t}{int(timed)}{i}"
                    rows.setdefault((label, kind + "+" * timed), []).append(
                        cli_once(model, image, out, cache, threads, timed, tree))
    print(f"1. `ort-cam explain` resnet50, one image, m=50, {threads} thread(s), median of "
          f"{repeats} (cold and warm alternate); load average {load()}")
    for label in trees:
        for kind in ("cold", "warm"):
            runs = rows[label, kind]
            wall = statistics.median(r["wall"] for r in runs)
            own = statistics.median(r["explain"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            print(f"  {label}, {kind} cache: wall {wall:6.2f} s (process CPU {cpu:6.2f} s), "
                  f"explanation {own:6.2f} s, wall / explanation = {wall / own:.2f}"
                  + (" (goal <= 1.5)" if kind == "warm" else " (goal <= 2)"))
    print_phases({f"{k} {label[:7]}": rows[label, k + "+"] for label in trees
                  for k in ("cold", "warm")})


def print_phases(columns: dict[str, list[dict[str, Any]]]) -> None:
    """The median seconds of each phase (tools/startup_phases.py), one column per kind."""
    every = [r for runs in columns.values() for r in runs]
    names = list(dict.fromkeys(k for r in every for k in r["phases"]))
    print("  per phase (median seconds of the phase-timed processes):")
    print(f"    {'phase':40s}" + "".join(f" {c:>13s}" for c in columns))
    for name in [*names, "wall"]:
        cells = [statistics.median(r["phases"].get(name, 0.0) if name != "wall" else r["wall"]
                                   for r in runs) for runs in columns.values()]
        print(f"    {name:40s}" + "".join(f" {v:13.3f}" for v in cells))


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


class Counter:
    """Counts the session runs of an explainer and the inputs they took."""

    def __init__(self, ex: Any):
        self.batches: list[int] = []
        run = ex.runner.run

        def counted(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            self.batches.append(len(feeds["target_weights"]))
            return run(feeds)

        setattr(ex.runner, "run", counted)  # noqa: B010 (count the session runs)

    def take(self) -> list[int]:
        out, self.batches = self.batches, []
        return out


def auto_cost(ex: Any, image: Path, repeats: int, tolerance: float) -> None:
    """auto against fixed at its final m: wall time, and CPU time (the explainer has one
    intra-op thread, so CPU time counts the work done, not waiting on a shared machine)."""
    counter = Counter(ex)
    auto = {"steps": "auto", "auto_tolerance": tolerance, "auto_max": 256}
    first = ex.explain(image, **auto)
    m, auto_inputs = first.steps, sum(counter.take())
    fixed = ex.explain(image, steps=m)
    fixed_inputs = sum(counter.take())
    t = interleaved_wall_cpu({"auto": lambda: ex.explain(image, **auto),
                      "fixed": lambda: ex.explain(image, steps=m)}, repeats)
    counter.take()
    same = max(float(np.abs(first[n].raw - fixed[n].raw).max()) for n in first.methods)
    print(f"2. steps='auto' (tolerance {tolerance}) stopped at m={m} "
          f"(gap {first.completeness_gap:.3g}); one thread, median of {repeats}")
    for i, what in enumerate(("wall", "CPU")):
        a, f = t["auto"][i], t["fixed"][i]
        print(f"  {what:4s}: auto {a:6.2f} s, fixed m={m} {f:6.2f} s: auto / fixed = "
              f"{a / f:.3f} (goal <= 1.1)")
    print(f"  inputs run: auto {auto_inputs}, fixed {fixed_inputs} (m+1 = {m + 1}); "
          f"maps differ by at most {same:.1e}")


def gradcam_alone(ex: Any, image: Path, repeats: int) -> None:
    counter = Counter(ex)
    ex.explain(image, methods=["gradcam"])
    batches = counter.take()
    t = interleaved_medians({
        "gradcam": lambda: ex.explain(image, methods=["gradcam"]),
        "all": lambda: ex.explain(image, steps=50),
    }, repeats)
    counter.take()
    print(f"3. Grad-CAM alone: {len(batches)} session run(s), batch sizes {batches} "
          "(goal: one run, batch 1)")
    print(f"  {1e3 * t['gradcam']:.0f} ms, against {1e3 * t['all']:.0f} ms for the three "
          "methods at m = 50")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.002,
                    help="auto_tolerance of part 2 (small, so that auto doubles a few times)")
    ap.add_argument("--only-startup", action="store_true", help="part 1 only")
    ap.add_argument("--against", type=Path, default=None,
                    help="another ort_cam source tree (e.g. `git archive` of main) to time "
                    "in the same rounds: part 1 then prints both")
    ap.add_argument("--models", type=Path, default=None,
                    help="keep the exported model and the photo here between runs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ort_cam_bench_startup_"))
    keep = args.models or tmp
    keep.mkdir(parents=True, exist_ok=True)
    model = keep / "resnet50.onnx"
    export_torchvision("resnet50", model)
    image = keep / "chelsea.png"
    if not image.exists():
        photo(image)
    startup(model, image, tmp, args.threads, args.repeats, args.against)
    if args.only_startup:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    import ort_cam

    one = ort_cam.Explainer(str(model), LAST, threads=1, quiet=True, providers="cpu")
    auto_cost(one, image, args.repeats, args.tolerance)
    ex = ort_cam.Explainer(str(model), LAST, threads=args.threads, quiet=True, providers="cpu")
    gradcam_alone(ex, image, args.repeats)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
