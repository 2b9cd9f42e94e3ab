"""``ort-cam explain`` and ``ort-cam metadata`` through CliRunner on a tiny conv net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_models
from click.testing import CliRunner
from PIL import Image

import ort_cam
from ort_cam.cli import main

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
