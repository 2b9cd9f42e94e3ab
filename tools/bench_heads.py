"""Benchmark of the fused gradient model (issue: gradient heads).

On resnet18 at 224² with batch 51, compares side by side in one run:
  - a plain onnxruntime forward of the original model;
  - the fused gradient model at the last block (goal: <= 1.15x the forward);
  - the fused model at layer3's output, whose head holds layer4's convolutions, with the
    stride-1 input-gradients emitted as Conv with pre-flipped weights vs as ConvTranspose.

    python tools/bench_heads.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision, interleaved_medians, random_batch, scratch_dir  # noqa: E402

from ort_cam.grad import fused_model, rules_nn  # noqa: E402
from ort_cam.graph import load_model  # noqa: E402
from ort_cam.runtime import session_options  # noqa: E402

LAST = "/layer4/layer4.1/relu_1/Relu_output_0"
MID = "/layer3/layer3.1/relu_1/Relu_output_0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=51)
    args = ap.parse_args()
    tmp = scratch_dir("ort_cam_bench_")
    path = tmp / "resnet18.onnx"
    export_torchvision("resnet18", path)
    lm = load_model(path)

    def session(proto):
        return ort.InferenceSession(proto.SerializeToString(), session_options(args.threads),
                                    providers=["CPUExecutionProvider"])

    x = random_batch(args.batch)
    w = np.zeros((args.batch, 1000), np.float32)
    w[:, 1] = 1.0
    plain = session(lm.proto)
    fused_last = session(fused_model(lm, LAST))
    default = rules_nn.STRIDE1_AS_CONV
    rules_nn.STRIDE1_AS_CONV = True
    mid_conv = session(fused_model(lm, MID))
    rules_nn.STRIDE1_AS_CONV = False
    mid_convt = session(fused_model(lm, MID))
    rules_nn.STRIDE1_AS_CONV = default
    feeds = {"input": x, "target_weights": w}
    t = interleaved_medians({
        "forward": lambda: plain.run(None, {"input": x}),
        "fused@layer4": lambda: fused_last.run(None, feeds),
        "fused@layer3 (Conv)": lambda: mid_conv.run(None, feeds),
        "fused@layer3 (ConvTranspose)": lambda: mid_convt.run(None, feeds),
    }, args.repeats)
    print(f"resnet18 224x224 batch {args.batch}, {args.threads} threads, "
          f"median of {args.repeats} (onnxruntime {ort.__version__})")
    for name, sec in t.items():
        print(f"  {name:32s} {sec * 1000:8.1f} ms   {sec / t['forward']:.3f}x forward")
    ratio = t["fused@layer4"] / t["forward"]
    verdict = "OK" if ratio <= 1.15 else "MISS"
    print(f"fused@layer4 / forward = {ratio:.3f} (goal <= 1.15): {verdict}")
    conv, convt = t["fused@layer3 (Conv)"], t["fused@layer3 (ConvTranspose)"]
    faster = "Conv" if conv < convt else "ConvTranspose"
    print(f"stride-1 input-gradient: {faster} is faster (Conv/ConvTranspose = {conv / convt:.3f});"
          f" default STRIDE1_AS_CONV = {default}")


if __name__ == "__main__":
    main()
