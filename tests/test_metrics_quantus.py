"""The metrics ``ort-cam audit --metrics`` takes from Quantus (sparseness, complexity,
faithfulness_correlation, random_logit): by hand on small maps, and in an audit of two demo
samples, where each record holds the metric functions' values on the same maps
(tests/test_quantus.py holds the functions equal to Quantus's)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tolerance import rebatched

from ort_cam import Explainer
from ort_cam.audit import metrics as M
from ort_cam.audit.image import score_images
from ort_cam.cli import main

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
MODEL = DEMO / "demo_cnn.onnx"
SAMPLES = ("circle_saturated.png", "square_unsaturated.png")
NAMES = "sparseness,complexity,faithfulness_correlation,random_logit"
FIELDS = ("sparseness", "entropy_complexity", "faithfulness_correlation", "random_logit")


def test_sparseness_by_hand():
    """The Gini index of the sorted values a_1..a_n: Σ (2k − n − 1) a_k / (n Σ a_k), here of
    the map plus 1e-7 as Quantus adds it."""
    one = np.zeros((4, 4))
    one[2, 1] = 1.0
    a = np.full(16, 1e-7)
    a[-1] += 1.0
    want = ((2 * np.arange(1, 17) - 17) * a).sum() / (16 * a.sum())
    assert M.sparseness(one) == pytest.approx(want, abs=1e-15)
    # the limit without the 1e-7, which moves it by ~n·1e-7: 1.5e-6 here
    assert M.sparseness(one) == pytest.approx(15 / 16, abs=1e-5)
    assert M.sparseness(np.full((4, 4), 0.3)) == pytest.approx(0.0, abs=1e-15)


def test_complexity_by_hand():
    assert M.entropy_complexity(np.full((8, 8), 0.5)) == pytest.approx(math.log(64), abs=1e-9)
    one = np.zeros((8, 8))
    one[3, 3] = 2.0
    assert M.entropy_complexity(one) == pytest.approx(-math.log(1 + 1e-12), abs=1e-15)
    two = np.zeros((8, 8))
    two[0, 0] = two[7, 7] = 1.0
    assert M.entropy_complexity(two) == pytest.approx(math.log(2), abs=1e-9)
    assert math.isnan(M.entropy_complexity(np.zeros((8, 8))))


def test_faithfulness_correlation_by_hand():
    """A score that drops by the map's weight of every feature set to black (the image is 1
    everywhere but a 0 pixel, where the map is 0): the drops are the map's sums over the
    subsets, correlation 1; a score that ignores the image: no drops, no correlation (NaN)."""
    rng = np.random.default_rng(0)
    sal = rng.random((6, 5))
    sal[0, 0] = 0.0
    img = np.ones((6, 5, 3))
    img[0, 0] = 0.0

    def score(images):  # Σ over features of map · value
        return (images * sal[None, ..., None]).sum(axis=(1, 2, 3))

    subsets = M.faithfulness_subsets(img.size, runs=20, subset=7,
                                     rng=np.random.RandomState(3))
    assert subsets.shape == (20, 7) and all(len(set(s)) == 7 for s in subsets)
    assert M.faithfulness_correlation(score, img, sal, subsets) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(M.faithfulness_correlation(lambda ims: np.zeros(len(ims)), img, sal,
                                                 subsets))


def test_other_class_and_random_logit():
    """The other class replays quantus.RandomLogit's draw for one image; identical maps have
    SSIM 1, a map and its mirror image less."""
    idx = int(np.random.RandomState(42).randint(0, 999, 1)[0])
    for target in (0, idx, idx + 1, 999):
        other = M.other_class(target, 1000)
        assert other != target
        assert other == [k for k in range(1000) if k != target][idx]
    a = np.random.default_rng(1).random((16, 16))
    assert M.random_logit(a, 3 * a) == pytest.approx(1.0, abs=1e-12)  # each by its max
    assert M.random_logit(a, a[:, ::-1]) < 0.5


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantus_metrics")
    boxes = json.loads((DEMO / "samples" / "boxes.json").read_text())
    lines = ["image,label,x0,y0,x1,y1"] + [
        f"{DEMO / 'samples' / name},{boxes[name]['label']},"
        + ",".join(str(v) for v in boxes[name]["box"]) for name in SAMPLES]
    (d / "boxes.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(main, [str(a) for a in (
        "audit", MODEL, d / "boxes.csv", "--out", d / "audit", "--steps", 4, "--methods",
        "gradcam,rsi", "--metrics", NAMES)])
    assert res.exit_code == 0, res.output
    return d / "audit", res.output


def test_records_hold_the_functions_values(audited):
    out, printed = audited
    ex = Explainer(MODEL, quiet=True)
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    for rec, name in zip(sorted(records, key=lambda r: r["key"]),
                         sorted(SAMPLES, key=lambda n: str(DEMO / "samples" / n))):
        r = ex.explain(DEMO / "samples" / name, steps=4, methods=["gradcam", "rsi"])
        for method in ("gradcam", "rsi"):
            got, sal = rec["methods"][method], r[method].map
            # the audit's maps are the explainer's bit for bit (float64 metric noise: 1e-12),
            # but where onnxruntime sums a batch item by the batch (tolerance.rebatched())
            tol = 1e-12 + rebatched()
            assert got["sparseness"] == pytest.approx(M.sparseness(sal), abs=tol)
            assert got["entropy_complexity"] == pytest.approx(M.entropy_complexity(sal), abs=tol)
            subsets = M.faithfulness_subsets(r.pixels.size,
                                             rng=np.random.RandomState(M.FAITHFULNESS_SEED))
            fc = M.faithfulness_correlation(
                lambda ims, c=r.target: score_images(ex, ims, c), r.pixels, sal, subsets)
            assert got["faithfulness_correlation"] == pytest.approx(fc, abs=1e-9 + rebatched())
            other = ex.explain(DEMO / "samples" / name, target=M.other_class(r.target, 6),
                               steps=4, methods=[method])[method].map
            assert got["random_logit"] == pytest.approx(M.random_logit(sal, other),
                                                        abs=1e-6 + rebatched())
    summary = json.loads((out / "summary.json").read_text())
    for f in FIELDS:
        assert summary["splits"]["all"]["metrics"]["gradcam"][f]["n"] == 2
    assert "sparse " in printed and "rlogit " in printed
    settings = json.loads((out / "audit.json").read_text())
    assert settings["faithfulness"] == {"runs": 100, "subset": 224, "seed": 0,
                                        "baseline": "image minimum"}
    assert "road_solver" not in settings  # no ROAD asked for


def test_unknown_metric_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["audit", str(MODEL), str(tmp_path), "--out",
                                    str(tmp_path / "o"), "--metrics", "sparseness,gini"])
    assert res.exit_code == 2 and "unknown metric(s) gini" in res.output
