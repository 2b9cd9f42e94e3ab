"""Every method's time per image, side by side with pytorch-grad-cam 1.5.7's on the same torch
model, photo and target.

resnet18 (torchvision, seeded random weights: no download) at its last block (layer4, 512
channels, 7×7), scikit-image's chelsea photo resized to 224² and normalised as ImageNet's (the
same input for both), the logit of the class torch ranks first (pytorch-grad-cam's
ClassifierOutputTarget; ort_cam's score="logit"), m = 50 where a path is walked, the same
threads for onnxruntime and torch. Each method runs on both sides in turn, ``--repeats``
times (interleaved, after one warm-up of each), and the medians are compared:

  ort_cam      ``explain_array`` with that method alone: the model run at x (fused with the
               layer's gradient) or its head's runs, the method's reduction, the map
               upsampled and normalised;
  pgc          pytorch-grad-cam's call for one image: its forward and ``.backward()``, the
               weights, the map, OpenCV's resize and min-max scaling;
  ratio        ort_cam / pgc (goal: <= 1 for every method pytorch-grad-cam has).

Integrated Grad-CAM, RSI-Grad-CAM and the three together have no pytorch-grad-cam peer
(printed alone); Layer IG is compared with captum's LayerIntegratedGradients (m + 1 points).

    python tools/bench_methods.py [--threads 2] [--repeats 3] [--heavy-repeats 1]
                                  [--methods a,b] [--model resnet18] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision  # noqa: E402

#: The last block's output per model.
LAYERS = {"resnet18": "/layer4/layer4.1/relu_1/Relu_output_0",
          "resnet50": "/layer4/layer4.2/relu_2/Relu_output_0"}
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
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def photo_input() -> np.ndarray:
    """chelsea (scikit-image) at 224², ImageNet-normalised, [1, 3, 224, 224] float32; a seeded
    noise image where scikit-image is missing."""
    from PIL import Image

    try:
        from skimage import data

        pixels = data.chelsea()
    except ImportError:
        pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    small = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.Resampling.BILINEAR))
    x = (small / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


class Ours:
    """ort_cam: one method (or the three) alone, as ``explain_array`` makes it."""

    def __init__(self, ex, x: np.ndarray, target: int, steps: int):
        self.ex, self.x, self.target, self.steps = ex, x, target, steps

    def call(self, name: str) -> Callable[[], object]:
        names = list(THREE) if name == ALL_THREE else [name]
        return lambda: self.ex.explain_array(self.x, baseline_array="zeros", target=self.target,
                                             steps=self.steps, methods=names)


class Reference:
    """pytorch-grad-cam's call for one image (captum's LayerIntegratedGradients for Layer IG);
    None where neither has the method."""

    def __init__(self, model, x: np.ndarray, target: int, steps: int):
        import pytorch_grad_cam as pgc
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.pgc, self.model, self.steps, self.target = pgc, model, steps, target
        self.xt = torch.from_numpy(x)
        self.targets = [ClassifierOutputTarget(target)]
        self.layer = model.get_submodule(MODULE)

    def call(self, name: str) -> Callable[[], object] | None:
        if name == "layerig":
            return self._captum()
        if not PGC.get(name):
            return None
        chosen = None if name == "finercam" else self.targets  # Finer-CAM picks its own
        cls = getattr(self.pgc, PGC[name])

        def run() -> object:
            with cls(model=self.model, target_layers=[self.layer]) as cam:
                return cam(self.xt, chosen)

        return run

    def _captum(self) -> Callable[[], object] | None:
        try:
            from captum.attr import LayerIntegratedGradients
        except ImportError:
            return None
        lig = LayerIntegratedGradients(self.model, self.layer)
        return lambda: lig.attribute(self.xt, baselines=self.xt * 0, target=self.target,
                                     n_steps=self.steps + 1, method="riemann_trapezoid",
                                     internal_batch_size=17)


def side_by_side(ours: Callable[[], object], ref: Callable[[], object] | None,
                 repeats: int) -> tuple[float, float | None]:
    """Median seconds of each, run in turn ``repeats`` times after one warm-up of each."""
    fns = {"ours": ours} if ref is None else {"ours": ours, "ref": ref}
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return med["ours"], med.get("ref")


def table(rows: dict[str, tuple[float, float | None]]) -> str:
    lines = ["| method | ort_cam (s) | pytorch-grad-cam (s) | ort_cam / pgc |",
             "|---|---:|---:|---:|"]
    for name, (mine, ref) in rows.items():
        peer = "-" if ref is None else f"{ref:.3f}" + (" (captum)" if name == "layerig" else "")
        ratio = "-" if ref is None else f"{mine / ref:.2f}"
        lines.append(f"| {name} | {mine:.3f} | {peer} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(LAYERS), default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--heavy-repeats", type=int, default=1,
                    help="repeats of Ablation-CAM and Score-CAM (one run per channel)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args()
    import torch

    import ort_cam
    from ort_cam.methods import METHODS

    torch.set_num_threads(args.threads)
    names = args.methods.split(",") if args.methods else [ALL_THREE, *sorted(
        METHODS, key=lambda n: n in HEAVY)]  # the K-run methods last
    rows: dict[str, tuple[float, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.model}.onnx"
        model = export_torchvision(args.model, path)
        x = photo_input()
        with torch.no_grad():
            target = int(model(torch.from_numpy(x)).argmax())
        ex = ort_cam.Explainer(str(path), LAYERS[args.model], score="logit",
                               threads=args.threads, providers="cpu", quiet=True, cache=False)
        mine, ref = Ours(ex, x, target, args.steps), Reference(model, x, target, args.steps)
        for name in names:
            repeats = args.heavy_repeats if name in HEAVY else args.repeats
            rows[name] = side_by_side(mine.call(name), ref.call(name), repeats)
            print(f"  {name}: {rows[name]}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{args.model} {MODULE}, chelsea 224², class {target} (logit), m = {args.steps}, "
          f"{args.threads} threads, median of {args.repeats} interleaved runs "
          f"({args.heavy_repeats} for {', '.join(HEAVY)}); load average {load}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
