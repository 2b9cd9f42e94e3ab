"""The grid pointing game: the scores by hand, the grid column of a CSV, one sample per label
(--targets labels), tools/make_pointing_game.py on the demo model's samples, and the audit of
its grids end to end (the scores in the records equal the map's, the summary and the report
carry them, and Grad-CAM points at the right cell far more often than chance)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tolerance import REBATCHED

from ort_cam.audit.datasets import Obj, Sample, open_dataset
from ort_cam.audit.image import AuditSpec
from ort_cam.audit.pointing import parse_grid, pointing_scores
from ort_cam.audit.run import label_samples
from ort_cam.cli import main
from ort_cam.errors import OrtCamError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"
sys.path.insert(0, str(ROOT / "tools"))


def test_scores_by_hand():
    # a 4×4 map on a 4×4 grid (upsampling is the identity), the true cell the top-left 2×2
    raw = np.array([[1.0, 2.0, 0.0, 0.0],
                    [0.0, 1.0, -5.0, 0.0],
                    [0.0, 0.0, 4.0, 0.0],
                    [0.0, 0.0, 0.0, 0.0]])
    cell = np.zeros((4, 4), bool)
    cell[:2, :2] = True
    s = pointing_scores(raw, cell)
    assert s["pointing_energy"] == pytest.approx(4 / 8)  # 1 + 2 + 1 of 8; the −5 counts not
    assert s["pointing_hit"] == 0.0  # the maximum (4) is outside
    raw[0, 0] = 9.0
    assert pointing_scores(raw, cell) == {"pointing_energy": pytest.approx(12 / 16),
                                          "pointing_hit": 1.0}
    assert pointing_scores(-np.ones((4, 4)), cell) == {"pointing_energy": 0.0,
                                                       "pointing_hit": 0.0}
    # a 2×2 map upsampled to 4×4 keeps all its energy in its own quadrant's half-pixels
    s = pointing_scores(np.array([[1.0, 0.0], [0.0, 0.0]]), cell)
    assert s["pointing_hit"] == 1.0 and 0.5 < s["pointing_energy"] < 1.0


def test_grid_column_and_its_errors(tmp_path):
    csv = tmp_path / "g.csv"
    csv.write_text("image,label,x0,y0,x1,y1,grid\na.png,cat,0,0,2,2,2x2\na.png,dog,2,0,4,2,2x2\n")
    ds = open_dataset(csv)
    assert ds.grid == (2, 2) and ds.fingerprint()["grid"] == [2, 2]
    plain = tmp_path / "p.csv"
    plain.write_text("image,label,x0,y0,x1,y1\na.png,cat,0,0,2,2\na.png,dog,2,0,4,2\n")
    p = open_dataset(plain)
    assert p.grid is None and set(p.fingerprint()) == {"format", "images", "sha256"}
    assert p.fingerprint()["sha256"] == ds.fingerprint()["sha256"]
    csv.write_text("image,label,x0,y0,x1,y1,grid\na.png,cat,0,0,2,2,2x2\nb.png,dog,2,0,4,2,3x3\n")
    with pytest.raises(OrtCamError, match="grid column differs"):
        open_dataset(csv)
    for bad in ("2", "2x", "0x2", "axb", ""):
        with pytest.raises(OrtCamError, match="is not ROWSxCOLUMNS"):
            parse_grid(bad, "here")
    with pytest.raises(OrtCamError, match="unknown targets"):
        AuditSpec(targets="all")


def test_one_sample_per_mapped_label():
    lm = {"cat": [1], "dog": [2]}
    s = Sample("a.png", Path("a.png"), [Obj("Cat", (0, 0, 1, 1)), Obj("dog", (1, 0, 2, 1)),
                                        Obj("cat", (0, 1, 1, 2)), Obj("cow", (1, 1, 2, 2))])
    got = label_samples(s, lm)
    assert [(t.key, t.target) for t in got] == [("a.png#Cat", "Cat"), ("a.png#dog", "dog")]
    assert all(t.objects == s.objects for t in got)
    none = Sample("b.png", Path("b.png"), [Obj("cow", (0, 0, 1, 1))])
    assert label_samples(none, lm) == [none]  # skipped later with its reason


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """Three 2×2 grids of the demo samples (class from the file name, p >= 0.9 alone)."""
    import make_pointing_game

    out = tmp_path_factory.mktemp("pg") / "grids"
    assert make_pointing_game.main(["--photos", str(DEMO / "samples"), "--model",
                                    str(DEMO / "demo_cnn.onnx"), "--out", str(out),
                                    "--pattern", r"^([a-z]+)_", "--min-p", "0.9",
                                    "--grids", "3", "--seed", "1"]) == 0
    return out


def test_the_tool_writes_exact_cells(grids):
    import csv

    rows = list(csv.DictReader(open(grids / "grids.csv")))
    assert len(rows) == 12 and {r["grid"] for r in rows} == {"2x2"}
    photos = list(csv.DictReader(open(grids / "photos.csv")))
    used = [p for p in photos if p["used"] == "True"]
    assert len(used) == 6  # one photo per class, the most confident
    assert all(float(p["p"]) >= 0.9 and p["class"] == p["top1"] for p in used)
    from PIL import Image

    for image in sorted({r["image"] for r in rows}):
        cells = [r for r in rows if r["image"] == image]
        assert len({r["label"] for r in cells}) == 4
        a = np.asarray(Image.open(grids / image))
        assert a.shape == (192, 192, 3)  # the demo model stretches to 96: no border
        assert sorted((int(r["x0"]), int(r["y0"])) for r in cells) == [
            (0, 0), (0, 96), (96, 0), (96, 96)]
        for r in cells:  # each cell is the photo the model saw alone
            photo = next(p["photo"] for p in used if DEMO_LABELS[int(p["class"])] == r["label"])
            x0, y0 = int(r["x0"]), int(r["y0"])
            want = np.asarray(Image.open(DEMO / "samples" / photo).convert("RGB"))
            assert (a[y0:y0 + 96, x0:x0 + 96] == want).all()


DEMO_LABELS = ["circle", "square", "triangle", "cross", "ring", "star"]


def test_audit_of_the_grids(grids, tmp_path):
    from ort_cam import Explainer
    from ort_cam.audit.store import read_results

    out = tmp_path / "audit"
    res = CliRunner().invoke(main, [
        "audit", str(DEMO / "demo_cnn.onnx"), str(grids / "grids.csv"), "--targets", "labels",
        "--steps", "8", "--deletion-steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "pg-energy" in res.output and "pg-hit" in res.output
    recs = read_results(out / "results.jsonl")
    assert len(recs) == 12 and all("#" in r["key"] for r in recs)
    ex = Explainer(DEMO / "demo_cnn.onnx", quiet=True)
    from PIL import Image

    r = recs[0]
    image = Image.open(grids / r["key"].split("#")[0])
    assert r["target"] == DEMO_LABELS.index(r["key"].split("#")[1])
    e = ex.explain(image, target=r["target"], steps=8)
    cell = np.zeros((96, 96), bool)
    x0, y0, x1, y1 = r["boxes"][0]
    cell[y0:y1, x0:x1] = True
    assert cell.mean() == 0.25
    for m in ("gradcam", "igcam", "rsi"):
        # (the audit's batches against one explain: tests/tolerance.py's REBATCHED)
        assert r["methods"][m]["pointing_energy"] == pytest.approx(
            pointing_scores(e[m].raw, cell)["pointing_energy"], rel=REBATCHED)
    summary = json.loads((out / "summary.json").read_text())
    gc = summary["splits"]["all"]["metrics"]["gradcam"]
    assert gc["pointing_energy"]["n"] == 12
    assert gc["pointing_energy"]["mean"] > 0.5 and gc["pointing_hit"]["mean"] > 0.5  # chance 0.25
    page = (out / "report.html").read_text()
    assert "Pointing game: positive energy in the true cell" in page
    assert json.loads((out / "audit.json").read_text())["targets"] == "labels"
