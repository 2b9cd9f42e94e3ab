"""Real text models read by their targets: the PP-OCRv4 detector and recogniser that the
rapidocr-onnxruntime wheel bundles (real weights), on scikit-image's page.png.

Not in the test extras: the wheel requires onnxruntime (CPU), which would sit beside ort_cam's
onnxruntime-gpu in one environment. Install it without its requirements, as
tools/make_target_pictures.py does: ``pip install --no-deps rapidocr-onnxruntime==1.4.4``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ort_cam
from ort_cam.graph import load_model
from ort_cam.preprocess import Preprocess
from ort_cam.targets import TargetOptions, read_output

SPEC = importlib.util.find_spec("rapidocr_onnxruntime")
pytestmark = pytest.mark.skipif(
    SPEC is None, reason="pip install --no-deps rapidocr-onnxruntime==1.4.4")
#: PP-OCR's preprocessing (rapidocr's config.yaml): BGR, (x / 255 - 0.5) / 0.5
OCR = {"scale": 1 / 255, "mean": (0.5,) * 3, "std": (0.5,) * 3, "channels": "BGR",
       "layout": "NCHW", "resize": "stretch"}


def _model(name: str) -> Path:
    assert SPEC is not None and SPEC.submodule_search_locations
    return Path(list(SPEC.submodule_search_locations)[0]) / "models" / name


def _title() -> np.ndarray:
    """page.png's title line, cropped to the recogniser's 8:1."""
    from skimage import data

    page = data.page()
    return np.repeat(page[0:38, 0:304, None], 3, axis=2)


def test_the_text_detector_is_a_one_channel_segment():
    lm = load_model(_model("ch_PP-OCRv4_det_infer.onnx"), size=(192, 384))
    r = read_output(lm, lm.output, TargetOptions())
    assert (r.kind, r.output.shape) == ("segment", (1, 192, 384))


def test_the_recogniser_reads_the_title_as_rapidocr_decodes_it():
    """The recogniser ends in an opset-12 Softmax(axis=2) that onnx's version converter
    writes behind a Flatten (it was refused as 'cannot tell'). ort_cam's greedy CTC choice
    at x is the one decoded by hand from onnxruntime's run of the original model, and reads
    the line."""
    path = _model("ch_PP-OCRv4_rec_infer.onnx")
    pre = Preprocess(size=(48, 384), **OCR)  # type: ignore[arg-type]
    ex = ort_cam.Explainer(path, "p2o.Add.231", preprocess=pre, size=(48, 384), cache=False)
    assert ex.reading["line"].startswith("output 'softmax_11.tmp_0' [N, 48, 6625]: target "
                                         "sequence")
    r = ex.explain(_title(), steps=4, methods=("gradcam",))
    x = pre(_title())
    probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.reshape(1, 3, 48, 384).astype(np.float32)})[0][0]
    best = probs.argmax(1)
    kept = [t for t in range(len(best)) if best[t] != 0 and (t == 0 or best[t] != best[t - 1])]
    assert r.target_record["steps"] == kept
    assert r.target_record["tokens"] == [int(best[t]) for t in kept]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    chars = ["<blank>", *meta["character"].split("\n"), " "]
    assert "".join(chars[int(best[t])] for t in kept) == "Region-based segmentation "
    # the target at x: the kept steps' probabilities summed (float32 output: 26 terms of
    # ~1, a float32 sum rounds at ~26 * 6e-8 = 2e-6; 1e-5 leaves 5x)
    assert r.score == pytest.approx(float(sum(probs[t, best[t]] for t in kept)), rel=1e-5)
