"""``ort-cam audit --metrics road,arcc`` on demo samples: the records' ROAD and ARCC are the
metric functions (ort_cam/audit/metrics.py) on the same maps, the summary averages them, the
report shows them, a resume with other --metrics is refused, the default audit has none."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tolerance import REBATCHED

from ort_cam import Explainer
from ort_cam.audit import metrics as M
from ort_cam.audit.image import score_images
from ort_cam.cli import main

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
MODEL = DEMO / "demo_cnn.onnx"
SAMPLES = ("circle_saturated.png", "square_unsaturated.png")
METHODS = ("gradcam", "rsi")
STEPS = 4
FIELDS = ("road_morf", "road_lerf", "road_combined", "complexity", "coherency", "arcc_road",
          "arcc")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def audit_args(csv: Path, out: Path, *extra):
    return ("audit", MODEL, csv, "--out", out, "--steps", STEPS, "--methods", ",".join(METHODS),
            *extra)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    d = tmp_path_factory.mktemp("road_arcc")
    boxes = json.loads((DEMO / "samples" / "boxes.json").read_text())
    lines = ["image,label,x0,y0,x1,y1"] + [
        f"{DEMO / 'samples' / name},{boxes[name]['label']},"
        + ",".join(str(v) for v in boxes[name]["box"]) for name in SAMPLES]
    csv = d / "boxes.csv"
    csv.write_text("\n".join(lines) + "\n")
    res = run(*audit_args(csv, d / "audit", "--metrics", "road,arcc"))
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (d / "audit" / "results.jsonl").read_text()
               .splitlines()]
    return {"dir": d, "csv": csv, "out": d / "audit", "records": records, "text": res.output}


def direct(ex: Explainer, path: Path, method: str) -> dict[str, float]:
    """ROAD and ARCC of ``method``'s map of ``path`` by direct calls: the map from
    ``Explainer.explain``, scores p_c, the second map of the image times the map (black
    baseline, in pixel space) from ``explain_array``."""
    r = ex.explain(path, steps=STEPS, methods=list(METHODS))
    c, sal, pixels = r.target, r[method].map, r.pixels.astype(np.float64)

    def score(images):
        return score_images(ex, images, c)

    road = M.road_scores(score, pixels, sal, M.ROAD_PERCENTILES)
    arcc_road = M.road_scores(score, pixels, sal, M.ARCC_ROAD_PERCENTILES)["combined"]
    masked = r.pixels * sal[..., None]
    pre = ex.preprocess
    again = ex.explain_array(pre.normalize(masked), target=c, steps=STEPS, methods=[method],
                             baseline_array=pre.normalize(np.zeros_like(r.pixels)))[method].map
    cx, co = M.complexity(sal), M.coherency(sal, again)
    return {"road_morf": road["morf"], "road_lerf": road["lerf"],
            "road_combined": road["combined"], "complexity": cx, "coherency": co,
            "arcc_road": arcc_road, "arcc": M.arcc(cx, co, arcc_road)}


def test_records_hold_the_metric_functions_values(audited):
    ex = Explainer(MODEL)
    assert [r["status"] for r in audited["records"]] == ["ok"] * len(SAMPLES)
    for rec in audited["records"]:
        for method in METHODS:
            want = direct(ex, Path(rec["key"]), method)
            got = {k: rec["methods"][method][k] for k in FIELDS}
            for k in FIELDS:
                # bit for bit here; the audit batches the ROAD images unlike the direct
                # calls, so float32 rounding where onnxruntime sums them otherwise
                # (tests/tolerance.py: REBATCHED; the values are probabilities or in [0, 1])
                assert got[k] == pytest.approx(want[k], abs=REBATCHED, rel=0), (rec["key"], k)
            # the numbers mean something: removing the most relevant pixels lowers p_c
            assert got["road_morf"] < 0 and 0 <= got["complexity"] <= 1
            assert 0 <= got["coherency"] <= 1 and 0 <= got["arcc"] <= 1


def test_settings_summary_and_report(audited):
    settings = json.loads((audited["out"] / "audit.json").read_text())
    assert settings["metrics"] == ["road", "arcc"]
    assert settings["road_percentiles"] == list(M.ROAD_PERCENTILES)
    assert settings["arcc_road_percentiles"] == list(M.ARCC_ROAD_PERCENTILES)
    # the solver SciPy's presence picks is recorded (direct with SciPy, else cg)
    scipy = importlib.util.find_spec("scipy") is not None
    assert settings["road_solver"] == ("direct" if scipy else "cg")
    summary = json.loads((audited["out"] / "summary.json").read_text())
    for method in METHODS:
        for k in FIELDS:
            stat = summary["splits"]["all"]["metrics"][method][k]
            values = [r["methods"][method][k] for r in audited["records"]]
            assert stat["n"] == len(SAMPLES)
            assert stat["mean"] == pytest.approx(sum(values) / len(values), rel=1e-15)
    page = (audited["out"] / "report.html").read_text()
    assert "ROAD combined" in page and "ARCC: harmonic mean" in page
    assert f"{summary['splits']['all']['metrics']['rsi']['arcc']['mean']:.3g}" in page
    assert "road " in audited["text"] and "arcc " in audited["text"]  # the printed summary


def test_resume_with_other_metrics_is_refused(audited):
    res = run(*audit_args(audited["csv"], audited["out"], "--metrics", "road"))
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "other settings" in errors[0] and "metrics" in errors[0], \
        res.output
    assert "Traceback" not in res.output
    res = run(*audit_args(audited["csv"], audited["out"]))  # none
    assert res.exit_code == 1 and "metrics" in res.output, res.output
    # the same --metrics resumes: nothing left to do, the records are unchanged
    before = (audited["out"] / "results.jsonl").read_text()
    res = run(*audit_args(audited["csv"], audited["out"], "--metrics", "arcc,road"))
    assert res.exit_code == 0, res.output
    assert (audited["out"] / "results.jsonl").read_text() == before


def test_default_audit_has_no_road_or_arcc(audited):
    out = audited["dir"] / "plain"
    res = run(*audit_args(audited["csv"], out, "--no-report"))
    assert res.exit_code == 0, res.output
    settings = json.loads((out / "audit.json").read_text())
    assert not {"metrics", "road_percentiles", "arcc_road_percentiles"} & set(settings)
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert not set(FIELDS) & set(rec["methods"]["gradcam"])


def test_unknown_metric_is_a_usage_error(audited):
    res = run(*audit_args(audited["csv"], audited["dir"] / "bad", "--metrics", "road,foo"))
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "foo" in errors[0] and "road, arcc" in errors[0]
    assert not (audited["dir"] / "bad").exists()
