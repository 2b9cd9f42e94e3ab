"""``ort-cam audit --sanity``: the sanity checks of saliency maps on the demo model (the fast
twin of tests/test_sanity_effnet.py). Each record's similarities are those of the maps that
the randomised model, built again here, gives; Eigen-CAM, which reads only the activations
at the layer, is unchanged (similarity 1) while only layers above it are random; the data
test with the cascade's last model gives that step's numbers again; resume, settings and
refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from audit_data import demo_dataset
from click.testing import CliRunner

from ort_cam import Explainer
from ort_cam.audit.randomise import randomised_models
from ort_cam.audit.sanity_report import SIMILAR_ABOVE
from ort_cam.audit.similarity import NAMES, similarities
from ort_cam.cli import main

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "demo_cnn.onnx"
METHODS = "gradcam,rsi,eigencam"
LAYERS = ["/fc/Gemm", "/block4/conv/Conv", "/block3/conv/Conv", "/block2/conv/Conv",
          "/block1/conv/Conv", "/stem/conv/Conv"]


def _audit(data: dict, out: Path, *extra) -> tuple[int, str]:
    args = ["audit", data["model"], data["csv"], "--out", out, "--steps", 4,
            "--deletion-steps", 2, "--methods", METHODS, *extra]
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "sanity" / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    d = tmp_path_factory.mktemp("sanity")
    data = demo_dataset(d, n=3)  # two images and an unreadable file
    code, output = _audit(data, d / "out", "--sanity", "cascade", "--sanity-seed", "5")
    assert code == 0, output
    return data, d / "out", output


def test_a_line_per_step_and_image(cascade):
    data, out, output = cascade
    lines = _lines(out)
    assert [(r["step"], r["layer"], r["randomised"]) for r in lines[::2]] == [
        (k, name, k + 1) for k, name in enumerate(LAYERS)]
    assert len(lines) == 2 * len(LAYERS) and len({r["key"] for r in lines}) == 2
    assert all(set(r["methods"]) == set(METHODS.split(",")) for r in lines)
    assert all(set(m) == {*NAMES, "dark"} for r in lines for m in r["methods"].values())
    assert not any(m["dark"] for r in lines for m in r["methods"].values())  # 6 layers deep
    assert "sanity (model-parameter randomisation, cascade; median over the 6 steps)" in output


def test_the_records_hold_the_randomised_models_similarities(cascade):
    """Step 2 (fc and block4 random) rebuilt here: its maps' similarities to the audited
    model's equal the record's."""
    data, out, _ = cascade
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    first = next(r for r in results if r["status"] == "ok")
    image = data["csv"].parent / first["key"]
    models = list(randomised_models(onnx.load(DEMO), "cascade", seed=5))
    kw = dict(target=first["target"], steps=4, methods=METHODS.split(","))
    before = Explainer(DEMO, quiet=True, cache=False).explain(image, **kw)
    after = Explainer(models[1][2], "block4_out", quiet=True, cache=False).explain(image, **kw)
    rec = next(r for r in _lines(out) if r["step"] == 1 and r["key"] == first["key"])
    for m, got in rec["methods"].items():
        want = similarities(before[m].map, after[m].map)
        for n in NAMES:  # the same float64 numbers, recomputed
            assert got[n] == pytest.approx(want[n], abs=1e-9), (m, n)


def test_eigencam_reads_only_the_layer(cascade):
    """Randomising fc (above the layer block4_out) changes the gradients, not the
    activations: Eigen-CAM's maps are the audited ones (similarity 1), Grad-CAM's are not."""
    _, out, _ = cascade
    for r in _lines(out):
        if r["step"] == 0:
            for n in NAMES:
                assert r["methods"]["eigencam"][n] == pytest.approx(1.0, abs=1e-9)
            assert r["methods"]["gradcam"]["ssim"] < 0.9
        else:  # block4 and below change the activations too
            assert r["methods"]["eigencam"]["ssim"] < 1 - 1e-3


def test_summary_report_and_flags(cascade):
    _, out, _ = cascade
    summary = json.loads((out / "summary.json").read_text())["sanity"]
    assert [s["layer"] for s in summary["steps"]] == LAYERS
    lines = _lines(out)
    verdict = summary["checks"]["parameters"]
    for m in METHODS.split(","):
        per_step = [np.mean([r["methods"][m]["spearman_abs"] for r in lines if r["step"] == k])
                    for k in range(len(LAYERS))]
        want = np.median(per_step)
        assert verdict["final"][m]["spearman_abs"] == pytest.approx(want, abs=1e-12)
        assert (m in verdict["flagged"]) == (want >= SIMILAR_ABOVE)
    page = (out / "report.html").read_text()
    assert "Sanity checks (Adebayo et al. 2018)" in page
    assert page.count("data:image/png") >= 2 + 1  # curves and gallery after the audit's
    assert sorted(p.name for p in (out / "sanity" / "gallery").glob("*.npz")) == sorted(
        f"{k}.npz" for k in range(-1, len(LAYERS)))


def test_dark_maps_are_counted_apart_and_flags():
    """summarize_sanity by hand: a dark map's NaNs are left out of the means and counted;
    the verdict is the median over the steps of their means."""
    from ort_cam.audit.sanity_report import summarize_sanity

    def rec(step, key, sp, dark=False):
        v = dict.fromkeys(NAMES, float("nan") if dark else sp)
        return {"step": step, "layer": f"L{step}", "op": "Conv", "randomised": step + 1,
                "key": key, "methods": {"gradcam": {**v, "dark": dark},
                                        "eigencam": {**dict.fromkeys(NAMES, 0.9),
                                                     "dark": False}}}

    records = [rec(0, "a", 0.8), rec(0, "b", 0.6), rec(1, "a", 0.2), rec(1, "b", 0.0, True),
               rec(2, "a", 0.7), rec(2, "b", 0.5)]
    settings = {"methods": ["gradcam", "eigencam"], "sanity": {"mode": "cascade", "seed": 1}}
    s = summarize_sanity(settings, records)
    step1 = s["steps"][1]["methods"]["gradcam"]
    assert step1["spearman_abs"]["n"] == 1 and step1["spearman_abs"]["mean"] == 0.2
    assert step1["dark"] == 1
    v = s["checks"]["parameters"]
    assert v["final"]["gradcam"]["spearman_abs"] == pytest.approx(0.6)  # median(.7, .2, .6)
    assert v["flagged"] == ["gradcam", "eigencam"]  # 0.6 and 0.9 >= 0.5
    settings["sanity"]["mode"] = "independent"
    records[4] = rec(2, "a", 0.1)
    records[5] = rec(2, "b", 0.1)
    v = summarize_sanity(settings, records)["checks"]["parameters"]
    assert v["final"]["gradcam"]["spearman_abs"] == pytest.approx(0.2)  # median(.7, .2, .1)
    assert v["flagged"] == ["eigencam"]


def test_resume_and_other_settings(cascade, tmp_path):
    data, out, _ = cascade
    before = (out / "sanity" / "results.jsonl").read_bytes()
    code, output = _audit(data, out, "--sanity", "cascade", "--sanity-seed", "5")
    assert code == 0, output
    assert (out / "sanity" / "results.jsonl").read_bytes() == before  # nothing redone
    code, output = _audit(data, out, "--sanity", "cascade", "--sanity-seed", "6")
    assert code == 1 and "other settings (sanity.seed)" in output


def test_independent_every_and_data_randomisation(cascade, tmp_path):
    """--sanity independent --sanity-every 2 randomises layers 2, 4 and 6 in graph order, one
    at a time; --sanity-model with the cascade's last model (as a model trained on
    shuffled labels would be used) gives the cascade's last step's similarities."""
    data, cascade_out, _ = cascade
    random_model = tmp_path / "random.onnx"
    onnx.save(list(randomised_models(onnx.load(DEMO), "cascade", seed=5))[-1][2], random_model)
    out = tmp_path / "out"
    code, output = _audit(data, out, "--sanity", "independent", "--sanity-every", "2",
                          "--sanity-seed", "5", "--sanity-model", random_model, "--no-report")
    assert code == 0, output
    lines = _lines(out)
    assert [(r["layer"], r["randomised"]) for r in lines[::2]] == [
        ("/block1/conv/Conv", 1), ("/block3/conv/Conv", 1), ("/fc/Gemm", 1),
        ("data: random.onnx", 0)]
    assert "sanity (data randomisation; data: random.onnx)" in output
    last = {r["key"]: r for r in _lines(cascade_out) if r["step"] == len(LAYERS) - 1}
    for r in lines[-2:]:
        for m, v in r["methods"].items():
            for n in NAMES:
                assert v[n] == pytest.approx(last[r["key"]]["methods"][m][n], abs=1e-9)


def test_refusals(cascade, tmp_path):
    data, _, _ = cascade
    code, output = _audit(data, tmp_path / "a", "--sanity", "cascade", "--shard", "1/2")
    assert code == 1 and "not on a shard" in output
    assert len(output.strip().splitlines()) == 1
    code, output = _audit(data, tmp_path / "b", "--sanity", "cascade", "--ray")
    assert code == 2 and "without --ray" in output
    code, output = _audit(data, tmp_path / "c", "--sanity", "upwards")
    assert code == 2 and "'upwards' is not one of 'cascade', 'independent'" in output
