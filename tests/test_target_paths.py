"""How the paths of targets are run (issue 19's speed): a target whose options fix W without
S(x) has its run of x fed W at once, which is the path's point l = m (x runs once, as for a
class target); several targets of one image walk their paths together, the prefix running
each path point once and the head once per target. Both must give the maps of the plain way:
the same values up to float32 summation order (the runs differ in batch composition and, for
the shared walk, in the sessions: prefix and head instead of the fused model)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

import target_models as tm  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam import engine  # noqa: E402
from ort_cam.targets import kind_named  # noqa: E402
from ort_cam.targets.detection import nms  # noqa: E402

M = 8
#: Relative to the map's largest value. The same float32 computation in other batch
#: compositions or split across two sessions differs by a few ulps per op; the maps sum m+1
#: such terms: 1e-5 is ~80 ulps of float32, several times the 1e-6 seen, far below a wrong
#: point or target (which moves the maps by O(1)).
REL = 1e-5
METHODS = ("gradcam", "igcam", "rsi")


def _close(a, b) -> None:
    scale = max(float(np.abs(b).max()), 1e-30)
    assert float(np.abs(a - b).max()) <= REL * scale


def _same_answer(fast, plain) -> None:
    """The run of x reused as the path's end gives what running x again gives: the same
    target and score, the score path to 1e-12 (y = Σ W ⊙ S summed in float64 from float32 S;
    measured equal here, and with --ort-threads 2, --ort-opt-level basic and both together),
    the maps within REL."""
    assert fast.score == plain.score and fast.target_record == plain.target_record
    np.testing.assert_allclose(fast.scores_path, plain.scores_path, rtol=1e-12, atol=0)
    for method in METHODS:
        _close(fast[method].raw, plain[method].raw)


def _rows(ex) -> list[int]:
    """Record the batch of every run of the fused session."""
    runs: list[int] = []
    real = ex.runner.run
    ex.runner.run = lambda feeds: runs.append(len(feeds["x"])) or real(feeds)
    return runs


@pytest.mark.parametrize("name, options, spec", [
    ("embedding", {"concept": np.linspace(-1, 1, tm.EMBED_DIM)}, None),
    ("segmenter", None, {"target": 1, "box": (2, 3, 12, 14)}),
])
def test_a_target_fixed_without_x_runs_x_once(tmp_path, monkeypatch, name, options, spec):
    """m+1 inputs in all (x once, fed W), and the maps of the run that picks W from S(x)
    first (``fixed`` False: m+2 inputs)."""
    _, path = tm.build_and_export(name, tmp_path / "m.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, target=options,
                           preprocess="raw")
    x = tm.inputs(name, batch=1)
    runs = _rows(ex)
    fast = ex.explain_array(x, baseline_array="zeros", steps=M, target=spec)
    assert sum(runs) == M + 1 and runs[0] == 1
    kind = kind_named(ex.target_kind)
    monkeypatch.setattr(kind, "fixed", classmethod(lambda cls, out, opts: False))
    runs.clear()
    plain = ex.explain_array(x, baseline_array="zeros", steps=M, target=spec)
    assert sum(runs) == M + 2
    _same_answer(fast, plain)


@pytest.mark.parametrize("target", [None, 1])
def test_a_wrong_fixed_claim_runs_x_again(tmp_path, monkeypatch, target):
    """Where ``fixed`` says so wrongly (the default mask depends on S(x)), W at S = 0 differs
    from W at S(x), or cannot be chosen there (class 1 has no pixel where S = 0): the run of
    x is not used as the path's end, and the maps are right."""
    _, path = tm.build_and_export("segmenter", tmp_path / "s.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS["segmenter"].layer, quiet=True, cache=False,
                           preprocess="raw")
    x = tm.inputs("segmenter", batch=1)
    plain = ex.explain_array(x, baseline_array="zeros", steps=M, target=target)
    monkeypatch.setattr(kind_named("segment"), "fixed",
                        classmethod(lambda cls, out, opts: True))
    runs = _rows(ex)
    wrong = ex.explain_array(x, baseline_array="zeros", steps=M, target=target)
    assert sum(runs) == M + 2
    for method in METHODS:
        np.testing.assert_array_equal(wrong[method].raw, plain[method].raw)


@pytest.mark.parametrize("name, specs", [
    ("segmenter", [{"target": c, "box": (0, 0, 16, 16)} for c in range(tm.SEG_CLASSES)]),
    ("multilabel", [0, 3, 7]),
])
def test_several_targets_of_one_image_run_each_point_through_the_prefix_once(
        tmp_path, monkeypatch, name, specs):
    """explain_many of one image with several targets: the prefix runs the m+1 path points
    once, the head once per target, and the maps are those of explaining each alone. (The
    prefix and head are built once walking together has saved SPLIT_AFTER points: set to 0.)"""
    from PIL import Image

    monkeypatch.setattr(ort_cam.explainer, "SPLIT_AFTER", 0)

    _, path = tm.build_and_export(name, tmp_path / "m.onnx")
    img = np.random.default_rng(4).integers(0, 256, (16, 16, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "i.png")
    ex = ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False,
                           preprocess={"preset": "raw", "scale": 1 / 255})
    prefix_rows: list[int] = []
    real = engine.SplitModel.crossing
    monkeypatch.setattr(engine.SplitModel, "crossing",
                        lambda self, xs: prefix_rows.append(len(xs)) or real(self, xs))
    together = ex.explain_many([tmp_path / "i.png"], targets=specs, steps=M)
    assert sum(prefix_rows) == M + 1
    for spec, r in zip(specs, together):
        alone = ex.explain(tmp_path / "i.png", target=spec, steps=M)
        assert r.target == alone.target and r.target_record == alone.target_record
        np.testing.assert_allclose(r.scores_path, alone.scores_path, rtol=REL, atol=0)
        for method in METHODS:
            _close(r[method].raw, alone[method].raw)


def test_nms_with_a_limit_is_the_whole_list_cut_there():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (200, 2))], axis=1)
    scores, classes = rng.uniform(0, 1, 200), rng.integers(0, 3, 200)
    whole = nms(boxes, scores, classes, 0.45)
    assert len(whole) > 5
    for k in (1, 2, 5):
        np.testing.assert_array_equal(nms(boxes, scores, classes, 0.45, limit=k), whole[:k])


def test_the_prefix_and_head_are_built_once_enough_points_would_be_saved(tmp_path):
    """Walking together needs two more sessions: it starts once the walks asking would have
    saved SPLIT_AFTER prefix runs in all; until then the paths are packed into the fused
    model's runs."""
    from PIL import Image

    from ort_cam.explainer import SPLIT_AFTER

    _, path = tm.build_and_export("multilabel", tmp_path / "m.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS["multilabel"].layer, quiet=True, cache=False,
                           preprocess={"preset": "raw", "scale": 1 / 255})
    img = np.random.default_rng(4).integers(0, 256, (16, 16, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "i.png")
    specs = [0, 3]
    per_call = (len(specs) - 1) * (M + 1)
    calls = -(-SPLIT_AFTER // per_call)  # the call that reaches SPLIT_AFTER walks together
    for call in range(calls + 1):
        runs = _rows(ex)
        ex.explain_many([tmp_path / "i.png"], targets=specs, steps=M)
        assert ex._heads is not None
        together = ex._heads.built("prefix", "gradient_head")
        assert together == (call >= calls - 1), call
        assert sum(runs) == (len(specs) if together else len(specs) * (M + 1)), (call, runs)


@pytest.mark.parametrize("name, spec", [
    ("detector", None), ("detector_obj", None), ("detector", {"layout": "anchors"}),
    ("detector", {"top_k": 2})])
def test_the_top1_detection_seeded_in_the_graph_runs_x_once(tmp_path, monkeypatch, name,
                                                            spec):
    """The default detection target (the top-1 after NMS): the run of x, fed zero weights,
    is seeded in the graph with the best anchor's best class (with the layout the model was
    built with) and checked on the host: x runs once (m+1 inputs); where the call asks for
    something else (another layout, the top 2), twice (m+2). The maps are those of the
    two-run way (``seeded`` False)."""
    _, path = tm.build_and_export(name, tmp_path / "d.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False,
                           target_kind="detection", target={"conf": 0.0}, preprocess="raw")
    x = tm.inputs(name, batch=1)
    runs = _rows(ex)
    fast = ex.explain_array(x, baseline_array="zeros", steps=M, target=spec)
    assert sum(runs) == M + (1 if spec is None else 2)
    monkeypatch.setattr(kind_named("detection"), "seeded",
                        classmethod(lambda cls, *args: False))
    runs.clear()
    plain = ex.explain_array(x, baseline_array="zeros", steps=M, target=spec)
    assert sum(runs) == M + 2
    _same_answer(fast, plain)
