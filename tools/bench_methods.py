"""Every method's cost per image, next to pytorch-grad-cam's on the same torch model.

resnet50 (random weights, torchvision) at layer4 (2048 channels, 7×7), 224², logit score
(pytorch-grad-cam's ClassifierOutputTarget), the top-1 class, m = 50 where a path is walked,
the same number of threads for onnxruntime and torch. One timed run per method and side after
one warm-up run of each engine.

Columns:
  alone      ort_cam's explain_array with that method alone (for the methods read at l = m:
             one run of x; for Integrated Grad-CAM and RSI: the m+1 path points).
  on top     for the gradient methods: what adding the method to a pass that already computes
             Grad-CAM, Integrated Grad-CAM and RSI costs, i.e. its reduction (``finish``) on
             the pass's state: no runs are added.
  pgc        pytorch-grad-cam 1.5.7's call (its forward, backward, weights, min-max scaling
             and OpenCV resize) for one image; captum 0.9's LayerIntegratedGradients (m + 1
             points, riemann_trapezoid) for Layer IG; "-" where neither has the method.

    python tools/bench_methods.py [--threads 2] [--steps 50] [--methods a,b,...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision, random_batch  # noqa: E402

LAYER = "/layer4/layer4.2/relu_2/Relu_output_0"
MODULE = "layer4"
THREE = ("gradcam", "igcam", "rsi")
ALL_THREE = "(the three together)"
#: the methods that run the model or its head once per channel
HEAVY = ("ablationcam", "scorecam")
#: ort_cam method -> pytorch-grad-cam class ("" where it has none)
PGC = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam_elementwise": "GradCAMElementWise",
       "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
       "eigengradcam": "EigenGradCAM", "eigencam": "EigenCAM", "kpcacam": "KPCA_CAM",
       "fem": "FEM", "ablationcam": "AblationCAM", "scorecam": "ScoreCAM", "finercam": "FinerCAM"}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Ours:
    """ort_cam: each method alone, and the reduction of the l = m methods on the pass."""

    def __init__(self, ex, x: np.ndarray, target: int, steps: int):
        from ort_cam.engine import PathState
        from ort_cam.methods import MethodOptions

        self.run = lambda ms: ex.explain_array(x, baseline_array="zeros", target=target,
                                               steps=steps, methods=ms)
        self.run(["gradcam"])  # warm-up
        w = np.zeros((1, ex.n_classes), np.float32)
        w[0, target] = 1.0
        a, _, g = ex.runner.run({ex.input_name: x, "target_weights": w})
        a64, g64 = a[0].astype(np.float64), g[0].astype(np.float64)
        self.state = PathState(m=steps, a0=a64, am=a64, gm=g64)
        self.opts = MethodOptions()

    def time(self, name: str) -> dict[str, float]:
        from ort_cam.methods import METHODS
        from ort_cam.methods.run_based import uses_runs

        names = list(THREE) if name == ALL_THREE else [name]
        row = {"alone": timed(lambda: self.run(names))}
        cls = METHODS.get(name)
        if cls is not None and not uses_runs(cls) and not cls.needs_path:
            row["on top"] = timed(lambda: cls(self.state, self.opts).finish())
        return row


class Reference:
    """pytorch-grad-cam's time per image (captum's for Layer IG)."""

    def __init__(self, model, x: np.ndarray, target: int, steps: int):
        import pytorch_grad_cam as pgc
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.pgc, self.model, self.steps, self.target = pgc, model, steps, target
        self.xt = torch.from_numpy(x)
        self.targets = [ClassifierOutputTarget(target)]
        self.layer = model.get_submodule(MODULE)
        with pgc.GradCAM(model=model, target_layers=[self.layer]) as cam:
            cam(self.xt, self.targets)  # warm-up

    def time(self, name: str) -> float | None:
        if name == "layerig":
            return self._captum()
        if not PGC.get(name):
            return None
        chosen = None if name == "finercam" else self.targets  # Finer-CAM picks its own
        with getattr(self.pgc, PGC[name])(model=self.model, target_layers=[self.layer]) as cam:
            return timed(lambda: cam(self.xt, chosen))

    def _captum(self) -> float | None:
        try:
            from captum.attr import LayerIntegratedGradients
        except ImportError:
            return None
        lig = LayerIntegratedGradients(self.model, self.layer)
        return timed(lambda: lig.attribute(self.xt, baselines=self.xt * 0, target=self.target,
                                           n_steps=self.steps + 1, method="riemann_trapezoid",
                                           internal_batch_size=17))


def table(rows: dict[str, tuple[dict, float | None]]) -> str:
    lines = ["| method | ort_cam alone (s) | on top of the three (ms) | pytorch-grad-cam (s) |",
             "|---|---:|---:|---:|"]
    for name, (mine, ref) in rows.items():
        top = f"{1e3 * mine['on top']:.1f}" if "on top" in mine else "-"
        lines.append(f"| {name} | {mine['alone']:.3f} | {top} | "
                     f"{'-' if ref is None else f'{ref:.3f}'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--methods", default=None, help="comma-separated (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args()
    import torch

    import ort_cam
    from ort_cam.methods import METHODS

    torch.set_num_threads(args.threads)
    names = args.methods.split(",") if args.methods else [ALL_THREE, *sorted(
        METHODS, key=lambda n: n in HEAVY)]  # the K-run methods last
    rows: dict[str, tuple[dict, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.onnx"
        model = export_torchvision("resnet50", path)
        x = random_batch(1)
        with torch.no_grad():
            target = int(model(torch.from_numpy(x)).argmax())
        ex = ort_cam.Explainer(str(path), LAYER, score="logit", threads=args.threads,
                               providers="cpu", quiet=True, cache=False)
        mine, ref = Ours(ex, x, target, args.steps), Reference(model, x, target, args.steps)
        for name in names:
            rows[name] = (mine.time(name), ref.time(name))
            print(f"  {name}: {rows[name]}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nresnet50 layer4, 224², m = {args.steps}, {args.threads} threads, one run each\n")
    print(table(rows))


if __name__ == "__main__":
    main()
