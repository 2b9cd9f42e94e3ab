"""The exported explainer with a target of another kind than class (``ort-cam export
--target-kind``): the target's values are inputs of the graph, W is picked in it at x, and one
run gives ``Explainer``'s numbers for the same target.

On the small models of tests/target_models.py (a segmenter, a one-channel probability map,
an embedding model, YOLO-style detectors with and without objectness, a CRNN, and a
multi-label head read through ``any`` weights), the exported model run on onnxruntime is held
against ``Explainer.explain_array`` with the same target: the W picked (``weights``), the class,
y at x_0 and x, every map and raw map, and RSI's gap. Both sides run the same fused gradient
graph on the same chunks with the same W, so what remains is float64 summation order in the
reductions and in y = Σ W ⊙ S: measured (every case below) ≤ 5.6e-16 on the maps and raw
maps, ≤ 2.0e-16 relative on y, the gap ≤ 6.9e-9 of itself (it divides the small
Σ IG − Δy by Δy). MAP_TOL = 1e-5 and GAP_TOL = 1e-6 are tests/test_export.py's, which leave
room for other kernels fusing float32 ops across a chunk's rows differently; Y_TOL = 1e-9
relative (y is a float64 sum of float32 scores: 4e6x the measured difference). The segmenter's
map ends in an upsampling, so both sides compute it on demand (``grad.tail``: y = Σ Z ⊙ Tᵀ(W)
on the small map, S only at x): measured y equal to the last bit (segment-default).

The unrolled explainer (``--unroll``) takes each copy's branch of the on-demand If (tract
types no If it cannot pick), and OpenVINO runs the Loop's If: both held to the same numbers.

Bad values are refused in one line where the export sees them (a value that is an input at
run time, an option the kind does not read), and fail the run at a node that names them
where only the graph sees them (docs/export.md, "Targets").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import target_models as tm  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from ort_cam import Explainer  # noqa: E402
from ort_cam.cli import main  # noqa: E402
from ort_cam.errors import OrtCamError  # noqa: E402
from ort_cam.export import export_explainer  # noqa: E402
from ort_cam.grad.spec import WANT_SCORES  # noqa: E402
from ort_cam.runtime import make_session  # noqa: E402

M, CHUNK = 8, 4
METHODS = ["gradcam", "igcam", "rsi", "hirescam", "layercam"]
MAP_TOL, Y_TOL, GAP_TOL = 1e-5, 1e-9, 1e-6
#: Where the map is computed on demand (the segmenter: ort_cam.grad.tail), y = Σ Z ⊙ Tᵀ(W) on
#: the small map, and the target record's ``value`` Σ W ⊙ S(x) on the full one (Explainer's
#: own, from S(x)): float32 rounding apart, not summation order alone. Measured 4.8e-9 of y
#: (segment-default); 1e-6 leaves 200x, and a wrong mask or class moves y by percents. The
#: export's y and Explainer's are both Σ Z ⊙ Tᵀ(W): Y_TOL.
Y_TAIL_TOL = 1e-6
CONCEPT = np.random.default_rng(5).standard_normal(tm.EMBED_DIM).astype(np.float32)
WEIGHTS = np.random.default_rng(6).standard_normal(20).astype(np.float32)

_MODELS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("targets")

    def path(name: str) -> Path:
        if name not in _MODELS:
            _MODELS[name] = tm.build_and_export(name, folder / f"{name}.onnx")[1]
        return _MODELS[name]
    return path  # type: ignore[return-value]  (a factory, one export per model)


def explainer(path: Path, name: str, kind: str, **export) -> onnx.ModelProto:
    return export_explainer(path, tm.MODELS[name].layer, steps=M, chunk_size=CHUNK,
                            input_kind="tensor", baseline="zeros", target_kind=kind,
                            methods=METHODS, cache=False, **export)


def run(proto: onnx.ModelProto, x: np.ndarray, **feeds) -> dict[str, np.ndarray]:
    """One run of the explainer; inputs not given get their defaults (−1 indices, a mask and
    anchors with no rows)."""
    sess = make_session(proto, ["CPUExecutionProvider"], 1)
    given = {"x": x}
    for i in sess.get_inputs():
        if i.name in feeds:
            given[i.name] = feeds[i.name]
        elif i.name in ("target_index", "step"):
            given[i.name] = np.array(-1, np.int64)
        elif i.name in ("target_mask", "anchors", "baseline"):
            dtype = np.int64 if i.name == "anchors" else np.float32
            given[i.name] = np.zeros((0, *i.shape[1:]), dtype)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, given), strict=True))


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
                yield from _nodes(sub)


def on_demand(proto: onnx.ModelProto) -> bool:
    """Whether the explainer's Loop body computes the map on demand: an If of the fused model
    switched by the body's own iteration test (``first``)."""
    loop = next(n for n in proto.graph.node if n.op_type == "Loop")
    body = next(a.g for a in loop.attribute if a.name == "body")
    return any(n.op_type == "If" and n.input[0].startswith("explainer/body/")
               for n in body.node)


#: (case id, model, kind, export options, explainer graph inputs, Explainer's target values)
CASES = [
    ("segment-default", "segmenter", "segment", {}, {}, {}),
    ("segment-class-and-mask", "segmenter", "segment", {},
     {"target_index": np.array(2), "target_mask": np.pad(np.ones((6, 9), np.float32),
                                                         ((3, 7), (4, 3)))},
     {"target": 2, "mask": np.pad(np.ones((6, 9), np.float32), ((3, 7), (4, 3)))}),
    ("probmap-default", "probmap", "segment", {}, {}, {}),
    ("probmap-threshold", "probmap", "segment", {"target": {"threshold": 0.3}}, {},
     {"threshold": 0.3}),
    ("embedding", "embedding", "embedding", {}, {"concept": CONCEPT}, {"concept": CONCEPT}),
    ("detection-top1", "detector", "detection", {}, {}, {}),
    ("detection-anchors-class", "detector", "detection", {},
     {"anchors": np.array([5, 17, 70]), "target_index": np.array(1)},
     {"anchors": (5, 17, 70), "target": 1}),
    ("detection-anchors-own-class", "detector_obj", "detection", {},
     {"anchors": np.array([40, 3])}, {"anchors": (40, 3)}),
    ("detection-objectness-top1", "detector_obj", "detection", {}, {}, {}),
    ("sequence-greedy", "crnn", "sequence", {}, {}, {}),
    ("sequence-step-token", "crnn", "sequence", {},
     {"step": np.array(4), "target_index": np.array(3)}, {"step": 4, "target": 3}),
    ("any-weights", "multilabel", "any", {}, {"target_weights": WEIGHTS},
     {"weights": WEIGHTS}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_exported_target_gives_the_explainers_maps(models, case):
    _, name, kind, export, feeds, values = case
    path = models(name)
    x = tm.inputs(name, 1, seed=3)
    spec = dict(values)
    target = spec.pop("target", None)
    ex = Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1,
                   chunk_size=CHUNK, target_kind=kind, target=spec or None)
    r = ex.explain_array(x, baseline_array="zeros", steps=M, methods=METHODS,
                         target=target)
    out = run(explainer(path, name, kind, **export), x, **feeds)
    rec = r.target_record
    support = np.flatnonzero(out["weights"])
    assert len(support) == {"segment": rec.get("mask_area"), "detection": len(
        rec.get("anchors", ())), "sequence": len(rec.get("steps", ()))}.get(kind, len(support))
    assert int(out["target"]) == (-1 if r.target is None else r.target)
    if WANT_SCORES in [i.name for i in ex.session.get_inputs()]:  # so is the export's Loop
        assert on_demand(explainer(path, name, kind, **export)), "the map is computed each time"
        value_tol = Y_TAIL_TOL
    else:
        value_tol = Y_TOL
    y_tol = Y_TOL
    np.testing.assert_allclose([out["y0"], out["ym"]], [r.y0, r.ym], rtol=y_tol, atol=0)
    assert abs(float(out["ym"]) - rec["value"]) <= value_tol * abs(rec["value"])
    for method in METHODS:
        assert np.abs(out[f"{method}_map"] - r[method].map).max() <= MAP_TOL, method
        scale = max(np.abs(r[method].raw).max(), 1e-30)
        assert np.abs(out[f"{method}_raw"] - r[method].raw).max() <= MAP_TOL * scale, method
    gap = r.completeness_gap
    # y's own error (y_tol of |y_0| and |y_m|) moves |Σ IG − Δy| / |Δy| by up to that over |Δy|:
    # where the gap is tiny (3e-8 for the segmenter) that, not GAP_TOL of it, bounds the change
    moved = y_tol * (abs(r.y0) + abs(r.ym)) / abs(r.ym - r.y0)
    assert abs(float(out["rsi_completeness_gap"]) - gap) <= GAP_TOL * gap + moved


@pytest.mark.parametrize("engine", ["unrolled", "openvino"])
def test_the_on_demand_segmenter_in_other_engines(models, engine, tmp_path):
    """The Loop's If (S only at iteration 0) unrolled into the branch each copy takes (no If
    left), and run by OpenVINO (which refuses an If without a rank or a [0, ...] initializer
    in a branch, made safe in the export): Explainer's numbers. OpenVINO's float32 kernels
    round unlike onnxruntime's: MAP_TOL (2.1e-7 measured), y to 1e-6 (3e-8 measured)."""
    path, x = models("segmenter"), tm.inputs("segmenter", 1, seed=3)
    r = Explainer(path, tm.MODELS["segmenter"].layer, quiet=True, cache=False, threads=1,
                  chunk_size=CHUNK, target_kind="segment"
                  ).explain_array(x, baseline_array="zeros", steps=M, methods=METHODS)
    proto = explainer(path, "segmenter", "segment", unroll=engine == "unrolled")
    if engine == "unrolled":
        assert not any(n.op_type in ("If", "Loop") for n in _nodes(proto.graph))
        out, y_tol = run(proto, x), Y_TOL
    else:
        ov = pytest.importorskip("openvino")
        assert on_demand(proto)
        onnx.save(proto, tmp_path / "explainer.onnx")
        compiled = ov.Core().compile_model(str(tmp_path / "explainer.onnx"), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
        res = compiled({"x": x, "target_index": np.array(-1),  # (by name: x has two)
                        "target_mask": np.zeros((0, 16), np.float32),
                        "baseline": np.zeros((0, *x.shape[1:]), np.float32)})
        out = {o.get_any_name(): np.asarray(res[o]) for o in compiled.outputs}
        y_tol = 1e-6
    assert int(out["target"]) == r.target
    np.testing.assert_allclose([out["y0"], out["ym"]], [r.y0, r.ym], rtol=y_tol, atol=0)
    for method in METHODS:
        assert np.abs(out[f"{method}_map"] - r[method].map).max() <= MAP_TOL, method


@pytest.mark.parametrize("feeds, values", [
    ({}, {}), ({"anchors": np.array([5, 40])}, {"anchors": (5, 40)}),
    ({"anchors": np.array([7]), "target_index": np.array(0)}, {"anchors": (7,), "target": 0})],
    ids=["top1", "anchors", "anchor-and-class"])
def test_a_detector_with_boxes_and_scores_outputs(tmp_path, feeds, values):
    """boxes_output is fixed at export: the graph joins the box output before the scores,
    and the anchors are fed as for a YOLO-style head."""
    import test_target_boxes_scores as split

    _, path = split.build_and_export(tmp_path / "split.onnx")
    x = tm.inputs("detector", 1, seed=3)
    spec = dict(values)
    target = spec.pop("target", None)
    proto = export_explainer(path, split.LAYER, steps=M, chunk_size=CHUNK, input_kind="tensor",
                             baseline="zeros", output="scores", methods=METHODS, cache=False,
                             target={"boxes_output": "boxes"})
    out = run(proto, x, **feeds)
    r = Explainer(path, split.LAYER, output="scores", quiet=True, cache=False, threads=1,
                  chunk_size=CHUNK, target={"boxes_output": "boxes", **spec}
                  ).explain_array(x, baseline_array="zeros", steps=M, methods=METHODS,
                                  target=target)
    rows, anchors = np.nonzero(out["weights"])  # [4+C, A]
    assert list(anchors) == sorted(r.target_record["anchors"])
    assert int(out["target"]) == (-1 if r.target is None else r.target)
    np.testing.assert_allclose([out["y0"], out["ym"]], [r.y0, r.ym], rtol=Y_TOL, atol=0)
    for method in METHODS:
        assert np.abs(out[f"{method}_map"] - r[method].map).max() <= MAP_TOL, method


def _box_off_the_top_anchor(path: Path, name: str, x: np.ndarray, extra: dict) -> tuple:
    """A box (x0, y0, x1, y1) 0.5 to 1 pixel off the top-scoring anchor's own box."""
    s = Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1,
                  target=extra).scores_at(x)[0]
    a = int(np.argmax(s[4:].max(0)))
    cx, cy, w, h = (float(v) for v in s[:4, a])
    return (cx - w / 2 + 1.0, cy - h / 2 - 0.5, cx + w / 2 + 0.5, cy + h / 2 + 1.0)


@pytest.mark.parametrize("name", ["detector", "detector_obj"])
def test_the_iou_term_is_exported_with_a_box_input(models, name):
    """--box-iou at export: the box is an input, matched in the graph as the explainer
    matches it, and its IoU added (maps measured <= 4.4e-16 from the explainer's)."""
    path, x = models(name), tm.inputs(name, 1, seed=3)
    extra = {"objectness": True} if name == "detector_obj" else {}
    box = _box_off_the_top_anchor(path, name, x, extra)
    proto = explainer(path, name, "detection", target={"box_iou": True, **extra})
    out = run(proto, x, box=np.asarray([box], np.float32))
    r = Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1,
                  chunk_size=CHUNK, target={"box_iou": True, **extra}
                  ).explain_array(x, baseline_array="zeros", steps=M, methods=METHODS,
                                  target={"box": box})
    rows, anchors = np.nonzero(out["weights"][:-4])  # the box rows left out
    assert set(anchors) == set(r.target_record["anchors"]) and int(out["target"]) == r.target
    np.testing.assert_allclose(out["weights"][-4:, 0], box, rtol=1e-6)
    np.testing.assert_allclose([out["y0"], out["ym"]], [r.y0, r.ym], rtol=Y_TOL, atol=0)
    for method in METHODS:
        assert np.abs(out[f"{method}_map"] - r[method].map).max() <= MAP_TOL, method
    with pytest.raises(Exception, match="no_anchor_matches_the_box_by_iou_0.5"):
        run(proto, x, box=np.asarray([[100, 100, 120, 120]], np.float32))
    with pytest.raises(Exception, match="box_must_be_finite"):
        run(proto, x, box=np.asarray([[np.nan, 1, 9, 9]], np.float32))
    with pytest.raises(Exception, match="Got invalid dimensions for input: box"):
        run(proto, x, box=np.zeros((0, 4), np.float32))


def test_the_picked_weights_are_the_explainers(models):
    """W itself, for a kind whose choice is worked out in the graph (the detector's top box
    and a greedy CTC decoding): the anchors and the steps and tokens the explainer chose."""
    for name, kind in (("detector", "detection"), ("crnn", "sequence")):
        path = models(name)
        x = tm.inputs(name, 1, seed=3)
        out = run(explainer(path, name, kind), x)
        r = Explainer(path, tm.MODELS[name].layer, quiet=True, cache=False, threads=1,
                      target_kind=kind).explain_array(x, baseline_array="zeros", steps=2,
                                                      methods=["gradcam"])
        rec, w = r.target_record, out["weights"]
        if kind == "detection":  # [4+C, A]: the class row of each chosen anchor
            rows, anchors = np.nonzero(w)
            assert list(anchors) == rec["anchors"] and list(rows - 4) == [r.target]
        else:  # [T, V]: the kept steps and their tokens
            steps, tokens = np.nonzero(w)
            assert (list(steps), list(tokens)) == (rec["steps"], rec["tokens"])
        assert set(np.unique(w)) == {0.0, 1.0}


#: (model, kind, the bad input, the node (or engine message) the run fails at)
BAD_RUNS = [
    ("segmenter", "segment", {"target_mask": np.ones((5, 16), np.float32)},
     "target_mask_rows_must_be_0_or_16"),
    ("segmenter", "segment", {"target_mask": np.ones((16, 8), np.float32)},
     "Got invalid dimensions for input: target_mask"),
    ("segmenter", "segment", {"target_mask": np.full((16, 16), np.nan, np.float32)},
     "target_mask_must_be_finite"),
    ("segmenter", "segment", {"target_mask": np.zeros((16, 16), np.float32)},
     "target_must_not_be_empty"),
    ("segmenter", "segment", {"target_index": np.array(4)}, "target_index_must_be_-1_or_0_to_3"),
    ("detector", "detection", {"anchors": np.array([3, 80])}, "anchors_must_be_in_0_to_79"),
    ("detector", "detection", {"anchors": np.array([-1])}, "anchors_must_be_in_0_to_79"),
    ("detector", "detection", {"target_index": np.array(3)},
     "target_index_must_be_-1_or_0_to_2"),
    ("embedding", "embedding", {"concept": np.ones(10, np.float32)},
     "Got invalid dimensions for input: concept"),
    ("embedding", "embedding", {"concept": np.zeros(tm.EMBED_DIM, np.float32)},
     "concept_must_not_be_zero"),
    ("embedding", "embedding", {"concept": np.where(np.arange(tm.EMBED_DIM) == 7, np.inf, 1.0
                                                    ).astype(np.float32)},
     "concept_must_be_finite"),
    ("crnn", "sequence", {"step": np.array(12)}, "step_must_be_-1_or_0_to_11"),
    ("crnn", "sequence", {"target_index": np.array(3)}, "target_index_needs_a_step"),
    ("multilabel", "any", {"target_weights": np.full(20, np.nan, np.float32)},
     "target_weights_must_be_finite"),
    ("multilabel", "any", {"target_weights": np.zeros(20, np.float32)},
     "target_weights_must_not_be_all_zero"),
]


@pytest.mark.parametrize("name, kind, feeds, where", BAD_RUNS,
                         ids=[f"{b[1]}-{b[3][:30]}" for b in BAD_RUNS])
def test_a_bad_input_fails_the_run_at_a_node_that_names_it(models, name, kind, feeds, where):
    proto = export_explainer(models(name), tm.MODELS[name].layer, steps=2, input_kind="tensor",
                             baseline="zeros", target_kind=kind, methods=["gradcam"],
                             cache=False)
    x = tm.inputs(name, 1, seed=3)
    if "concept" not in feeds and kind == "embedding":
        feeds = {**feeds, "concept": CONCEPT}
    with pytest.raises(Exception, match=where):
        run(proto, x, **feeds)


def test_a_detector_with_no_box_above_conf_fails_unless_anchors_are_fed(models):
    path = models("detector")
    proto = explainer(path, "detector", "detection", target={"conf": 1.5})
    x = tm.inputs("detector", 1, seed=3)
    with pytest.raises(Exception, match="no_box_scores_at_least_1.5_feed_anchors"):
        run(proto, x)
    assert np.count_nonzero(run(proto, x, anchors=np.array([9]))["weights"]) == 1


@pytest.mark.parametrize("name, kind, target, message", [
    ("segmenter", "segment", {"mask": np.ones((16, 16))}, "--mask is not fixed at export: "
     "the explainer takes it at run time as its input target_mask"),
    ("detector", "detection", {"anchors": (1,)}, "as its input anchors"),
    ("embedding", "embedding", {"concept": CONCEPT}, "as its input concept"),
    ("crnn", "sequence", {"target": 2}, "as its input target_index"),
    ("segmenter", "segment", {"blank": 3}, "--blank does not apply to a segment target"),
    ("crnn", "sequence", {"blank": 7}, "--blank 7 is out of range; the vocabulary has 7"),
    ("multilabel", "segment", {}, "a segment target (--target-kind) does not fit output"),
])
def test_a_bad_export_is_refused_in_one_line(models, name, kind, target, message):
    with pytest.raises(OrtCamError) as err:
        export_explainer(models(name), tm.MODELS[name].layer, steps=2, input_kind="tensor",
                         baseline="zeros", target_kind=kind, target=target, cache=False)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_cli_exports_a_segment_target_and_records_it(models, tmp_path):
    import json

    path = models("probmap")
    out = tmp_path / "explainer.onnx"
    res = CliRunner().invoke(main, [str(a) for a in (
        "export", path, "--layer", tm.MODELS["probmap"].layer, "--input", "tensor",
        "--baseline", "zeros", "--steps", 4, "--target-kind", "segment", "--threshold", 0.4,
        "--out", out, "--no-cache")])
    assert res.exit_code == 0, res.output
    assert "inputs: x, target_mask, baseline" in res.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["ort_cam.export.target_kind"] == "segment"
    assert json.loads(meta["ort_cam.export.target"])["threshold"] == 0.4
    bad = CliRunner().invoke(main, [str(a) for a in (
        "export", path, "--layer", tm.MODELS["probmap"].layer, "--input", "tensor",
        "--target-kind", "detection", "--out", tmp_path / "b.onnx", "--no-cache")])
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1, bad.output
    assert "does not fit output 'prob'" in bad.output


def test_the_cli_exports_a_detector_with_boxes_and_scores(tmp_path):
    import json

    import test_target_boxes_scores as split

    _, path = split.build_and_export(tmp_path / "split.onnx")
    out = tmp_path / "explainer.onnx"
    res = CliRunner().invoke(main, [str(a) for a in (
        "export", path, "--layer", split.LAYER, "--input", "tensor", "--baseline", "zeros",
        "--steps", 2, "--output", "scores", "--boxes-output", "boxes", "--out", out,
        "--no-cache")])
    assert res.exit_code == 0, res.output
    assert "inputs: x, anchors, target_index, baseline" in res.output
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["ort_cam.export.target"])["classes"] == tm.DET_CLASSES
