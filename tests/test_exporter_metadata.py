"""What exporters store in a model's metadata (``graph.exported``): class names and input size,
used by default; and a size that cannot run named as the cause, with the node that refuses it.

The models are small classifiers x [N, 3, H, W] (H and W dynamic) -> Conv -> Relu ->
GlobalAveragePool -> Flatten -> Gemm -> Softmax [N, 3], their metadata written the way each
exporter writes it (Ultralytics: ``str()`` of Python values; Deepness: JSON).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ort_cam
from ort_cam.errors import ModelLoadError
from ort_cam.graph import load_model
from ort_cam.graph.exported import exported

NAMES = ["cat", "dog", "bird"]
LAYER = "r"
#: What Ultralytics' exporter stores (ultralytics/engine/exporter.py: str() of each value),
#: for a classifier exported with dynamic=True at imgsz=(48, 64).
ULTRALYTICS = {
    "description": "Ultralytics YOLO11n-cls model trained on imagenet", "author": "Ultralytics",
    "date": "2026-12-06T12:00:00.000000", "version": "8.3.200",
    "license": "AGPL-3.0 License (https://ultralytics.com/license)",
    "docs": "https://docs.ultralytics.com", "stride": "1", "task": "classify", "batch": "1",
    "imgsz": str([48, 64]), "names": str(dict(enumerate(NAMES))),
    "args": str({"batch": 1, "dynamic": True, "half": False}), "channels": "3",
}


def classifier(metadata: dict[str, str], stride: int = 1) -> onnx.ModelProto:
    """The classifier; ``stride``: its Conv's (the graph then scales its input down by it)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3])
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (4, 3, 3, 3)), ("fc", (3, 4)), ("b", (3,)))]
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1],
                              strides=[stride, stride]),
             helper.make_node("Relu", ["c"], [LAYER]),
             helper.make_node("GlobalAveragePool", [LAYER], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["output0"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "cls", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return model


def image() -> np.ndarray:
    return (np.random.default_rng(1).random((30, 50, 3)) * 255).astype(np.uint8)


def test_ultralytics_names_and_size_read():
    found = exported(classifier(ULTRALYTICS))
    assert (found.names, found.size, found.size_source) == (NAMES, (48, 64), "imgsz (Ultralytics)")


def test_deepness_and_yolov5_forms_read():
    deepness = classifier({"model_type": json.dumps("Detector"),
                           "class_names": json.dumps({"0": "a", "1": "b", "2": "c"}),
                           "tiles_size": json.dumps(40)})
    assert (exported(deepness).names, exported(deepness).size) == (["a", "b", "c"], (40, 40))
    yolov5 = classifier({"stride": "32", "names": str(["a", "b", "c"])})
    assert (exported(yolov5).names, exported(yolov5).size) == (["a", "b", "c"], None)
    # keys that do not parse as names are left out, not guessed at
    assert exported(classifier({"names": "{0: 'a', 2: 'c'}", "imgsz": "[0, 64]"})) \
        .names is None


def test_metadata_size_and_names_used_by_default(tmp_path):
    path = tmp_path / "yolo11n-cls.onnx"
    onnx.save(classifier(ULTRALYTICS), str(path))
    lm = load_model(path)
    assert lm.shapes["images"] == (2, 3, 48, 64)
    assert "dynamic height and width set to 48x64, the input size its exporter stored in the " \
        "model's metadata (imgsz (Ultralytics))" in lm.notes
    ex = ort_cam.Explainer(path, LAYER, cache=False, quiet=True)
    assert ex.labels == NAMES
    r = ex.explain(image(), steps=4)
    assert r.label == NAMES[r.target]
    assert r["gradcam"].map.shape == (48, 64)  # the image was run at the stored size
    given = ort_cam.Explainer(path, LAYER, cache=False, quiet=True, size=(32, 40))
    assert given.explain(image(), steps=4)["gradcam"].map.shape == (32, 40)


def test_own_labels_first_and_names_of_another_count_left_out():
    own = classifier({**ULTRALYTICS, "ort_cam.labels": json.dumps(["x", "y", "z"])})
    assert ort_cam.Explainer(own, LAYER, cache=False, quiet=True).labels == ["x", "y", "z"]
    four = classifier({**ULTRALYTICS, "names": str(dict(enumerate(NAMES + ["fish"])))})
    assert ort_cam.Explainer(four, LAYER, cache=False, quiet=True).labels is None


def recogniser() -> onnx.ModelProto:
    """x [N, 3, H, W] -> Conv with a 48-high kernel (no padding) -> Squeeze(axis 2): runs only
    where H = 48, as a text recogniser whose height is fixed by its training -> ReduceMean over
    the width -> Softmax [N, 4]."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 48, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([2], np.int64), "axis_h")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Squeeze", ["r", "axis_h"], ["s"], name="squeeze_height"),
             helper.make_node("ReduceMean", ["s"], ["m"], axes=[2], keepdims=0),
             helper.make_node("Softmax", ["m"], ["y"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "rec", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_size_that_cannot_run_is_named_with_the_node_that_refuses_it():
    with pytest.raises(ModelLoadError) as err:
        load_model(recogniser())
    text = str(err.value)
    assert "input 'x' at ['N', 3, 224, 224] (224x224, the default for a dynamic size)" in text
    assert "node 'squeeze_height' (Squeeze) refuses it" in text and "--size HxW" in text
    assert "re-export" not in text and "\n" not in text
    assert load_model(recogniser(), size=(48, 160)).shapes["y"] == (2, 4)
    stored = recogniser()
    stored.metadata_props.add(key="imgsz", value=str([48, 96]))
    assert load_model(stored).shapes["x"] == (2, 3, 48, 96)
    with pytest.raises(ModelLoadError, match=r"\(--size 64x96\): node 'squeeze_height'"):
        load_model(recogniser(), size=(64, 96))


def test_any_size_and_nothing_names_one_each_image_at_its_own_size(capsys):
    """A model whose height and width are dynamic, no size given or stored: prepared at 224
    (the layers and their shapes), each image is explained at its own size rounded to a
    multiple of what the graph scales down by (here 4: a stride-4 Conv), one explainer (and
    prepared model) per size, packing only within a size; the maps are those of an explainer
    made for that size."""
    model = classifier({}, stride=4)
    ex = ort_cam.Explainer(model, LAYER, cache=False, preprocess="raw")
    assert ex.preprocess.size == (224, 224) and ex._setup.prepared.size_multiple == 4
    assert "its own size rounded to a multiple of 4" in capsys.readouterr().err
    wide = image()  # 30 x 50 -> 32 x 48
    tall = (np.random.default_rng(2).random((51, 22, 3)) * 255).astype(np.uint8)  # -> 52 x 24
    got = ex.explain_many([wide, tall, wide[::-1]], steps=4)
    assert [r["gradcam"].map.shape for r in got] == [(32, 48), (52, 24), (32, 48)]
    err = capsys.readouterr().err
    assert err.count("a size of its own") == 2
    assert "note: explaining at 32x48" in err and "note: explaining at 52x24" in err
    assert sorted(ex._sizes) == [(32, 48), (52, 24)]
    for img, r in zip([wide, tall, wide[::-1]], got, strict=True):
        h, w = r["gradcam"].map.shape
        alone = ort_cam.Explainer(model, LAYER, cache=False, quiet=True, preprocess="raw",
                                  size=(h, w)).explain(img, steps=4)
        for m in r.methods:  # the same model at the same size: the same numbers
            np.testing.assert_array_equal(r[m].raw, alone[m].raw)
    assert ex.explain(wide, steps=4)["gradcam"].map.shape == (32, 48)
    ex.own_sizes = False  # what the audits set: every image at the one prepared size
    assert ex.explain(wide, steps=4)["gradcam"].map.shape == (224, 224)
