"""What the batch-1 fallback costs: a model whose batch cannot be made dynamic runs every path
point as a session run of its own (``prepared.RowRunner``); a model that takes any batch runs
the path in chunks. The same fused session, the same image, the three methods at m = 50, run
both ways round-robin (interleaved medians), on the bundled demo model and on resnet50
(torchvision, random weights, 224²); the maps are checked to be equal to float32 rounding.

    python tools/bench_batch.py [--repeats 3] [--threads 2] [--steps 50] [--providers cpu]

The ratio printed (batch-1 runs / batched) is the one ``graph.load.BATCH_ONE_COST`` quotes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision, interleaved_wall_cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
RESNET50_LAYER = "/layer4/layer4.2/relu_2/Relu_output_0"


def compare(name: str, path: Path, layer: str | None, args: argparse.Namespace
            ) -> tuple[float, float]:
    """Time the explanation of one image batched and row by row; returns the ratios of the
    wall and CPU times."""
    import ort_cam
    from ort_cam.prepared import RowRunner

    ex = ort_cam.Explainer(path, layer, threads=args.threads, quiet=True,
                           providers=args.providers)
    rows = RowRunner(ex.session, preallocate=True)
    batched = ex.runner
    side = ex.preprocess.size if ex.preprocess is not None else (224, 224)
    image = (np.random.default_rng(0).random((*side, 3)) * 255).astype(np.uint8)

    def explain(runner):
        ex.runner = runner
        return ex.explain(image, steps=args.steps)

    a, b = explain(batched), explain(rows)
    diff = max(float(np.max(np.abs(a[m].raw - b[m].raw)) / max(np.max(np.abs(a[m].raw)), 1e-30))
               for m in a.methods)
    t = interleaved_wall_cpu({"batched": lambda: explain(batched),
                              "batch-1 runs": lambda: explain(rows)}, args.repeats)
    ratio = t["batch-1 runs"][0] / t["batched"][0]
    cpu = t["batch-1 runs"][1] / t["batched"][1]
    print(f"{name} ({side[0]}x{side[1]}, up to {ex.chunk_for(args.steps)} points per run): "
          f"batched {t['batched'][0]:.3f} s (cpu {t['batched'][1]:.3f}), batch-1 runs "
          f"{t['batch-1 runs'][0]:.3f} s (cpu {t['batch-1 runs'][1]:.3f}); "
          f"ratio {ratio:.2f}x (cpu {cpu:.2f}x); maps' largest relative difference {diff:.1e}")
    return ratio, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--providers", default="cpu")
    args = ap.parse_args()
    print(f"m={args.steps}, three methods, {args.threads} threads, {args.providers}, "
          f"median of {args.repeats} (interleaved)")
    demo = compare("demo model", DEMO, None, args)
    with tempfile.TemporaryDirectory(prefix="ort_cam_bench_batch_") as tmp:
        path = Path(tmp) / "resnet50.onnx"
        export_torchvision("resnet50", path)
        resnet = compare("resnet50", path, RESNET50_LAYER, args)
    print(f"ratio (batch-1 runs / batched), wall (cpu): demo model {demo[0]:.2f}x "
          f"({demo[1]:.2f}x), resnet50 {resnet[0]:.2f}x ({resnet[1]:.2f}x)")


if __name__ == "__main__":
    main()
