"""The exported explainer in other engines, against the Python engine (docs/export.md's table).

For the demo model (96x96, m = 16) and a torchvision resnet18 (seeded random weights, 224x224,
layer4.1, m = 16): ``ort-cam export`` (with the Loop, and ``--unroll`` for tract), then one run
in each engine on the same image, the default target and baseline: the largest difference of
its maps from ``Explainer.explain``'s (all three methods), its RSI completeness gap, and the
median time of a run (after one warm-up run, which also compiles: OpenVINO's compile_model and
tract's optimisation are not counted; the engines' setup times are printed apart).

    python tools/bench_runtimes.py [--threads 2] [--repeats 3] [--size 224] [--steps 16]
                                   [--skip-reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision  # noqa: E402
from export_runtimes import RUNNERS, default_feeds, max_map_difference  # noqa: E402

DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLE = ROOT / "models" / "demo" / "samples" / "star_unsaturated.png"
RESNET_LAYER = "/layer4/layer4.1/relu_1/Relu_output_0"
STRETCH = {"preset": "imagenet", "resize": "stretch"}


def _version(engine: str) -> str:
    if engine == "onnxruntime":
        import onnxruntime
        return onnxruntime.__version__
    if engine == "openvino":
        import openvino
        return openvino.get_version().split("-")[0]
    if engine == "tract":
        import tract
        return tract.version()
    import onnx
    return onnx.__version__


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _photo(size: int) -> np.ndarray:
    """A smooth test image (blobs of colour), as tests/test_export.py draws them."""
    small = np.random.default_rng(0).integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def _cases(tmp: Path, size: int) -> dict[str, tuple[Path, str | None, dict | None, np.ndarray]]:
    resnet = tmp / "resnet18.onnx"
    export_torchvision("resnet18", resnet, size=size, seed=0)
    star = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return {"demo (96², m = {m})": (DEMO, None, None, star),
            f"resnet18 ({size}², layer4.1, m = {{m}})": (resnet, RESNET_LAYER, STRETCH,
                                                       _photo(size))}


def bench_case(label: str, model: Path, layer, pre, image, args, tmp: Path) -> list[str]:
    from ort_cam import Explainer
    from ort_cam.export import export_explainer

    ex = Explainer(model, layer, preprocess=pre, threads=args.threads, quiet=True)
    chunk = ex.chunk_for(args.steps)
    r = ex.explain(image, steps=args.steps)
    ref = {f"{k}_map": v.map for k, v in r.methods.items()}
    t_py = _timed(lambda: ex.explain(image, steps=args.steps), args.repeats)
    rows = [f"| {label} | Python engine (`Explainer.explain`) | {_version('onnxruntime')} | "
            f"reference, gap {r.completeness_gap:.3g} | {t_py:.3f} s |"]
    paths = {}
    for unroll in (False, True):
        paths[unroll] = tmp / f"{model.stem}_{int(unroll)}.onnx"
        export_explainer(model, layer, paths[unroll], steps=args.steps, preprocess=pre,
                         chunk_size=chunk, unroll=unroll)
    engines = [("onnxruntime", {"threads": args.threads}, False),
               ("openvino", {"threads": args.threads}, False),
               ("openvino", {"threads": args.threads, "precision": None}, False),
               ("tract", {}, True), ("onnx.reference", {}, False)]
    for engine, kw, unroll in engines:
        if engine == "onnx.reference" and args.skip_reference:
            continue
        t0 = time.perf_counter()
        run = RUNNERS[engine](paths[unroll], **kw)
        feeds = default_feeds(paths[unroll], image)
        out = run(feeds)  # warm-up (tract optimises here)
        setup = time.perf_counter() - t0
        t = _timed(partial(run, feeds), 1 if engine == "onnx.reference" else args.repeats)
        name = engine + (" --unroll" if unroll else "") + (
            " (default precision)" if kw.get("precision", "f32") is None else "")
        diff = max_map_difference(out, ref)
        rows.append(f"| {label} | {name} | {_version(engine)} | maps {diff:.1e} off, gap "
                    f"{float(out['rsi_completeness_gap']):.3g} | {t:.3f} s |")
        print(f"  {label} {name}: setup {setup:.2f} s", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    print("| model | runtime | version | result vs Python | time |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for label, (model, layer, pre, image) in _cases(Path(d), args.size).items():
            for row in bench_case(label.format(m=args.steps), model, layer, pre, image, args,
                                  Path(d)):
                print(row, flush=True)


if __name__ == "__main__":
    main()
