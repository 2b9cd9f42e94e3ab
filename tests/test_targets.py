"""The target kinds on the host: what each chooses at x (worked out by hand), the bad values
each refuses in one line, and which kind applies to an output (the flag, the metadata, the
pattern, the refusal)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ort_cam.errors import InputError, OrtCamError
from ort_cam.grad import Head
from ort_cam.graph import load_model
from ort_cam.targets import TARGET_KINDS, OutputInfo, TargetOptions, read_output
from ort_cam.targets.detection import DetectionKind, layout, nms
from ort_cam.targets.sequence import greedy_ctc

KIND = TARGET_KINDS


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- class and binary ---------------------------------------------------------------------
def test_class_picks_top1_an_index_a_label_or_top_k():
    out = OutputInfo("logits", (4,))
    s = np.array([0.1, 0.5, 0.3, 0.1])
    pick = lambda spec: KIND["class"].choose(s, out, TargetOptions(target=spec),  # noqa: E731
                                             ["a", "b", "c", "d"])
    assert pick(None).index == 1 and pick("top:2").index == 2 and pick("C").index == 2
    t = pick(3)
    np.testing.assert_array_equal(t.weights, [0, 0, 0, 1])
    assert t.value == pytest.approx(0.1) and t.record()["class"] == 3
    with pytest.raises(OrtCamError, match="target 4 is out of range; the model has 4"):
        pick(4)


def test_binary_defaults_to_the_predicted_category():
    out = OutputInfo("logit", (1,))
    for z, want in ((2.5, 1), (-0.7, 0)):
        s = np.array([-z, z])
        t = KIND["binary"].choose(s, out, TargetOptions())
        assert t.index == want and t.value == pytest.approx(abs(z))
    t = KIND["binary"].choose(np.array([-2.5, 2.5]), out, TargetOptions(target=0))
    assert t.index == 0 and t.value == pytest.approx(-2.5)


# --- segment ------------------------------------------------------------------------------
def _seg_scores() -> np.ndarray:
    """[3, 4, 4] logits: argmax class 0 on the top row, class 2 on rows 1-2, class 1 on the
    last row (4 / 8 / 4 pixels)."""
    s = np.zeros((3, 4, 4))
    s[0, 0], s[2, 1:3], s[1, 3] = 1.0, 2.0, 3.0
    return s


def test_segment_default_class_is_the_largest_region_and_mask_its_argmax():
    out = OutputInfo("out", (3, 4, 4))
    t = KIND["segment"].choose(_seg_scores(), out, TargetOptions())
    assert t.index == 2 and t.mask.sum() == 8 and t.mask[1:3].all()
    assert t.value == pytest.approx(8 * 2.0)  # Σ over the mask of class 2's logit
    assert t.weights.shape == (3, 4, 4) and t.weights[2].sum() == 8 and t.weights[:2].sum() == 0
    assert t.record() == {"kind": "segment", "class": 2, "value": 16.0, "mask_area": 8}


def test_segment_leaves_background_out_only_when_its_label_says_so():
    s = np.zeros((3, 4, 4))
    s[0, :3] = 1.0  # class 0 has 12 pixels, class 1 the last row
    s[1, 3] = 1.0
    out = OutputInfo("out", (3, 4, 4))
    assert KIND["segment"].choose(s, out, TargetOptions()).index == 0
    labels = ["background", "cat", "dog"]
    assert KIND["segment"].choose(s, out, TargetOptions(), labels).index == 1


def test_segment_given_class_mask_and_box():
    out, s = OutputInfo("out", (3, 4, 4)), _seg_scores()
    t = KIND["segment"].choose(s, out, TargetOptions(target=1))
    assert t.mask.sum() == 4 and t.value == pytest.approx(12.0)
    mask = np.zeros((4, 4))
    mask[0, 0] = 1
    t = KIND["segment"].choose(s, out, TargetOptions(target=0, mask=mask))
    assert t.value == pytest.approx(1.0) and t.mask.sum() == 1
    t = KIND["segment"].choose(s, out, TargetOptions(target=2, box=(0, 1, 2, 3)))
    assert t.mask.sum() == 4 and t.value == pytest.approx(8.0)


def test_segment_nhwc_class_axis_from_its_softmax():
    out = OutputInfo("out", (4, 4, 3), final_op="Softmax", softmax_axis=2)
    s = np.moveaxis(_seg_scores(), 0, 2)
    t = KIND["segment"].choose(s, out, TargetOptions())
    assert t.index == 2 and t.weights.shape == (4, 4, 3) and t.weights[..., 2].sum() == 8
    assert KIND["segment"].head(out, TargetOptions()) == Head("probability", axis=3,
                                                              flatten=False)


def test_segment_one_channel_takes_p_above_threshold():
    out = OutputInfo("prob", (1, 2, 3), final_op="Sigmoid")
    s = np.array([[[0.2, 0.6, 0.9], [0.51, 0.4, 0.1]]])
    t = KIND["segment"].choose(s, out, TargetOptions())
    assert t.mask.sum() == 3 and t.value == pytest.approx(0.6 + 0.9 + 0.51)
    t = KIND["segment"].choose(s, out, TargetOptions(threshold=0.8))
    assert t.mask.sum() == 1 and t.value == pytest.approx(0.9)
    raw = OutputInfo("logit", (1, 2, 3))  # no Sigmoid: p is the sigmoid of the map
    t = KIND["segment"].choose(np.log(s / (1 - s)), raw, TargetOptions())
    assert t.mask.sum() == 3
    with pytest.raises(OrtCamError, match="--score does not apply to a one-channel map"):
        KIND["segment"].head(out, TargetOptions(score="logit"))


@pytest.mark.parametrize("opts, message", [
    (dict(mask=np.ones((5, 4))), "the mask is 5x4; the output's grid is 4x4: give a mask of "
                                 "that size"),
    (dict(mask=np.full((4, 4), np.nan)), "the mask: 16 NaN or inf value(s)"),
    (dict(mask=np.zeros((4, 4))), "the mask is empty"),
    (dict(box=(0, 0, 5, 2)), "is not inside the output's 4x4 grid"),
    (dict(target=7), "class 7 is out of range; the output has 3 classes"),
])
def test_segment_refuses_bad_values_in_one_line(opts, message):
    with pytest.raises(OrtCamError) as err:
        KIND["segment"].choose(_seg_scores(), OutputInfo("out", (3, 4, 4)),
                               TargetOptions(**opts))
    assert message in one_line(err)


def test_segment_with_an_empty_default_mask_is_refused():
    s = _seg_scores()
    s[1] = -5.0  # class 1 is nowhere the argmax
    with pytest.raises(OrtCamError) as err:
        KIND["segment"].choose(s, OutputInfo("out", (3, 4, 4)), TargetOptions(target=1))
    assert "no pixel's argmax is class 1 at this image" in one_line(err)


# --- detection ----------------------------------------------------------------------------
def _head(objectness: bool = False) -> np.ndarray:
    """A raw head [4(+1)+2, 8] by hand: boxes (cx, cy, w, h) and 2 classes. Anchors 0 and 1
    overlap (IoU 0.6 at 10x10 offset by 2.5), class 0; anchor 2 is class 1 elsewhere; anchor 3
    overlaps anchor 0 but is class 1; anchors 4 to 7 score under 0.25."""
    boxes = np.array([[10, 10, 10, 10], [12.5, 10, 10, 10], [50, 50, 8, 8], [10, 10, 10, 10],
                      *[[80, 80, 5, 5]] * 4], float).T
    cls = np.array([[0.9, 0.8, 0.1, 0.1, 0.2, 0.1, 0.1, 0.1],
                    [0.1, 0.1, 0.7, 0.6, 0.1, 0.2, 0.1, 0.1]])
    if objectness:
        return np.concatenate([boxes, np.ones((1, 8)), cls])
    return np.concatenate([boxes, cls])


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [2.5, 0, 12.5, 10], [0, 0, 10, 10], [40, 40, 50, 50]],
                     float)
    scores = np.array([0.9, 0.8, 0.6, 0.7])
    classes = np.array([0, 0, 1, 0])
    # box 1 overlaps box 0 by IoU 75/125 = 0.6 > 0.45 (same class: suppressed); box 2 is
    # another class; box 3 is apart
    np.testing.assert_array_equal(nms(boxes, scores, classes, 0.45), [0, 3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, classes, 0.7), [0, 1, 3, 2])


def test_detection_top_k_after_nms():
    out = OutputInfo("out", (6, 8))
    t = DetectionKind.choose(_head(), out, TargetOptions(top_k=3))
    assert t.anchors == (0, 2, 3)  # anchor 1 suppressed by anchor 0 (same class)
    assert t.weights[4, 0] == 1 and t.weights[5, 2] == 1 and t.weights[5, 3] == 1
    assert t.weights.sum() == 3 and t.value == pytest.approx(0.9 + 0.7 + 0.6)
    np.testing.assert_allclose(t.boxes[0], [5, 5, 15, 15])
    assert t.record()["anchors"] == [0, 2, 3] and t.index is None


def test_detection_by_index_by_box_and_class():
    out = OutputInfo("out", (6, 8))
    t = DetectionKind.choose(_head(), out, TargetOptions(anchors=(1,)))
    assert t.anchors == (1,) and t.index == 0 and t.value == pytest.approx(0.8)
    t = DetectionKind.choose(_head(), out, TargetOptions(box=(6, 4, 16, 14)))
    assert t.anchors == (0,)  # IoU 0.68 with anchors 0 and 3, 0.62 with 1: the best score wins
    t = DetectionKind.choose(_head(), out, TargetOptions(box=(6, 4, 16, 14), target=1))
    assert t.anchors == (3,) and t.index == 1 and t.value == pytest.approx(0.6)


def test_detection_with_objectness_and_anchors_first():
    raw = _head(objectness=True)
    raw[4, 0] = 0.5  # objectness of anchor 0 halves its scores
    s = np.concatenate([raw[:4], raw[4:5] * raw[5:]])  # what the objectness head gives
    out = OutputInfo("out", (8, 7))  # [A, 5+C]: anchors first, so objectness by default
    lay = layout(out, TargetOptions())
    assert (lay.axis, lay.objectness, lay.n_classes) == (1, True, 2)
    assert DetectionKind.head(out, TargetOptions()) == Head("objectness", axis=2,
                                                            flatten=False)
    t = DetectionKind.choose(s.T, out, TargetOptions())
    assert t.anchors == (1,) and t.value == pytest.approx(0.8)  # 0.45 < 0.8 now
    assert t.weights.shape == (8, 6) and t.weights[1, 4] == 1


def test_detection_layout_from_a_concat_and_from_names():
    out = OutputInfo("out", (6, 8), concat_sizes=((4, 2), 0))
    assert layout(out, TargetOptions()) == layout(out, TargetOptions(layout="channels"))
    assert not layout(out, TargetOptions()).objectness
    v5 = OutputInfo("out", (8400, 85), concat_sizes=((4, 1, 80), 1))
    assert layout(v5, TargetOptions()).objectness
    seg = OutputInfo("out", (116, 8400), n_names=80)  # ultralytics segment: 4 + 80 + 32
    lay = layout(seg, TargetOptions())
    assert (lay.axis, lay.objectness, lay.n_classes) == (0, False, 80)


@pytest.mark.parametrize("opts, message", [
    (dict(anchors=(8,)), "anchor index 8 is out of range; the head has 8 anchors (0..7)"),
    (dict(anchors=(-1,)), "anchor index -1 is out of range"),
    (dict(conf=0.95), "no box scores >= 0.95 at this image (best 0.9)"),
    (dict(box=(60, 60, 70, 70)), "no anchor's box overlaps the box"),
    (dict(target=2), "class 2 is out of range; the output has 2 classes"),
    (dict(top_k=0), "--top-k must be at least 1"),
])
def test_detection_refuses_bad_values_in_one_line(opts, message):
    with pytest.raises(OrtCamError) as err:
        DetectionKind.choose(_head(), OutputInfo("out", (6, 8)), TargetOptions(**opts))
    assert message in one_line(err)


# --- embedding, sequence, any -------------------------------------------------------------
def test_embedding_is_the_cosine_to_the_concept():
    out = OutputInfo("emb", (3,))
    z = np.array([3.0, 4.0, 0.0])
    s = z / np.linalg.norm(z)  # what the normalize head gives
    t = KIND["embedding"].choose(s, out, TargetOptions(concept=np.array([0.0, 2.0, 0.0])))
    assert t.value == pytest.approx(0.8)
    np.testing.assert_allclose(t.weights, [0, 1, 0])


@pytest.mark.parametrize("concept, message", [
    (None, "an embedding target needs a concept vector: --concept FILE.npy"),
    (np.ones(4), "the concept vector has 4 values; output 'emb' gives 3 per image"),
    (np.array([1.0, np.nan, 0]), "the concept vector: 1 NaN or inf value(s)"),
    (np.zeros(3), "the concept vector is all zeros"),
])
def test_embedding_refuses_bad_concepts_in_one_line(concept, message):
    with pytest.raises(InputError) as err:
        KIND["embedding"].choose(np.ones(3) / 3**0.5, OutputInfo("emb", (3,)),
                                 TargetOptions(concept=concept))
    assert message in one_line(err)


def test_greedy_ctc_drops_blanks_and_repeats():
    # steps' argmax: 1 1 0 1 2 2 0 0 3 -> kept steps 0 (1), 3 (1), 4 (2), 8 (3)
    tokens = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    s = np.full((9, 4), 0.1)
    s[np.arange(9), tokens] = np.linspace(0.5, 0.9, 9)
    assert greedy_ctc(s, 0) == ([0, 3, 4, 8], [1, 1, 2, 3])
    out = OutputInfo("probs", (9, 4))
    t = KIND["sequence"].choose(s, out, TargetOptions())
    assert t.steps == (0, 3, 4, 8) and t.value == pytest.approx(s[[0, 3, 4, 8], [1, 1, 2, 3]]
                                                                .sum())
    t = KIND["sequence"].choose(s, out, TargetOptions(step=5))
    assert t.steps == (5,) and t.tokens == (2,) and t.weights.sum() == 1
    t = KIND["sequence"].choose(s, out, TargetOptions(step=5, target=3))
    assert t.tokens == (3,) and t.value == pytest.approx(0.1)
    assert greedy_ctc(s, 1)[0] == [2, 4, 6, 8]  # blank 1: the zeros are kept, once per run


@pytest.mark.parametrize("opts, message", [
    (dict(step=9), "--step 9 is out of range; the output has 9 steps (0..8)"),
    (dict(blank=4), "--blank 4 is out of range; the vocabulary has 4 tokens"),
    (dict(target=2), "--target picks a token at one step: give --step too"),
])
def test_sequence_refuses_bad_values_in_one_line(opts, message):
    with pytest.raises(OrtCamError) as err:
        KIND["sequence"].choose(np.eye(9, 4), OutputInfo("probs", (9, 4)),
                                TargetOptions(**opts))
    assert message in one_line(err)


def test_an_all_blank_decoding_is_refused():
    s = np.zeros((5, 3))
    s[:, 0] = 1
    with pytest.raises(OrtCamError, match="the greedy decoding at this image is empty"):
        KIND["sequence"].choose(s, OutputInfo("probs", (5, 3)), TargetOptions())


def test_any_weights():
    s = np.arange(6.0).reshape(2, 3)
    t = KIND["any"].choose(s, OutputInfo("o", (2, 3)), TargetOptions(weights=np.ones((1, 2, 3))))
    assert t.value == pytest.approx(15.0)
    for w, message in ((np.full((2, 3), np.nan), "the target weights: 6 NaN or inf value(s)"),
                       (np.ones((3, 2)), "the target weights have shape [3, 2]; output 'o' "
                                         "has [2, 3] per image"),
                       (None, "an 'any' target needs its weights: --target-weights FILE.npy")):
        with pytest.raises(InputError) as err:
            KIND["any"].choose(s, OutputInfo("o", (2, 3)), TargetOptions(weights=w))
        assert message in one_line(err)


# --- which kind applies -------------------------------------------------------------------
def _model(nodes, out_shape, inits=(), metadata=None, out_type=TensorProto.FLOAT):
    """x [N, 4, 6, 6] -> nodes -> out."""
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [helper.make_tensor_value_info("out", out_type, ["N", *out_shape])], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    return load_model(model)


def _w(name, shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape)
                                   .astype(np.float32), name)


def _pooled(out: str = "f"):
    return [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], [out])]


def _gemm(out: str, c: int):
    return helper.make_node("Gemm", ["f", "w", "b"], [out], transB=1), [_w("w", (c, 4)),
                                                                         _w("b", (c,))]


def _classifier(c: int, final: str | None = None, metadata=None):
    gemm, inits = _gemm("z" if final else "out", c)
    tail = [helper.make_node(final, ["z"], ["out"])] if final else []
    return _model([*_pooled(), gemm, *tail], [c], inits, metadata)


def _read(lm, **opts):
    return read_output(lm, lm.output, TargetOptions(**opts))


def test_kind_from_the_pattern():
    r = _read(_classifier(20, "Sigmoid"))
    assert (r.kind, r.head) == ("class", Head("sigmoid")) and "multi-label" in r.note
    assert _read(_classifier(5, "Softmax")).head == Head("probability")
    assert _read(_classifier(1)).kind == "binary"
    r = _read(_classifier(320))
    assert r.kind == "class" and "--target-kind embedding --concept" in r.note
    r = _read(_model(_pooled("out"), [4]))
    assert r.kind == "embedding" and "GlobalAveragePool" in r.note
    squeeze = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
               helper.make_node("GlobalAveragePool", ["r"], ["p"]),
               helper.make_node("Flatten", ["p"], ["out"])]  # SqueezeNet's classifier
    r = _read(_model(squeeze, [5], [_w("w", (5, 4, 1, 1))]))
    assert r.kind == "class" and "--target-kind embedding" in r.note
    seg = _model([helper.make_node("Conv", ["x", "w"], ["out"])], [3, 6, 6],
                 [_w("w", (3, 4, 1, 1))])
    assert _read(seg).kind == "segment" and _read(seg).head == Head("logit", flatten=False)


def test_kind_of_a_yolo_style_concat_and_a_softmaxed_sequence():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Slice", ["r", "s0", "s4", "ax"], ["box"]),
             helper.make_node("Slice", ["r", "s4", "s7", "ax"], ["cls_raw"]),
             helper.make_node("Sigmoid", ["cls_raw"], ["cls"]),
             helper.make_node("Concat", ["box", "cls"], ["out"], axis=1)]
    ints = lambda n, v: numpy_helper.from_array(np.array(v, np.int64), n)  # noqa: E731
    inits = [_w("w", (7, 4, 1, 1)), ints("shape", [0, 7, 36]), ints("s0", [0]),
             ints("s4", [4]), ints("s7", [7]), ints("ax", [1])]
    r = _read(_model(nodes, [7, 36], inits))
    assert r.kind == "detection" and r.head == Head("output", flatten=False)
    seq = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
           helper.make_node("Softmax", ["r"], ["out"], axis=-1)]
    r = _read(_model(seq, [24, 6], [ints("shape", [0, 24, 6])]))
    assert r.kind == "sequence"


def test_a_softmax_over_flattened_steps_is_a_sequence():
    """rapidocr's PP-OCRv4 recogniser ends in an opset-12 Softmax(axis=2) on [N, T, V] whose
    input's rank the version converter cannot infer: it writes it as Flatten [N*T, V],
    Softmax, Reshape back to the input's Shape (this graph). Read as a sequence, not refused."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=2),
             helper.make_node("Softmax", ["f"], ["p"], axis=-1),
             helper.make_node("Reshape", ["p", "s"], ["out"])]
    lm = _model(nodes, [24, 6], [numpy_helper.from_array(np.array([0, 24, 6], np.int64),
                                                         "shape")])
    r = _read(lm)
    assert r.kind == "sequence" and r.output.softmax_axis == 1
    nodes[2] = helper.make_node("Flatten", ["r"], ["f"], axis=1)  # one softmax over T*V
    lm = _model(nodes, [24, 6], [numpy_helper.from_array(np.array([0, 24, 6], np.int64),
                                                         "shape")])
    with pytest.raises(OrtCamError, match="cannot tell what output 'out' "):
        _read(lm)


def test_kind_from_the_metadata_and_the_flag():
    lm = _classifier(5, metadata={"ort_cam.target_kind": "embedding"})
    assert _read(lm).kind == "embedding"
    assert _read(_classifier(5, metadata={"task": "classify"})).kind == "class"
    assert _read(_classifier(320), kind="embedding").head == Head("normalize")
    assert _read(_model(_pooled("out"), [4]), kind="class").kind == "class"


def test_a_wrong_combination_is_one_line():
    with pytest.raises(OrtCamError) as err:
        _read(_classifier(5), kind="segment")
    assert one_line(err) == (
        "a segment target (--target-kind) does not fit output 'out' [N, 5]: it has 1 axes per "
        "image, not a map [C, H, W]; this output takes --target-kind class|embedding|any")
    with pytest.raises(OrtCamError) as err:
        _read(_classifier(5, metadata={"task": "detect"}))
    assert "a detection target (the model's metadata says detect) does not fit" in one_line(err)
    with pytest.raises(OrtCamError, match="unknown target kind 'boxes'; use one of class, "):
        _read(_classifier(5), kind="boxes")
    with pytest.raises(OrtCamError, match="--mask does not apply to a class target"):
        _read(_classifier(5), mask=np.ones((2, 2)))
    with pytest.raises(OrtCamError, match="--score logit does not apply to a binary target"):
        _read(_classifier(1), score="logit")


def test_an_output_no_pattern_tells_is_refused_with_the_kinds():
    lm = _model([helper.make_node("Reshape", ["x", "shape"], ["out"])], [24, 6],
                [numpy_helper.from_array(np.array([0, 24, 6], np.int64), "shape")])
    with pytest.raises(OrtCamError) as err:
        _read(lm)
    assert one_line(err).startswith("cannot tell what output 'out' [N, 24, 6] holds; pick its "
                                    "target with --target-kind class|binary|segment|detection|"
                                    "embedding|sequence|any")


def test_every_kind_is_registered_once_with_its_usage():
    assert list(TARGET_KINDS) == ["class", "binary", "segment", "detection", "embedding",
                                  "sequence", "any"]
    for name, kind in TARGET_KINDS.items():
        assert kind.name == name and kind.usage.startswith(f"--target-kind {name}")


def test_the_audits_probabilities_follow_the_reading():
    from types import SimpleNamespace

    from ort_cam.audit.image import probabilities

    z = np.array([[1.0, -0.5, 2.0]])
    soft = np.exp(z) / np.exp(z).sum()
    sig = 1 / (1 + np.exp(-z))
    rest = z + np.log(soft)  # what the rest head gives
    for mode, scores, want in (("probability", soft, soft), ("logit", z, soft),
                               ("sigmoid", sig, sig), ("rest", rest, soft),
                               ("binary", np.array([[-2.0, 2.0]]),
                                1 / (1 + np.exp(-np.array([[-2.0, 2.0]]))))):
        got = probabilities(SimpleNamespace(score_mode=mode), scores)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=mode)
