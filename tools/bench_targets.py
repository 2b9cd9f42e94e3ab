"""Benchmark of the target kinds (issue 19): on one backbone (resnet18's convolutions, random
weights), the path of a segment, detection or embedding target against the class target's,
and several targets of one image explained together against one by one.

The heads on the backbone's last block (layer4, 7x7 at 224²):
  class      GAP -> fc (1000)                          [N, 1000], softmax probability
  embedding  GAP                                       [N, 512], cosine to a concept
  segment    1x1 conv (21) -> bilinear x32 to 224²     [N, 21, 224, 224], logits over a mask
  detection  1x1 conv (4+80) on layer4 and layer3       [N, 84, 245], YOLO-style, top-1 after NMS

Each is explained at layer4 (Grad-CAM, Integrated Grad-CAM, RSI: one pass, m steps), wall
and process CPU seconds interleaved over ``--repeats``, at each m of ``--steps``. The rows
"given" explain the same heads with W fixed by the options (a class over a box; anchors and
a class), so the run of x is fed W at once and is the path's last point, as the class
target's; the defaults (argmax mask, top-1 after NMS) pick W from S(x), one more run of x.
Then ``--targets`` classes of one image in one explain_many call (their paths walked
together: the prefix runs each point once, the head once per target) against that many
explain calls.

    python tools/bench_targets.py [--steps 16,50] [--repeats 5] [--threads 1] [--targets 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import interleaved_wall_cpu, print_ratios, random_batch, scratch_dir  # noqa: E402

import ort_cam  # noqa: E402


def _models():
    import torch
    import torchvision
    from torch import nn

    torch.manual_seed(0)
    base = torchvision.models.resnet18(weights=None).eval()
    trunk = nn.Sequential(base.conv1, base.bn1, base.relu, base.maxpool, base.layer1,
                          base.layer2, base.layer3)

    class Net(nn.Module):
        def __init__(self, kind: str):
            super().__init__()
            self.trunk, self.layer4, self.kind = trunk, base.layer4, kind
            self.fc, self.seg = base.fc, nn.Conv2d(512, 21, 1)
            self.det4, self.det3 = nn.Conv2d(512, 84, 1), nn.Conv2d(256, 84, 1)

        def forward(self, x):
            f3 = self.trunk(x)
            f4 = self.layer4(f3)
            if self.kind == "class":
                return self.fc(f4.mean(dim=(2, 3)))
            if self.kind == "embedding":
                return f4.mean(dim=(2, 3))
            if self.kind == "segment":
                return nn.functional.interpolate(self.seg(f4), scale_factor=32.0,
                                                 mode="bilinear", align_corners=False)
            heads = torch.cat([self.det4(f4).flatten(2), self.det3(f3).flatten(2)], 2)
            return torch.cat([heads[:, :4] * 8.0, heads[:, 4:].sigmoid()], 1)

    return {kind: Net(kind).eval() for kind in ("class", "embedding", "segment", "detection")}


def _export(model, path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(path), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["out"],
                          dynamic_axes={"input": {0: "N"}, "out": {0: "N"}})
    return path


def _layer(path: Path) -> str:
    from ort_cam.grad import list_layers
    from ort_cam.graph import load_model

    names = [i.name for i in list_layers(load_model(path)) if "layer4" in i.name]
    return names[-1]  # layer4's last ReLU


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="16,50", help="comma-separated path lengths m")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--targets", type=int, default=4)
    args = ap.parse_args()
    steps = [int(v) for v in args.steps.split(",")]
    tmp = scratch_dir("ort_cam_bench_targets_")
    x = random_batch(1)
    concept = np.random.default_rng(1).standard_normal(512)
    explainers = {}
    for kind, model in _models().items():
        path = _export(model, tmp / f"{kind}.onnx")
        target = {"concept": concept} if kind == "embedding" else None
        explainers[kind] = ort_cam.Explainer(path, _layer(path), quiet=True, cache=False,
                                             threads=args.threads, target=target,
                                             target_kind="detection" if kind == "detection"
                                             else None, preprocess="raw")
        print(f"{kind:10s} {explainers[kind].reading['line']}")
    given = {"segment given": ("segment", {"target": 3, "box": (0, 0, 112, 112)}),
             "detection given": ("detection", {"anchors": (5,), "target": 2})}
    for m in steps:
        run = {kind: (lambda ex=ex, m=m: ex.explain_array(x, baseline_array="zeros", steps=m))
               for kind, ex in explainers.items()}
        run.update({name: (lambda ex=explainers[kind], spec=spec, m=m: ex.explain_array(
            x, baseline_array="zeros", steps=m, target=spec))
            for name, (kind, spec) in given.items()})
        t = interleaved_wall_cpu(run, args.repeats)
        print(f"\npath of m = {m} at layer4, {args.threads} thread(s), median of "
              f"{args.repeats}: wall s, CPU s, ratios to the class target (wall, CPU)")
        print_ratios(t, "class", 16)
    seg = explainers["segment"]
    image = np.random.default_rng(2).integers(0, 256, (224, 224, 3), np.uint8)
    specs = [{"target": c, "box": (0, 0, 224, 224)} for c in range(args.targets)]
    m = steps[0]
    one_by_one = lambda: [seg.explain(image, target=s, steps=m)  # noqa: E731
                          for s in specs]
    together = lambda: seg.explain_many([image], targets=specs, steps=m)  # noqa: E731
    t2 = interleaved_wall_cpu({"one by one": one_by_one, "together": together}, args.repeats)
    print(f"\n{args.targets} segment targets of one image (classes 0..{args.targets - 1}, the "
          f"whole image as the mask), m = {m}: wall s, CPU s")
    for name, (wall, cpu) in t2.items():
        print(f"  {name:10s} {wall:7.3f}  {cpu:7.3f}")
    print(f"  together / one by one: wall {t2['together'][0] / t2['one by one'][0]:.2f}, "
          f"CPU {t2['together'][1] / t2['one by one'][1]:.2f}")
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

if __name__ == "__main__":
    main()
