"""The exported explainer in engines other than onnxruntime (issue 21, section 3): OpenVINO
(f32 precision hint), tract (``--unroll``: it has no Loop) and the ONNX reference evaluator,
on the demo model and a torchvision resnet18 (seeded random weights, 64x64, layer4.1): every
map within 1e-4 of ``Explainer.explain``'s, the same target, the completeness gap within
2e-5 + 1e-4 of itself. Measured (tools/bench_runtimes.py, docs/export.md): maps 5e-7..2.6e-6
off, gaps 2e-7..1.2e-6 off (2.3e-6 of a gap of 18.6): float32 kernels that round unlike
onnxruntime's. Where Python's gap is not defined (a baseline equal to x, or one pixel off it:
y_m − y_0 float32 noise) every engine gives NaN, as onnxruntime does. An engine that is not
installed skips its tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_runtimes import RUNNERS, default_feeds, max_map_difference, openvino_inputs
from PIL import Image

from ort_cam import Explainer
from ort_cam.export import export_explainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLES = ROOT / "models" / "demo" / "samples"
STAR, RING = SAMPLES / "star_unsaturated.png", SAMPLES / "ring_saturated.png"
RESNET_LAYER = "/layer4/layer4.1/relu_1/Relu_output_0"
STRETCH = {"preset": "imagenet", "resize": "stretch"}
#: 1e-4 (the issue's bar) against 2.6e-6 measured: float32 kernels of another engine.
MAP_TOL = 1e-4
#: The RSI gap, a fraction of y_m − y_0 (a small difference of float32 scores: resnet18's
#: random weights give y ≈ 0.005): to 2e-5 (1.2e-6 measured) + 1e-4 of itself (2.3e-6
#: measured, of the demo's gap of 18.6 at m = 8 from the ring baseline).
GAP_ABS, GAP_REL = 2e-5, 1e-4
ENGINES = {"openvino": "openvino", "tract": "tract", "onnx.reference": "onnx.reference"}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _photo(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def _need(engine: str) -> None:
    if engine != "onnx.reference":
        pytest.importorskip(engine)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> (Loop explainer, unrolled explainer, image, Explanation), each explainer
    exported with a chunk that makes several Loop iterations."""
    d = tmp_path_factory.mktemp("runtimes")
    out = {}
    ex = Explainer(DEMO, chunk_size=5, quiet=True)
    for unroll in (False, True):
        export_explainer(DEMO, out=d / f"demo{int(unroll)}.onnx", steps=8, chunk_size=5,
                         unroll=unroll)
    out["demo"] = (d / "demo0.onnx", d / "demo1.onnx", pixels(STAR),
                   ex.explain(STAR, steps=8))
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torch_reference import build_model

    path = d / "resnet18.onnx"
    torch.onnx.export(build_model("resnet18", seed=3), torch.zeros(1, 3, 64, 64), str(path),
                      opset_version=17, dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    image = _photo(0)
    for unroll in (False, True):
        export_explainer(path, RESNET_LAYER, d / f"resnet{int(unroll)}.onnx", steps=4,
                         chunk_size=3, preprocess=STRETCH, unroll=unroll)
    ex = Explainer(path, RESNET_LAYER, preprocess=STRETCH, chunk_size=3, quiet=True)
    out["resnet18"] = (d / "resnet0.onnx", d / "resnet1.onnx", image, ex.explain(image, steps=4))
    return out


def _assert_matches(out: dict, r) -> None:
    assert int(out["target"]) == r.target
    ref = {f"{k}_map": v.map for k, v in r.methods.items()}
    assert max_map_difference(out, ref) <= MAP_TOL
    gap = float(out["rsi_completeness_gap"])
    assert abs(gap - r.completeness_gap) <= GAP_ABS + GAP_REL * r.completeness_gap


@pytest.mark.parametrize("model", ["demo", "resnet18"])
@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_gives_the_python_maps(cases, engine, model):
    _need(engine)
    looped, unrolled, image, r = cases[model]
    path = unrolled if engine == "tract" else looped
    _assert_matches(RUNNERS[engine](path)(default_feeds(path, image)), r)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_explains_the_class_and_baseline_fed(cases, engine, tmp_path):
    """target_index and baseline are inputs every engine can feed (OpenVINO folded them into
    constants when they had initializers)."""
    _need(engine)
    path = cases["demo"][1 if engine == "tract" else 0]
    r = Explainer(DEMO, chunk_size=5, quiet=True).explain(STAR, steps=8, target=2,
                                                          baseline=str(RING))
    feeds = default_feeds(path, pixels(STAR), target=2)
    feeds["baseline"] = pixels(RING)
    _assert_matches(RUNNERS[engine](path)(feeds), r)


@pytest.mark.parametrize("off", [False, True], ids=["baseline-is-x", "one-pixel-off"])
@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_gives_nan_where_the_gap_is_undefined(cases, engine, off, tmp_path):
    """The baseline fed as the image itself (y_m − y_0 = 0), or with pixel (0, 0) one level
    brighter (y_m − y_0 measured 1.2e-7 in onnxruntime and OpenVINO, 2.4e-7 in tract and the
    reference evaluator: at most 0.033 of the 64-ulp threshold, 7.3e-6 here): Python's gap is
    NaN and every engine's too. Grad-CAM's map, which reads x alone, as above; the path
    methods' maps normalise float noise here, and engines differ there (up to 8e-3 measured)."""
    _need(engine)
    path = cases["demo"][1 if engine == "tract" else 0]
    image = pixels(STAR)
    base = image.copy()
    base[0, 0, 0] += int(off)
    Image.fromarray(base).save(tmp_path / "baseline.png")
    r = Explainer(DEMO, chunk_size=5, quiet=True).explain(
        STAR, steps=8, baseline=str(tmp_path / "baseline.png"))
    assert np.isnan(r.completeness_gap)  # Python says undefined: the case is what it says
    feeds = default_feeds(path, image)
    feeds["baseline"] = base
    out = RUNNERS[engine](path)(feeds)
    assert int(out["target"]) == r.target
    assert np.isnan(out["rsi_completeness_gap"])
    assert max_map_difference(out, {"gradcam_map": r["gradcam"].map}) <= MAP_TOL


def test_openvino_keeps_the_inputs_it_would_fold(tmp_path):
    """With --optional-inputs the defaults are initializers, which OpenVINO folds: its
    compiled model then takes the image alone (why they are plain inputs by default)."""
    pytest.importorskip("openvino")
    plain = export_explainer(DEMO, out=tmp_path / "p.onnx", steps=2)
    assert [i.name for i in plain.graph.input] == ["image", "target_index", "baseline"]
    assert openvino_inputs(tmp_path / "p.onnx") == ["image", "target_index", "baseline"]
    export_explainer(DEMO, out=tmp_path / "o.onnx", steps=2, optional_inputs=True)
    assert openvino_inputs(tmp_path / "o.onnx") == ["image"]


def test_tract_refuses_the_loop_by_name(cases):
    """tract has no Loop: the default export is refused naming it; --unroll runs (above),
    also with the baseline's rows left symbolic (the runs above fix them)."""
    tract = pytest.importorskip("tract")
    looped, unrolled = cases["demo"][:2]
    with pytest.raises(tract.TractError, match=r"Unimplemented\(Loop\)"):
        tract.onnx().load(str(looped)).into_model()
    runnable = tract.onnx().load(str(unrolled)).into_model().into_runnable()
    outs = runnable.run([pixels(STAR), np.array(3, np.int64), np.zeros((0, 96, 3), np.uint8)])
    assert int(outs[0].to_numpy()) == 3


@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_refuses_a_baseline_of_another_size(cases, engine):
    """A baseline of 48 rows fails the run in every engine (onnxruntime, OpenVINO and tract
    name the guard node; the reference evaluator says which op failed)."""
    _need(engine)
    path = cases["demo"][1 if engine == "tract" else 0]
    feeds = default_feeds(path, pixels(STAR))
    feeds["baseline"] = np.zeros((48, 96, 3), np.uint8)
    with pytest.raises(Exception, match="baseline_rows_must_be_0_or_96|operator 'Add'"):
        RUNNERS[engine](path)(feeds)
