"""Benchmark of the exported explainer (issue: the whole explainer as one ONNX model).

- resnet50 (random weights) at its last block, 224x224, m = 50, the same CPU threads: one run
  of explainer.onnx in onnxruntime-python against one ``Explainer.explain_array`` (each after
  one warm-up run, interleaved), side by side (goal: exported <= 1.10x the engine);
- peak resident memory of one run at m = 200 against m = 50, each in a fresh process, for the
  exported model and, for comparison, for the engine (goal: <= 1.3x);
- the demo model (m = 50) in onnxruntime-python, in Node.js (examples/node) and in headless
  Chromium (examples/web, wasm), when node, npm and chromium are installed.

    python tools/bench_export.py [--threads 2] [--repeats 1] [--skip-clients]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision, interleaved_medians, random_batch, scratch_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAST = "/layer4/layer4.2/relu_2/Relu_output_0"
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLE = ROOT / "models" / "demo" / "samples" / "star_unsaturated.png"
M = 50


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_child(kind: str, path: str, steps: int, threads: int) -> None:
    """Child process: peak RSS of one run, counted from after the session is built."""
    import onnx

    import ort_cam
    from ort_cam.runtime import make_session

    x = random_batch(1, seed=1)
    if kind == "exported":
        sess = make_session(onnx.load(path), ["CPUExecutionProvider"], threads)
        run = partial(sess.run, None, {"input": x})
    else:
        ex = ort_cam.Explainer(path, LAST, threads=threads, quiet=True, preprocess="imagenet")
        assert ex.preprocess is not None
        x0 = ex.preprocess.normalize(np.zeros((224, 224, 3), np.uint8))
        run = partial(ex.explain_array, x, baseline_array=x0, steps=steps)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to current RSS
    before = _vm("VmRSS")
    run()
    print(json.dumps({"rss_before": before, "peak": _vm("VmHWM")}))


def resnet50_speed(tmp: Path, threads: int, repeats: int) -> Path:
    """Times exported runs against engine runs; returns the resnet50 path."""
    import onnx

    import ort_cam
    from ort_cam.export import export_explainer
    from ort_cam.runtime import make_session

    path = tmp / "resnet50.onnx"
    export_torchvision("resnet50", path)
    for m in (M, 200):
        export_explainer(str(path), LAST, tmp / f"explainer_m{m}.onnx", steps=m,
                         input_kind="tensor", preprocess="imagenet")
    sess = make_session(onnx.load(tmp / f"explainer_m{M}.onnx"), ["CPUExecutionProvider"],
                        threads)
    ex = ort_cam.Explainer(str(path), LAST, threads=threads, quiet=True, preprocess="imagenet")
    x = random_batch(1, seed=1)
    assert ex.preprocess is not None
    x0 = ex.preprocess.normalize(np.zeros((224, 224, 3), np.uint8))
    got: dict = {}
    t = interleaved_medians({
        "engine": lambda: got.update(r=ex.explain_array(x, baseline_array=x0, steps=M)),
        "exported": lambda: got.update(out=sess.run(None, {"input": x})),
    }, repeats=repeats)
    out = dict(zip([o.name for o in sess.get_outputs()], got["out"], strict=True))
    diff = max(float(np.abs(out[f"{k}_map"] - got["r"][k].map).max())
               for k in ("gradcam", "igcam", "rsi"))
    print(f"resnet50 224x224, layer {LAST}, m={M}, {threads} threads, chunk {ex.chunk_for(M)}, "
          f"median of {repeats} interleaved run(s) each after one warm-up")
    print(f"  Explainer.explain_array          {t['engine']:7.2f} s")
    print(f"  explainer.onnx, onnxruntime-py   {t['exported']:7.2f} s")
    print(f"  exported / engine = {t['exported'] / t['engine']:.3f} (goal <= 1.10); "
          f"max |map difference| {diff:.1e}")
    return path


def resnet50_memory(tmp: Path, path: Path, threads: int) -> None:
    print("peak RSS of one run, each in a fresh process (from after setup)")
    for kind in ("exported", "engine"):
        peaks = {}
        for m in (M, 200):
            target = str(tmp / f"explainer_m{m}.onnx") if kind == "exported" else str(path)
            out = subprocess.run([sys.executable, __file__, "--threads", str(threads),
                                  "--memory-child", kind, target, str(m)],
                                 capture_output=True, text=True, check=True)
            peaks[m] = json.loads(out.stdout.strip().splitlines()[-1])
            d = peaks[m]
            print(f"  {kind:8s} m={m:3d}: peak {d['peak'] / 2**20:6.0f} MiB "
                  f"(RSS before the run {d['rss_before'] / 2**20:.0f} MiB)")
        print(f"  {kind:8s} peak m=200 / m=50 = {peaks[200]['peak'] / peaks[M]['peak']:.3f} "
              "(goal <= 1.3)")


def _npm(example: str, tmp: Path) -> Path:
    target = tmp / example
    shutil.copytree(ROOT / "examples" / example, target,
                    ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=target, check=True, capture_output=True, timeout=600)
    return target


def demo_clients(tmp: Path, threads: int) -> None:
    """The demo explainer (m = 50) in onnxruntime-python, Node.js and the browser."""
    import onnx
    from PIL import Image

    from ort_cam.export import export_explainer
    from ort_cam.runtime import make_session

    model = tmp / "demo_explainer.onnx"
    export_explainer(DEMO, out=model, steps=M)
    sess = make_session(onnx.load(model), ["CPUExecutionProvider"], threads)
    image = np.asarray(Image.open(SAMPLE).convert("RGB"))
    py = interleaved_medians({"py": lambda: sess.run(None, {"image": image})}, repeats=5)["py"]
    print(f"demo model 96x96, m={M}, one run() of the explainer (median of 5 after a warm-up):")
    print(f"  onnxruntime-python ({threads} threads)   {1000 * py:7.1f} ms")
    if any(shutil.which(p) is None for p in ("node", "npm")):
        print("  Node.js, browser: skipped (node/npm not installed)")
        return
    node = _npm("node", tmp)
    times = []
    for _ in range(3):
        subprocess.run(["node", "explain.mjs", str(SAMPLE), str(model), str(tmp / "o.png"),
                        "--json", str(tmp / "o.json")], cwd=node, check=True,
                       capture_output=True)
        times.append(json.loads((tmp / "o.json").read_text())["seconds"])
    print(f"  Node.js, onnxruntime-node (default threads) {1000 * min(times):7.1f} ms "
          "(best of 3 processes, first run of each)")
    if shutil.which("chromium") is None:
        print("  browser: skipped (chromium not installed)")
        return
    print(f"  Chromium, onnxruntime-web wasm     {1000 * browser_seconds(tmp, model):7.1f} ms "
          "(first run in the page)")


class _Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args: object) -> None:
        pass


def browser_seconds(tmp: Path, model: Path) -> float:
    web = _npm("web", tmp)
    shutil.copy(model, web / "explainer.onnx")
    shutil.copy(SAMPLE, web / "sample.png")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = (f"http://127.0.0.1:{server.server_address[1]}/index.html"
               "?model=explainer.onnx&image=sample.png")
        out = subprocess.run(["node", "check.mjs", url], cwd=web, check=True,
                             capture_output=True, text=True, timeout=600)
        return float(json.loads(out.stdout)["seconds"])
    finally:
        server.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each (median)")
    ap.add_argument("--skip-clients", action="store_true", help="no Node.js/browser timing")
    ap.add_argument("--memory-child", nargs=3, metavar=("KIND", "MODEL", "STEPS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        kind, path, steps = args.memory_child
        memory_child(kind, path, int(steps), args.threads)
        return
    tmp = scratch_dir("ort_cam_bench_export_")
    t0 = time.perf_counter()
    path = resnet50_speed(tmp, args.threads, args.repeats)
    resnet50_memory(tmp, path, args.threads)
    if not args.skip_clients:
        demo_clients(tmp, args.threads)
    print(f"({time.perf_counter() - t0:.0f} s in all; files in {tmp})")


if __name__ == "__main__":
    main()
