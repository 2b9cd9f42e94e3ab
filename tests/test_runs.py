"""What the explainer runs, counted at ``Runner.run``: every path point once, x once.

- ``steps="auto"`` reuses its points (nested dyadic grids): its maps equal a fixed run at the
  m it stops at, and it runs exactly the m+1 points of that path, each once;
- Grad-CAM alone (``needs_path`` False) is one run at batch 1, which also gives the target;
- ``steps=1`` runs two inputs (x, then x0), not three;
- packing several images' paths into shared runs gives the maps of one image at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tolerance import REBATCHED

import ort_cam
from ort_cam.engine import PointStore
from ort_cam.runtime import Runner

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLES = sorted((ROOT / "models" / "demo" / "samples").glob("*.png"))
ALL = ("gradcam", "igcam", "rsi")


class Counting:
    """Wraps ``Runner.run``: records every call's input batch."""

    def __init__(self, monkeypatch):
        self.batches: list[np.ndarray] = []
        original = Runner.run

        def run(runner, feeds):
            self.batches.append(np.array(next(v for k, v in feeds.items()
                                              if k != "target_weights")))
            return original(runner, feeds)

        monkeypatch.setattr(Runner, "run", run)

    @property
    def rows(self) -> list[bytes]:
        return [row.tobytes() for b in self.batches for row in b]

    def clear(self) -> None:
        self.batches.clear()


@pytest.fixture(scope="module")
def ex():
    return ort_cam.Explainer(DEMO, quiet=True, providers="cpu")


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("tolerance, chunk", [(0.002, None), (0.002, 5), (0.02, 3)])
def test_auto_reuses_every_point(monkeypatch, tolerance, chunk):
    ex = ort_cam.Explainer(DEMO, quiet=True, providers="cpu", chunk_size=chunk)
    runs = Counting(monkeypatch)
    auto = ex.explain(SAMPLES[0], steps="auto", auto_tolerance=tolerance, auto_max=256)
    m = auto.steps
    assert m > 8, "the case must double at least once"
    rows = runs.rows
    assert len(rows) == m + 1 and len(set(rows)) == m + 1, "each of the m+1 points once"
    assert max(len(b) for b in runs.batches) <= ex.chunk_for(m)
    runs.clear()
    fixed = ex.explain(SAMPLES[0], steps=m)
    assert len(runs.rows) == m + 1
    assert set(runs.rows) == set(rows), "the same inputs as a fixed run at that m"
    # the same points, reduced as a fixed run: bit for bit here, to float32 rounding where
    # onnxruntime batches them differently (tests/tolerance.py: REBATCHED)
    for name in ALL:
        assert max_rel(auto[name].raw, fixed[name].raw) <= REBATCHED, name
    assert auto.completeness_gap == pytest.approx(fixed.completeness_gap, rel=REBATCHED, abs=0)
    assert max_rel(auto.scores_path, fixed.scores_path) <= REBATCHED


def test_auto_stops_where_the_gap_first_falls_below_tolerance(ex):
    gaps = {m: ex.explain(SAMPLES[0], steps=m, methods=["rsi"]).completeness_gap
            for m in (8, 16, 32, 64, 128)}
    auto = ex.explain(SAMPLES[0], steps="auto", methods=["rsi"], auto_tolerance=0.002)
    first = min(m for m, g in gaps.items() if g <= 0.002)
    assert auto.steps == first
    assert auto.completeness_gap == pytest.approx(gaps[first], rel=REBATCHED)  # as above


def test_point_store_locates_nested_grids():
    store = PointStore(8)
    # point l of the m grid is l·(8/m) of the first grid when that is whole, else new at
    # the round where its reduced fraction's denominator first appears
    assert store.locate(12, 32) == (0, 3)
    assert store.locate(6, 32) == (1, 1)   # 3/16: round 1 holds 1/16, 3/16, ...
    assert store.locate(5, 32) == (2, 2)   # 5/32: round 2 holds 1/32, 3/32, 5/32, ...
    assert store.locate(32, 32) == (0, 8)


@pytest.mark.parametrize("target", [None, "top1", 3, "top:1"])
def test_gradcam_alone_is_one_run_at_batch_1(ex, monkeypatch, target):
    full = ex.explain(SAMPLES[1], steps=8, target=target)
    runs = Counting(monkeypatch)
    r = ex.explain(SAMPLES[1], steps=50, methods=["gradcam"], target=target)
    assert [len(b) for b in runs.batches] == [1]
    assert r.target == full.target and r.steps == 0 and np.isnan(r.y0)
    np.testing.assert_array_equal(r["gradcam"].raw, full["gradcam"].raw)
    assert r.ym == full.ym and r.score == full.score


def test_gradcam_alone_for_the_second_class_is_two_runs(ex, monkeypatch):
    runs = Counting(monkeypatch)
    r = ex.explain(SAMPLES[1], methods=["gradcam"], target="top:2")
    assert [len(b) for b in runs.batches] == [1, 1]  # the scores, then the 2nd class
    assert r.target == int(np.argsort(-r.scores)[1])


def test_steps_1_runs_x_then_x0(ex, monkeypatch):
    runs = Counting(monkeypatch)
    ex.explain(SAMPLES[1], steps=1)
    assert [len(b) for b in runs.batches] == [1, 1]


def test_packed_paths_give_the_maps_of_one_image_at_a_time(ex, monkeypatch):
    one_by_one = [ex.explain(s, steps=10) for s in SAMPLES]
    runs = Counting(monkeypatch)
    packed = ex.explain_many(SAMPLES, steps=10)
    assert len(runs.batches) == 2, "all x at once, then all paths at once"
    assert len(runs.rows) == len(SAMPLES) * 11
    for a, b in zip(packed, one_by_one):
        assert a.target == b.target
        for name in ALL:  # bit for bit here; REBATCHED where onnxruntime batches differently
            assert max_rel(a[name].raw, b[name].raw) <= REBATCHED, name
        assert max_rel(a.scores_path, b.scores_path) <= REBATCHED


def test_packing_respects_the_run_capacity(monkeypatch):
    ex = ort_cam.Explainer(DEMO, quiet=True, providers="cpu", chunk_size=25)
    runs = Counting(monkeypatch)
    out = ex.explain_many(SAMPLES[:5], steps=10)
    assert max(len(b) for b in runs.batches) <= 25 and len(out) == 5
    assert len(runs.rows) == 5 * 11


def test_auto_past_the_memory_budget_streams_and_gives_the_same_maps(monkeypatch):
    # 1 MiB holds the first grid's stored points (9 x 2 x 55 kB) but not twice that: the
    # doublings after it walk their whole path (streamed) instead of storing points
    ex = ort_cam.Explainer(DEMO, quiet=True, providers="cpu", memory_budget=2**20)
    runs = Counting(monkeypatch)
    auto = ex.explain(SAMPLES[0], steps="auto", auto_tolerance=0.002, auto_max=256)
    m = auto.steps
    assert m > 16 and len(runs.rows) > m + 1
    fixed = ex.explain(SAMPLES[0], steps=m)
    for name in ALL:  # as in test_auto_reuses_every_point
        assert max_rel(auto[name].raw, fixed[name].raw) <= REBATCHED, name
