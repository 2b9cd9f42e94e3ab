"""Transformer layers of the full torchvision vit_b_16 and swin_t against torch autograd, as a
table (tests/test_transformers.py runs the same comparison, tests/transformer_reference.py,
on small instances of the same classes).

Random weights (seed 0), the classifier rescaled so that the logits are not flat, exported by
the TorchScript exporter at opset 17, batch 2 with different target weights per row. Per model,
layer (torch module) and score mode:

  layout   how ort_cam lists the layer: tokens hxw+k (ViT: an h x w grid after k extra
           tokens), or NHWC (Swin)
  act      the fused model's layer activation vs float64 torch (max |diff| / max |ref|)
  grad     d sum(w * score) / d layer (on the grid) vs float64 torch
  floor    torch float32 vs float64 on the same gradient: the float32 noise floor
  tol      10 x floor + 1e-6, what the test allows
  cam      the Grad-CAM map (top class of sample 0) from the Explainer vs torch float64

Usage: python tools/check_transformers.py [vit_b_16] [swin_t] [--size 224]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import transformer_reference as tr  # noqa: E402

#: model -> (builder of the torch net, the classifier Linear, the two layers' modules)
MODELS = {
    "vit_b_16": ("heads.head", ["encoder.layers.encoder_layer_5",
                                "encoder.layers.encoder_layer_11.ln_1"]),
    "swin_t": ("head", ["features.5", "norm"]),
}


def build(name: str, size: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    kw = {"image_size": size} if name.startswith("vit") else {}
    net = getattr(torchvision.models, name)(weights=None, **kw).eval()
    tr.rescale_head(dict(net.named_modules())[MODELS[name][0]])
    return net


def tensor_of(net, module: str, lm, values: dict, x: np.ndarray) -> str:
    return tr.find_tensor(values, tr.module_output(net, module, x))


def gradcam_error(path: Path, net, module: str, tensor: str, x: np.ndarray, n: int) -> float:
    import ort_cam

    ex = ort_cam.Explainer(path, tensor, preprocess="raw", quiet=True, cache=False)
    r = ex.explain_array(x[:1], baseline_array="zeros", methods=["gradcam"])
    w = np.zeros((1, n), np.float32)
    w[0, r.target] = 1
    res = tr.check_layer(tr.load(path), net, module, tensor, x[:1], w, "probability")
    h, ww = res.grid

    def nchw(t):
        if res.layout == "tokens":
            return t[:, res.extra:, :].reshape(t.shape[0], h, ww, t.shape[2]).permute(0, 3, 1, 2)
        return t.permute(0, 3, 1, 2)

    ref = tr.torch_reference(net, module, x[:1], w, "probability", nchw)
    return tr.rel_err(r["gradcam"].raw, tr.gradcam_reference(ref.act, ref.grad64))


def check(name: str, size: int, workdir: Path) -> None:
    net = build(name, size)
    path = tr.export(net, size, workdir / f"{name}.onnx")
    lm = tr.load(path)
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    values = tr.run_all(lm, x, ranks=(3,) if name.startswith("vit") else (4,))
    tensors = {m: tensor_of(net, m, lm, values, x) for m in MODELS[name][1]}
    del values
    n = int(lm.shapes[lm.output][1])
    w = np.random.default_rng(2).standard_normal((2, n)).astype(np.float32)
    for module, tensor in tensors.items():
        cam = gradcam_error(path, net, module, tensor, x, n)
        for score in ("probability", "logit"):
            r = tr.check_layer(lm, net, module, tensor, x, w, score)
            layout = (f"tokens {r.grid[0]}x{r.grid[1]}+{r.extra}" if r.layout == "tokens"
                      else r.layout)
            print(f"{name:9} {module:38} {layout:15} {score:11} act {r.act:.1e}  grad "
                  f"{r.grad:.2e}  floor {r.floor:.1e}  tol {r.tolerance:.1e}  cam {cam:.1e}"
                  + ("" if r.grad <= r.tolerance else "  FAIL"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            check(name, args.size, Path(tmp))


if __name__ == "__main__":
    main()
