"""``ort-cam explain`` and ``ort-cam metadata`` through CliRunner on a tiny conv net."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from click.testing import CliRunner
from PIL import Image

import ort_cam
from ort_cam.cli import main
from ort_cam.cli.explain_cmd import _line
from ort_cam.methods import MethodOptions
from ort_cam.result import GAP_UNDEFINED, Explanation, gap_defined

LAYER = "relu1_out"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    imgs = d / "imgs"
    imgs.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(imgs / f"{name}.png")
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    (d / "labels.txt").write_text("\n".join(f"class_{i}" for i in range(5)) + "\n")
    return {"dir": d, "imgs": imgs, "model": tiny_models.conv_net(d),
            "blocked": tiny_models.blocked_net(d)}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def explain(s, out, *extra):
    return run("explain", s["model"], s["imgs"], "--layer", LAYER, "--out", out,
               "--preprocess", "raw", "--steps", "8", *extra)


def test_outputs_follow_the_contract_and_match_the_api(setup, tmp_path):
    out = tmp_path / "cams"
    res = explain(setup, out, "--labels", setup["dir"] / "labels.txt")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "a.png", "b.npz", "b.png",
                                                     "results.jsonl"]
    ex = ort_cam.Explainer(setup["model"], LAYER, preprocess="raw", quiet=True)
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [rec["stem"] for rec in lines] == ["a", "b"]
    for rec in lines:
        z = np.load(out / f"{rec['stem']}.npz")
        assert sorted(z.files) == sorted(["target", "scores_path", "rsi_completeness_gap"] + [
            f"{m}_{k}" for m in ("gradcam", "igcam", "rsi") for k in ("raw", "map")])
        r = ex.explain(setup["imgs"] / f"{rec['stem']}.png", steps=8)
        assert int(z["target"]) == r.target == rec["target"]
        assert rec["label"] == f"class_{r.target}"
        np.testing.assert_allclose(z["scores_path"], r.scores_path, rtol=1e-6)
        assert z["scores_path"].shape == (9,)
        for m in ("gradcam", "igcam", "rsi"):
            np.testing.assert_allclose(z[f"{m}_raw"], r[m].raw, rtol=1e-6, atol=1e-12)
            np.testing.assert_allclose(z[f"{m}_map"], r[m].map, rtol=1e-6, atol=1e-9)
            assert z[f"{m}_map"].shape == (8, 8) and z[f"{m}_raw"].shape == (8, 8)
        assert float(z["rsi_completeness_gap"]) == pytest.approx(r.completeness_gap, rel=1e-5)
        png = Image.open(out / f"{rec['stem']}.png")
        assert png.size[0] > 3 * png.size[1]  # input + three overlays side by side


def test_never_overwrites_without_force(setup, tmp_path):
    out = tmp_path / "cams"
    assert explain(setup, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = explain(setup, out)
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("Error: ")
    assert "--force" in res.output and "Traceback" not in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    res = explain(setup, out, "--force")
    assert res.exit_code == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2  # replaced, not appended


def test_targets_json_and_methods(setup, tmp_path):
    out = tmp_path / "cams"
    res = explain(setup, out, "--target", "top1", "--target", "top:2", "--json",
                  "--methods", "gradcam,rsi")
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert [r["stem"] for r in recs] == ["a_t1", "a_t2", "b_t1", "b_t2"]
    for first, second in zip(recs[::2], recs[1::2]):
        assert second["target"] == first["top5"][1] and first["target"] == first["top5"][0]
        assert set(first["methods"]) == {"gradcam", "rsi"}
    z = np.load(out / "a_t2.npz")
    assert "igcam_raw" not in z.files and int(z["target"]) == recs[1]["target"]


def test_steps_auto_reports_m(setup, tmp_path):
    res = explain(setup, tmp_path / "c", "--steps", "auto", "--json", "--auto-tolerance", "0.5")
    rec = json.loads(res.output.splitlines()[-1])
    assert rec["completeness_gap"] <= 0.5
    assert len(np.load(tmp_path / "c" / f"{rec['stem']}.npz")["scores_path"]) == rec["steps"] + 1


@pytest.mark.parametrize("args, message", [
    (["--layer", "relu_1_out"], "unknown layer 'relu_1_out'; closest: relu1_out"),
    (["--target", "dog"], "bad target 'dog'"),
    (["--target", "9"], "out of range"),
    (["--steps", "many"], "--steps must be a positive integer or 'auto'"),
    (["--methods", "gradcam,lime"], "unknown method(s) lime"),
    (["--baseline", "white"], "unknown baseline 'white'"),
])
def test_bad_options_are_one_line_errors(setup, tmp_path, args, message):
    base = ["explain", setup["model"], setup["imgs"], "--out", tmp_path / "o",
            "--preprocess", "raw", "--steps", "4"]
    if "--layer" not in args:
        base += ["--layer", LAYER]
    res = run(*base, *args)
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in last and "Traceback" not in res.output


def test_bad_files_are_one_line_errors(setup, tmp_path):
    d = setup["dir"]
    (tmp_path / "corrupt.onnx").write_bytes(b"garbage" * 10)
    cases = [
        (["explain", d / "missing.onnx", setup["imgs"]], "model file not found"),
        (["explain", tmp_path / "corrupt.onnx", setup["imgs"]], "cannot read"),
        (["explain", setup["model"], d / "broken.png"], "cannot read image"),
        (["explain", setup["model"], d / "nope.png"], "image file not found"),
        (["explain", setup["blocked"], setup["imgs"]], "no gradient rule for op"),
    ]
    for args, message in cases:
        layer = "conv1_out" if args[1] == setup["blocked"] else LAYER
        res = run(*args, "--layer", layer, "--out", tmp_path / "o", "--preprocess", "raw")
        assert res.exit_code == 1, (args, res.output)
        last = res.output.strip().splitlines()[-1]
        assert last.startswith("Error: ") and message in last, last
        assert "Traceback" not in res.output


def test_metadata_roundtrip_lets_explain_run_without_flags(setup, tmp_path):
    stored = tmp_path / "with_meta.onnx"
    res = run("metadata", setup["model"], "--preprocess", "raw", "--layer", LAYER,
              "--labels", setup["dir"] / "labels.txt", "--out", stored)
    assert res.exit_code == 0, res.output
    shown = json.loads(run("metadata", stored).output)
    assert shown["ort_cam.layer"] == LAYER and shown["ort_cam.preprocess"]["scale"] == 1.0
    res = run("explain", stored, setup["imgs"] / "a.png", "--out", tmp_path / "o",
              "--steps", "4", "--json")
    rec = json.loads(res.output.splitlines()[-1])
    assert rec["layer"] == LAYER and rec["label"].startswith("class_")
    res = run("metadata", setup["model"], "--out", setup["model"])
    assert res.exit_code == 1 and "exists" in res.output
    res = run("metadata", setup["model"], "--out", setup["model"], "--force")
    assert res.exit_code == 1 and "never rewrites your model" in res.output


def _mirror(image: Path) -> Path:
    """The image mirrored about 127.5 (255 − p): with --mean 127.5 --std 127.5, −x exactly."""
    path = image.with_name("mirror.png")
    Image.fromarray(255 - np.asarray(Image.open(image))).save(path)
    return path


@pytest.mark.parametrize("constant", [False, True])
def test_the_gap_is_not_defined_where_y_at_x_equals_y_at_the_baseline(tmp_path, constant):
    """Issue 19's "RSI gap 8.6e+304%": where y at x equals y at the baseline, the gap
    |Σ IG − Δy| / |Δy| divided float32 rounding by the float64 floor (here 2.6e+291%, and
    "0%" for the constant model, each on the code before). even_net's y is even in its layer,
    the baseline −x: y_0 = y_m exactly while the path runs through other values; the constant
    net's gradients are all 0 (every map dark, which the line must still say)."""
    model, img = tiny_models.even_net(tmp_path, constant), tiny_models.random_image(tmp_path)
    args = ("explain", model, img, "--layer", "conv1_out", "--preprocess", "raw", "--mean",
            127.5, "--std", 127.5, "--score", "probability", "--baseline", _mirror(img),
            "--force", "--out", tmp_path / "o", "--steps")
    res = run(*args, 7)
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    assert rec["y0"] == rec["ym"]  # the premise, exactly
    line = next(x for x in res.output.splitlines() if x.startswith("a.png: "))
    assert ", m=7, RSI gap n/a (y at x equals y at the baseline)" in line, line
    assert ("dark: gradcam, igcam, rsi" in line) == constant
    assert rec["completeness_gap"] is None and rec["completeness_gap_undefined"] == GAP_UNDEFINED
    with np.load(tmp_path / "o" / "a.npz") as z:
        assert np.isnan(z["rsi_completeness_gap"])
        assert str(z["completeness_gap_undefined"]) == GAP_UNDEFINED
    # steps auto: no m makes it defined, so the first m is kept (it doubled to the most before)
    assert run(*args, "auto").exit_code == 0
    rec = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    assert rec["steps"] == MethodOptions().auto_start and rec["completeness_gap"] is None


def test_gap_defined_is_relative_to_the_scores():
    """|Δy| within 64 float32 ulps of max(|y_0|, |y_m|) is noise; above it, a gap."""
    ulp = float(np.finfo(np.float32).eps)
    assert not gap_defined(0.0, 0.0) and not gap_defined(0.3, 0.3)
    assert not gap_defined(1e6, 1e6 * (1 + 60 * ulp)) and gap_defined(1e6, 1e6 * (1 + 70 * ulp))
    assert gap_defined(1e-30, 2e-30)  # small scores, but Δy as large as they are
    assert gap_defined(float("nan"), 1.0)  # a NaN end: the gap is NaN as computed, not hidden


def _as(r: Explanation, kind: str, mode: str, target: int | None, **record) -> Explanation:
    """``r`` as an explanation of another kind (the text functions read only these fields)."""
    rec = None if kind in ("class", "binary") else {"kind": kind, "class": target, **record}
    return replace(r, target_kind=kind, score_mode=mode, target=target, label=None,
                   score=0.25, target_record=rec)


@pytest.mark.parametrize("kind, mode, target, record, expected", [
    ("class", "probability", 3, {}, "class (3) probability 0.25"),
    ("class", "sigmoid", 3, {}, "class (3) sigmoid 0.25"),
    ("class", "rest", 3, {}, "class (3) ReST score 0.25"),
    ("binary", "binary", 1, {}, "binary class (1) +logit 0.25"),
    ("binary", "binary", 0, {}, "binary class (0) −logit 0.25"),
    ("segment", "logit", 2, {"mask_area": 12}, "segment class (2) mask 12 px, Σ logit 0.25"),
    ("segment", "output", 0, {"mask_area": 9}, "segment class (0) mask 9 px, Σ score 0.25"),
    ("detection", "objectness", 1, {"anchors": [4, 7]},
     "detection class (1) anchors 4,7, Σ score 0.25"),
    ("embedding", "normalize", None, {}, "embedding, cosine 0.25"),
    ("sequence", "output", None, {"steps": [0, 2], "tokens": [5, 1]},
     "sequence 2 steps, tokens 5,1, Σ score 0.25"),
    ("any", "output", None, {}, "any, Σ w·output 0.25"),
])
def test_the_line_names_each_kinds_value(setup, kind, mode, target, record, expected):
    """The printed line says what y is: an embedding's cosine (it said "normalize Σ"), a
    binary target's ±logit (it said "binary"), a sum over what was chosen as "Σ score"."""
    ex = ort_cam.Explainer(setup["model"], LAYER, preprocess="raw", quiet=True)
    r = ex.explain(setup["imgs"] / "a.png", steps=2, methods=["gradcam"])
    line = _line(_as(r, kind, mode, target, **record), Path("a.png"), Path("o/a"))
    assert line == f"a.png: {expected}, m=0 -> o/a.png"  # Grad-CAM alone: x alone is run


def test_results_record_the_target_of_class_and_binary_runs(setup, tmp_path):
    """results.jsonl's target_kind and target_record, for class and binary runs as for the
    other kinds (they were absent, so null to a reader): a class's index, label, reading
    and value; a binary target's sign: +1 for class 1 (y = z), −1 for class 0 (y = −z)."""
    res = explain(setup, tmp_path / "c", "--labels", setup["dir"] / "labels.txt")
    assert res.exit_code == 0, res.output
    for rec in map(json.loads, (tmp_path / "c" / "results.jsonl").read_text().splitlines()):
        c = rec["target"]
        assert rec["target_kind"] == "class" and rec["top5"][0] == c
        assert rec["target_record"] == {"kind": "class", "class": c, "label": f"class_{c}",
                                        "value": rec["score"], "score": "probability"}
    model, got = tiny_models.binary_net(tmp_path), {}
    for target in ("top1", "0", "1"):
        out = tmp_path / f"b{target}"
        res = run("explain", model, setup["imgs"] / "a.png", "--layer", "relu1_out",
                  "--preprocess", "raw", "--steps", 2, "--target", target, "--out", out)
        assert res.exit_code == 0, res.output
        got[target] = rec = json.loads((out / "results.jsonl").read_text())
        assert rec["target_kind"] == "binary" and rec["target_record"] == {
            "kind": "binary", "class": rec["target"], "label": None, "value": rec["score"],
            "sign": 1 if rec["target"] == 1 else -1}
    assert got["1"]["score"] == -got["0"]["score"] != 0  # ±z, the same z
    assert got["top1"]["target_record"] == max((got["0"], got["1"]), key=lambda r: r["score"])[
        "target_record"]  # the predicted category: the sign of z
