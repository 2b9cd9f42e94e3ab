"""What a second input size costs. A model whose height and width are dynamic, with nothing
naming a size, explains each image at its own size (rounded to what its graph scales down
by); the gradient graphs bake in the size, so every new size is a prepared model and a session
of its own. Here: resnet50 (torchvision, random weights, exported with a dynamic batch, height
and width), images of 224x224 and 256x320, the three methods at m = 50:

  - making the explainer of a new size: with the prepared-model cache cold (load, probe,
    differentiate, open the session) and warm (read the entry, open the session);
  - the explanation itself at that size, for comparison.

    python tools/bench_sizes.py [--threads 2] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAYER = "/layer4/layer4.2/relu_2/Relu_output_0"


def export(path: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N"}})


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ort_cam_bench_sizes_") as tmp:
        os.environ["ORT_CAM_CACHE"] = str(Path(tmp) / "cache")
        path = Path(tmp) / "resnet50_any_size.onnx"
        export(path)
        import ort_cam
        from ort_cam import cache

        def make(size, use_cache: bool):
            ex = ort_cam.Explainer(path, LAYER, threads=args.threads, quiet=True,
                                   providers="cpu", size=size, cache=use_cache)
            cache.wait()  # the entries are written in the background
            return ex

        rng = np.random.default_rng(0)
        print(f"resnet50, any size, m={args.steps}, three methods, {args.threads} threads, "
              f"median of {args.repeats}")
        for size in ((224, 224), (256, 320)):
            image = (rng.random((*size, 3)) * 255).astype(np.uint8)
            cold = timed(lambda: make(size, False), args.repeats)  # noqa: B023
            make(size, True)  # fills the cache
            warm = timed(lambda: make(size, True), args.repeats)  # noqa: B023
            ex = make(size, True)
            run = timed(lambda: ex.explain(image, steps=args.steps), args.repeats)  # noqa: B023
            print(f"  {size[0]}x{size[1]}: a new size's explainer {cold:.2f} s (cache cold), "
                  f"{warm:.2f} s (cache warm); one explanation {run:.2f} s; a new size costs "
                  f"{cold / run:.2f}x (cold) or {warm / run:.2f}x (warm) an explanation")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
