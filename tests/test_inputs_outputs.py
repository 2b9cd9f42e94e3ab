"""Models, images and label files that used to give a silent wrong answer, now explained right
or refused with one line that says what to do: the output to explain (class scores among
segmentation maps, detections and integer labels), a uint8 input cast to float inside, custom
opset domains, 16-bit PNGs, EXIF orientation, label files of the wrong length, unreadable
images in a directory and an audit that skipped every image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from kind_models import N_CLASSES, custom_domain_model, multi_output, pixel_model, save
from PIL import Image

import ort_cam
from ort_cam.cli import main
from ort_cam.errors import OrtCamError
from ort_cam.graph import load_model
from ort_cam.preprocess import load_image
from ort_cam.runtime import session_options

#: The checkout's demo (CI installs ort_cam into site-packages, so not next to ort_cam.__file__).
DEMO = str(Path(__file__).resolve().parents[1] / "models" / "demo")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def last_line(res) -> str:
    return res.output.strip().splitlines()[-1]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(0)
    img = d / "img.png"
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(img)
    return {"dir": d, "img": img, "multi": save(multi_output(), d / "multi.onnx"),
            "uint8": save(pixel_model(cast=True), d / "uint8.onnx"),
            "float": save(pixel_model(cast=False), d / "float.onnx"),
            "custom": save(custom_domain_model(), d / "custom.onnx")}


# Outputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("first, message", [
    ("boxes", "cannot tell what output 'boxes' [N, 24, 4] holds; pick its target with "
              "--target-kind class|binary|segment|detection|embedding|sequence|any (`ort-cam "
              "targets` describes them), or another output with --output: seg [N, 5, 8, 8], "
              "logits [N, 3]"),
    ("label", "output 'label' is int64, not class scores [N, C]"),
])
def test_an_output_that_is_not_class_scores_is_refused(tmp_path, first, message):
    path = save(multi_output(first), tmp_path / "m.onnx")
    with pytest.raises(OrtCamError) as err:
        ort_cam.Explainer(path, "relu", quiet=True, cache=False)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_segmentation_output_is_read_as_a_segment_target(tmp_path):
    path = save(multi_output("seg"), tmp_path / "m.onnx")
    ex = ort_cam.Explainer(path, "relu", quiet=True, cache=False)
    assert ex.target_kind == "segment" and ex.reading["line"].startswith(
        "output 'seg' [N, 5, 8, 8]: target segment, score logit")


def test_output_picks_the_output_to_explain(files):
    ex = ort_cam.Explainer(files["multi"], "relu", output="logits", score="probability",
                           preprocess="raw", quiet=True, cache=False)
    assert ex.n_classes == N_CLASSES
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(files["multi"]), session_options(),
                                providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"x": x})
    np.testing.assert_allclose(ex.scores_at(x), softmax(logits), rtol=1e-5)
    r = ex.explain_array(x, baseline_array="zeros", steps=4)
    assert r.target == int(np.argmax(logits))
    with pytest.raises(OrtCamError, match="unknown output 'nope'"):
        ort_cam.Explainer(files["multi"], "relu", output="nope", quiet=True, cache=False)


def test_output_option_in_the_cli(files, tmp_path):
    m, img = files["multi"], files["img"]
    res = run("explain", m, img, "--layer", "relu", "--out", tmp_path / "a", "--steps", "2",
              "--preprocess", "raw")
    assert res.exit_code == 0 and "output 'seg' [N, 5, 8, 8]: target segment" in res.output
    res = run("explain", m, img, "--layer", "relu", "--output", "logits", "--out",
              tmp_path / "b", "--steps", "2", "--preprocess", "raw", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[-1])["target"] in range(N_CLASSES)
    res = run("split", m, "--layer", "relu", "--output", "logits", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["model_output"] == "logits"
    res = run("layers", m, "--output", "logits")
    assert res.exit_code == 0 and "-> output logits" in res.output


# uint8 inputs ----------------------------------------------------------------------------
def test_a_uint8_input_cast_inside_is_explained_in_float_after_the_cast(files):
    """The uint8 model and its float twin (the same graph without the Cast) give the same
    scores and maps; the scores are the uint8 model's own on the image's pixels (before, the
    ImageNet-normalised image was cast to uint8: another class, p = 1)."""
    lm = load_model(files["uint8"])
    assert lm.cast_inputs == {"x": np.dtype(np.uint8)} and lm.dtypes["x"] == np.float32
    assert any("is uint8 and cast to float32 inside" in n for n in lm.notes)
    ex = ort_cam.Explainer(files["uint8"], "relu", quiet=True, cache=False)
    twin = ort_cam.Explainer(files["float"], "relu", preprocess="raw", quiet=True, cache=False)
    assert ex.preprocess.source == "preset raw"
    r, t = ex.explain(files["img"], steps=8), twin.explain(files["img"], steps=8)
    pixels = np.asarray(Image.open(files["img"]).convert("RGB"))[None]
    sess = ort.InferenceSession(str(files["uint8"]), session_options(),
                                providers=["CPUExecutionProvider"])
    want = softmax(sess.run(None, {"x": pixels})[0][0].astype(np.float64))
    np.testing.assert_allclose(r.scores, want, rtol=1e-5)
    assert r.target == t.target == int(np.argmax(want))
    for name in r.methods:
        np.testing.assert_allclose(r[name].raw, t[name].raw, rtol=1e-6, atol=1e-9)


def test_a_uint8_model_refuses_a_normalising_preprocessing(files):
    with pytest.raises(OrtCamError, match=r"takes uint8 pixels and normalises them itself; "
                                          r"feed them as they are \(--preprocess raw\)"):
        ort_cam.Explainer(files["uint8"], "relu", preprocess="imagenet", quiet=True, cache=False)


def test_an_integer_input_not_cast_to_float_is_refused(tmp_path):
    path = save(pixel_model(via_int32=True), tmp_path / "int.onnx")  # uint8 -> int32 -> float
    with pytest.raises(OrtCamError, match="input 'x' is uint8 and the model does not cast it to "
                                          "float first"):
        ort_cam.Explainer(path, "relu", quiet=True, cache=False)


# Custom opset domains --------------------------------------------------------------------
def test_custom_opset_domains_load_and_explain(files):
    """A com.microsoft node and a vendor domain used to crash the loader in
    onnx.helper.find_min_ir_version_for (ValueError: Unsupported opset-version)."""
    lm = load_model(files["custom"])
    assert {o.domain for o in lm.proto.opset_import} >= {"com.microsoft", "com.example.vendor"}
    r = ort_cam.Explainer(files["custom"], "relu", preprocess="raw", quiet=True,
                          cache=False).explain(files["img"], steps=4)
    assert r["gradcam"].raw.shape == (8, 8)
    res = run("layers", files["custom"])
    assert res.exit_code == 0 and "relu" in res.output


# Images ----------------------------------------------------------------------------------
def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    values = (np.arange(48, dtype=np.uint32).reshape(6, 8) * 1365).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(load_image(tmp_path / "g16.png"))
    want = np.round(values / 257.0).astype(np.uint8)
    assert got.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], want)


@pytest.mark.parametrize("orientation, turn", [(6, -1), (8, 1), (3, 2), (1, 0)])
def test_exif_orientation_is_honoured(tmp_path, orientation, turn):
    """Orientation 6 means "rotate 90° clockwise to view", 8 counter-clockwise, 3 half a turn
    (PNG keeps the pixels exact; a JPEG gets the same turn)."""
    a = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "o.png")), np.rot90(a, turn))
    Image.fromarray(a).save(tmp_path / "o.jpg", exif=exif)
    assert np.asarray(load_image(tmp_path / "o.jpg")).shape == np.rot90(a, turn).shape
    with Image.open(tmp_path / "o.png") as im:  # a PIL image is turned as well
        np.testing.assert_array_equal(np.asarray(load_image(im)), np.rot90(a, turn))


# Labels ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("a\nb\n", "has 2 labels but the model has 3 classes"),
    ("a\nb\nc\nd\n", "has 4 labels but the model has 3 classes"),
    ("\n \n", "holds no label"),
])
def test_labels_of_the_wrong_length_are_refused(files, tmp_path, text, message):
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    with pytest.raises(OrtCamError, match=message):
        ort_cam.Explainer(files["custom"], "relu", labels=labels, quiet=True, cache=False)
    res = run("explain", files["custom"], files["img"], "--layer", "relu", "--labels", labels,
              "--out", tmp_path / "o", "--steps", "2")
    assert res.exit_code == 1 and message in last_line(res)
    res = run("metadata", files["custom"], "--labels", labels, "--out", tmp_path / "m.onnx",
              "--preprocess", "raw")
    assert res.exit_code == 1 and message in last_line(res)


def test_stored_labels_of_the_wrong_length_are_refused(files, tmp_path):
    (tmp_path / "l.txt").write_text("a\nb\nc\n")
    stored = tmp_path / "m.onnx"
    assert run("metadata", files["custom"], "--labels", tmp_path / "l.txt", "--out", stored,
               "--preprocess", "raw").exit_code == 0
    import onnx

    proto = onnx.load(str(stored))
    for p in proto.metadata_props:
        if p.key == "ort_cam.labels":
            p.value = json.dumps(["a", "b"])
    onnx.save(proto, str(stored))
    with pytest.raises(OrtCamError, match=r"labels stored in the model \(ort_cam.labels\) has 2"):
        ort_cam.Explainer(stored, "relu", quiet=True, cache=False)


def test_metadata_layer_must_exist(files, tmp_path):
    res = run("metadata", files["custom"], "--layer", "rleu", "--out", tmp_path / "m.onnx",
              "--preprocess", "raw")
    assert res.exit_code == 1 and "unknown layer 'rleu'; closest: relu" in last_line(res)
    assert not (tmp_path / "m.onnx").exists()
    res = run("metadata", files["custom"], "--layer", "logits", "--out", tmp_path / "m.onnx",
              "--preprocess", "raw")
    assert res.exit_code == 1 and "not [N,K,h,w]" in last_line(res)


# Runs over many images -------------------------------------------------------------------
def test_explain_over_a_directory_goes_on_past_an_unreadable_image(files, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("a.png", "c.png"):
        shutil.copy(files["img"], d / name)
    (d / "b.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    res = run("explain", files["custom"], d, "--layer", "relu", "--out", out, "--steps", "2",
              "--preprocess", "raw")
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines[:3]] == ["a.png", "b.png", "c.png"]
    assert lines[1].startswith("b.png: skipped (cannot read image")
    assert "1 of 3 images could not be read" in lines[-1]
    assert {p.name for p in out.iterdir()} == {"a.png", "a.npz", "c.png", "c.npz",
                                               "results.jsonl"}
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["stem"] for r in recs] == ["a", "b", "c"] and "cannot read" in recs[1]["skipped"]


def test_an_audit_that_skipped_every_image_says_so_and_fails(tmp_path):
    samples = sorted(p.name for p in (Path(DEMO) / "samples").glob("*.png"))[:2]
    assert len(samples) == 2
    csv = tmp_path / "boxes.csv"
    csv.write_text("image,label,x0,y0,x1,y1\n" + "".join(
        f"{DEMO}/samples/{s},no-such-class,0,0,10,10\n" for s in samples))
    res = run("audit", f"{DEMO}/demo_cnn.onnx", csv, "--images", "/", "--out", tmp_path / "a",
              "--steps", "2")
    assert res.exit_code == 1, res.output
    assert last_line(res).startswith("Error: no image was audited: 2 of 2 skipped (2 ")
