"""Audit throughput on Ray against one process, and the driver's memory on a large dataset.

    python tools/bench_audit.py --out /tmp/bench_audit            # both parts
    python tools/bench_audit.py --out /tmp/bench_audit --rss-lines 0   # throughput only

Throughput: the demo model on the 40 images of tests/audit_data.demo_dataset (the demo
samples and their flips, one unreadable file), audited by ``run.audit_model`` in this process
(onnxruntime's default threads, and one thread), and by ``distributed.audit_model_ray`` with 1
and 2 workers (one thread each) on a local Ray cluster of ``--cpus`` CPUs started once by this
script. The runs are interleaved ``--repeats`` times (load
from other processes hits all alike) and the medians printed: wall time of the call (model
loading and worker start included) and images/s while records arrive (from the first line of
results.jsonl to the last, read every 5 ms: start-up excluded).

Memory: a synthetic CSV of ``--rss-lines`` images (symbolic links to the 8 demo samples, so
every key differs), audited on Ray with 2 workers at ``--rss-steps`` path steps; this process
(the driver) samples its own resident memory (VmRSS) every 50 ms, and prints it before the
run, at 10/50/90/100% of the images, and its peak while records arrive.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from audit_data import DEMO, demo_dataset  # noqa: E402

from ort_cam.audit.distributed import audit_model_ray  # noqa: E402
from ort_cam.audit.image import AuditSpec  # noqa: E402
from ort_cam.audit.run import audit_model  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Watch:
    """Line count of a results.jsonl (and this process's RSS) sampled in a thread."""

    def __init__(self, results: Path, every: float) -> None:
        self.results, self.every = results, every
        self.samples: list[tuple[float, int, float]] = []  # (time, lines, RSS MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n, offset = 0, 0
        while not self._stop.is_set():
            try:  # only the bytes added since the last look (reading the whole file each
                with open(self.results, "rb") as fh:  # time would itself grow the RSS)
                    fh.seek(offset)
                    new = fh.read()
                offset += len(new)
                n += new.count(b"\n")
            except FileNotFoundError:
                pass
            self.samples.append((time.perf_counter(), n, rss_mib()))
            time.sleep(self.every)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def rate(self, total: int) -> float:
        """Images/s from the first line written to the last."""
        first = next(t for t, n, _ in self.samples if n >= 1)
        last = next(t for t, n, _ in self.samples if n >= total)
        return (total - 1) / (last - first)


def timed(fn: Callable[[Path], object], out: Path, n: int) -> tuple[float, float]:
    """(wall seconds, images/s while records arrive) of ``fn(out)``."""
    with Watch(out / "results.jsonl", 0.005) as w:
        t0 = time.perf_counter()
        fn(out)
        wall = time.perf_counter() - t0
        time.sleep(0.02)
    return wall, w.rate(n)


def throughput(out: Path, repeats: int, spec: AuditSpec) -> None:
    data = demo_dataset(out / "data", 40)
    common: dict[str, Any] = dict(spec=spec, html_page=False, progress=False)
    runs: dict[str, Callable[[Path], object]] = {
        "single process": lambda o: audit_model(data["model"], data["csv"], o, **common),
        "single, 1 thread": lambda o: audit_model(data["model"], data["csv"], o,
                                                  runtime={"threads": 1}, **common),
        "ray, 1 worker": lambda o: audit_model_ray(data["model"], data["csv"], o, workers=1,
                                                   **common),
        "ray, 2 workers": lambda o: audit_model_ray(data["model"], data["csv"], o, workers=2,
                                                    **common),
    }
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for r in range(repeats):
        for name, fn in runs.items():
            got[name].append(timed(fn, out / f"{name.replace(' ', '_')}_{r}", data["n"]))
    print(f"{data['n']} images, steps {spec.steps}, deletion steps {spec.deletion_steps}, "
          f"median of {repeats}:")
    for name, vals in got.items():
        wall = statistics.median(v[0] for v in vals)
        rate = statistics.median(v[1] for v in vals)
        print(f"  {name:16s} wall {wall:6.2f} s   {rate:6.2f} images/s while running   "
              f"{data['n'] / wall:6.2f} images/s overall")


def synthetic_csv(d: Path, lines: int) -> Path:
    """``lines`` images: links to the demo samples under distinct names, their boxes."""
    import json

    (d / "imgs").mkdir(parents=True, exist_ok=True)
    boxes = list(json.loads((DEMO / "samples" / "boxes.json").read_text()).items())
    rows = ["image,label,x0,y0,x1,y1"]
    for i in range(lines):
        name, info = boxes[i % len(boxes)]
        link = d / "imgs" / f"{i:06d}_{name}"
        if not link.exists():
            link.symlink_to(DEMO / "samples" / name)
        rows.append(",".join([f"imgs/{link.name}", info["label"], *map(str, info["box"])]))
    (d / "boxes.csv").write_text("\n".join(rows) + "\n")
    return d / "boxes.csv"


def driver_rss(out: Path, lines: int, spec: AuditSpec) -> None:
    csv = synthetic_csv(out / "synthetic", lines)
    before = rss_mib()
    t0 = time.perf_counter()
    with Watch(out / "rss" / "results.jsonl", 0.05) as w:
        audit_model_ray(DEMO / "demo_cnn.onnx", csv, out / "rss", spec=spec, workers=2,
                        html_page=False, progress=False)
    wall = time.perf_counter() - t0
    running = [(n, rss) for _, n, rss in w.samples if 1 <= n]
    arriving = [r for n, r in running if n < lines]
    print(f"driver RSS on {lines} images (steps {spec.steps}, deletion steps "
          f"{spec.deletion_steps}, 2 workers, {wall:.0f} s, {lines / wall:.1f} images/s):")
    print(f"  before the run {before:.0f} MiB; while records arrive: peak "
          f"{max(arriving):.0f} MiB")
    for share in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999):
        n, rss = next((n, r) for n, r in running if n >= share * lines)
        print(f"  at {n:5d} images ({100 * share:4.1f}%): {rss:.0f} MiB")
    print(f"  peak after the last record (the summary reads all {lines} back): "
          f"{max(r for n, r in running if n >= lines):.0f} MiB; at the end {rss_mib():.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="scratch folder (must be new)")
    ap.add_argument("--repeats", type=int, default=3, help="0 skips the throughput part")
    ap.add_argument("--steps", type=int, default=50, help="path steps of the throughput runs")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                    help="CPUs of the local Ray cluster")
    ap.add_argument("--rss-lines", type=int, default=5000, help="0 skips the memory part")
    ap.add_argument("--rss-steps", type=int, default=2,
                    help="path and deletion steps of the memory run (default 2: the driver "
                         "gets records as fast as the workers can make them)")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out} exists and is not empty")
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"Ray {ray.__version__}, local cluster of {args.cpus} CPUs; load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    if args.repeats:
        throughput(args.out, args.repeats, AuditSpec(steps=args.steps))
    if args.rss_lines:
        driver_rss(args.out, args.rss_lines,
                   AuditSpec(steps=args.rss_steps, deletion_steps=args.rss_steps))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
