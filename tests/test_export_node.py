"""examples/node: the exported explainer run by onnxruntime-node, no Python at run time.

The example is installed from the npm registry into a temporary folder (``npm install``), then
``node explain.mjs IMAGE explainer.onnx out.png --json out.json`` runs; its maps equal the
Python engine's to 2e-5, and it prints RSI's gap as ``ort-cam explain`` does ("n/a" where the
explainer gives NaN: a baseline equal to x). A segmentation model's explainer
(tests/target_models.py's segmenter, ``--target-kind segment``) likewise, with its default mask
and with a mask and a class fed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from export_clients import (
    RING,
    SAMPLE,
    SEG_SIZE,
    assert_client_matches,
    assert_segment_matches,
    demo_explainer,
    gap_shown,
    npm_install,
    reference,
    segment_reference,
    segmenter,
)
from PIL import Image


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    return npm_install("node", tmp_path_factory.mktemp("node"))


def node(example: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "explain.mjs", *map(str, args)], cwd=example,
                          capture_output=True, text=True, timeout=300)


def test_node_maps_equal_the_python_engine(example, tmp_path):
    model = demo_explainer(tmp_path / "explainer.onnx")
    out_png, out_json = tmp_path / "out.png", tmp_path / "out.json"
    done = node(example, SAMPLE, model, out_png, "--json", out_json)
    assert done.returncode == 0, done.stderr
    r = reference()
    assert f"class {r.target}," in done.stdout
    assert f", RSI gap {gap_shown(r)}, " in done.stdout  # 0.64%
    # maps in [0, 1]: measured 1.1e-6 apart with the Python engine at onnxruntime's basic level
    # (the client's is all); 2e-5 is 19x that
    assert_client_matches(json.loads(out_json.read_text()), r, map_tol=2e-5)
    strip = np.asarray(Image.open(out_png).convert("RGB"))
    assert strip.shape == (96, 4 * 96, 3)  # the image, then one overlay per method
    assert np.array_equal(strip[:, :96], np.asarray(Image.open(SAMPLE).convert("RGB")))


def test_node_explains_another_target(example, tmp_path):
    """The default export's plain inputs: the target fed, the empty baseline (the default)."""
    model = demo_explainer(tmp_path / "explainer.onnx", baseline=str(RING))
    out_json = tmp_path / "out.json"
    done = node(example, SAMPLE, model, tmp_path / "out.png", "--target", "2",
                "--json", out_json)
    assert done.returncode == 0, done.stderr
    assert_client_matches(json.loads(out_json.read_text()),
                          reference(target=2, baseline=str(RING)), map_tol=2e-5)  # (above)


def test_node_says_n_a_where_the_gap_is_undefined(example, tmp_path):
    """An explainer whose default baseline is the image itself: y_m − y_0 = 0, so the gap is
    NaN in the explainer, null in the JSON and n/a on the line, as ``ort-cam explain`` says."""
    model = demo_explainer(tmp_path / "explainer.onnx", baseline=str(SAMPLE))
    out_json = tmp_path / "out.json"
    done = node(example, SAMPLE, model, tmp_path / "out.png", "--json", out_json)
    assert done.returncode == 0, done.stderr
    r = reference(baseline=str(SAMPLE))
    assert gap_shown(r) == "n/a (y at x equals y at the baseline)"
    assert f", RSI gap {gap_shown(r)}, " in done.stdout
    assert_client_matches(json.loads(out_json.read_text()), r, map_tol=2e-5)  # (above)


def test_node_refuses_a_target_it_cannot_feed_and_a_wrong_size(example, tmp_path):
    optional = demo_explainer(tmp_path / "optional.onnx", optional_inputs=True)
    done = node(example, SAMPLE, optional, tmp_path / "o.png", "--target", "2")
    assert done.returncode == 1
    assert "re-export it without that option" in done.stderr
    model = demo_explainer(tmp_path / "explainer.onnx")
    small = tmp_path / "small.png"
    Image.open(SAMPLE).resize((64, 64)).save(small)
    done = node(example, small, model, tmp_path / "o.png")
    assert done.returncode == 1
    assert done.stderr.strip() == (f"error: {small} is 64x64; the explainer takes 96x96 "
                                   "(resize it first)")


def test_node_explains_a_segmentation_model(example, tmp_path):
    pytest.importorskip("torch")
    model, explainer, image = segmenter(tmp_path)
    out_png, out_json = tmp_path / "out.png", tmp_path / "out.json"
    done = node(example, image, explainer, out_png, "--json", out_json)
    assert done.returncode == 0, done.stderr
    r = segment_reference(model, image)
    area = r.target_record["mask_area"]
    assert done.stdout.startswith(f"class {r.target}, y ") and f", {area} weighted" in done.stdout
    assert "(image | mask | gradcam | igcam | rsi)" in done.stdout
    # same chunks, same fused graph: maps measured 5.6e-16, the gap (8.6e-8) 1.7e-14 apart; with
    # the Python engine's session at onnxruntime's basic level (the client's is all), which
    # another onnxruntime build may do as well: maps 3.2e-7 (map_tol 1e-5: 31x), the gap 4.3e-8
    # and 1.4e-7 (with the mask below) absolute: gap_abs 2e-6, 14x (this gap is float noise at
    # any m; a walk of m ± 1 shows in IG-CAM's map instead, 2.5e-3 apart)
    assert_segment_matches(json.loads(out_json.read_text()), r, map_tol=1e-5, gap_abs=2e-6)
    strip = np.asarray(Image.open(out_png).convert("RGB"))
    assert strip.shape == (SEG_SIZE, 5 * SEG_SIZE, 3)  # image, mask, one overlay per method


def test_node_explains_a_class_over_a_given_mask(example, tmp_path):
    pytest.importorskip("torch")
    model, explainer, image = segmenter(tmp_path)
    mask = np.zeros((SEG_SIZE, SEG_SIZE), np.uint8)
    mask[8:40, 20:50] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out_json = tmp_path / "out.json"
    done = node(example, image, explainer, tmp_path / "out.png", "--target", "1", "--mask",
                tmp_path / "mask.png", "--json", out_json)
    assert done.returncode == 0, done.stderr
    r = segment_reference(model, image, target=1, mask=mask > 0)
    assert r.target_record["mask_area"] == 32 * 30
    assert_segment_matches(json.loads(out_json.read_text()), r, map_tol=1e-5, gap_abs=2e-6)
    narrow = tmp_path / "narrow.png"
    Image.fromarray(mask[:, :40]).save(narrow)
    done = node(example, image, explainer, tmp_path / "o.png", "--mask", narrow)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {narrow} is 40 wide; the output's grid is 64 wide"

