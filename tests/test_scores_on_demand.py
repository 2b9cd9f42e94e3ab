"""A map computed on demand (``ort_cam.grad.tail``): a segmenter whose logits are upsampled
at the end is differentiated through the transposed resampling, its full-size map computed
only where ``want_scores`` asks, and y = Σ W ⊙ S read as Σ Z ⊙ Tᵀ(W). Checked against the
same fused model built the plain way (S computed at every point, y summed on the host)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch")

import target_models as tm  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.grad import fused_model  # noqa: E402
from ort_cam.grad.spec import TARGET_VALUE, WANT_SCORES, Head  # noqa: E402
from ort_cam.graph import load_model  # noqa: E402
from ort_cam.prepared import RowRunner  # noqa: E402
from ort_cam.runtime import Runner  # noqa: E402
from ort_cam.targets import kind_named  # noqa: E402

LOGITS = Head("logit", axis=1, flatten=False)
#: Both ways run the same float32 ops on the layer's side of Z; on the map's side one sums
#: W ⊙ S, the other Z ⊙ Tᵀ(W), so y and the maps differ by float32 rounding only: measured
#: 0 for the gradient and 2e-8 of Σ|W ⊙ S| for y on this machine. 1e-5 is hundreds of ulps,
#: far below a wrong term (a missed tail node or a wrong row moves them by O(1)).
REL = 1e-5


def _sessions(tmp_path):
    _, path = tm.build_and_export("segmenter", tmp_path / "s.onnx")
    model = load_model(path)
    layer = tm.MODELS["segmenter"].layer
    plain = fused_model(model, layer, LOGITS, top1_seed=True)
    lazy = fused_model(model, layer, LOGITS, top1_seed=True, on_demand=True)
    open_ = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
             for m in (plain, lazy)]
    return lazy, *open_


def _mask_weights(n: int, seed: int = 0) -> np.ndarray:
    w = np.zeros((n, tm.SEG_CLASSES, 16, 16), np.float32)
    rng = np.random.default_rng(seed)
    w[:, 1] = rng.random((16, 16)) < 0.4  # a mask on class 1, as a segment target's W
    return w


def test_the_map_is_computed_only_where_asked(tmp_path):
    """The main graph holds no Resize (it is in the If's branch that gives S), the model takes
    ``want_scores`` and gives ``target_value``; a probability reading (a Softmax after the
    Resize: no linear tail) is built the plain way."""
    lazy, _, session = _sessions(tmp_path)
    assert "Resize" not in [n.op_type for n in lazy.graph.node]
    assert "If" in [n.op_type for n in lazy.graph.node]
    assert WANT_SCORES in [i.name for i in session.get_inputs()]
    assert [o.name for o in session.get_outputs()][-1] == TARGET_VALUE
    _, path = tm.build_and_export("segmenter", tmp_path / "p.onnx")
    prob = fused_model(load_model(path), tm.MODELS["segmenter"].layer,
                       Head("probability", axis=1, flatten=False), on_demand=True)
    assert WANT_SCORES not in [i.name for i in prob.graph.input]


@pytest.mark.parametrize("rows", [3, 1])
def test_the_gradient_and_y_equal_the_plain_model(tmp_path, rows):
    """A and G as the plain model gives them, y = Σ W ⊙ S of its S (float64), S where asked
    and an empty map where not; W fed with one row serves every input."""
    _, plain, lazy = _sessions(tmp_path)
    x = tm.inputs("segmenter", batch=3)
    w = _mask_weights(3)
    w[:] = w[0]  # one target for the three inputs (the path's case)
    a, s, g = plain.run(None, {"x": x, "target_weights": w})
    y = np.einsum("nchw,nchw->n", s.astype(np.float64), w.astype(np.float64))
    scale = np.einsum("nchw,nchw->n", np.abs(s.astype(np.float64)), w.astype(np.float64))
    for want in (False, True):
        a2, s2, g2, y2 = lazy.run(None, {"x": x, "target_weights": w[:rows],
                                         WANT_SCORES: np.array(want)})
        np.testing.assert_array_equal(a2, a)
        assert np.abs(g2 - g).max() <= REL * np.abs(g).max()
        assert y2.dtype == np.float64 and (np.abs(y2 - y) <= REL * scale).all()
        if want:
            assert np.abs(s2 - s).max() <= REL * np.abs(s).max()
        else:
            assert s2.shape == (0, *s.shape[1:])


def test_a_zero_row_is_seeded_with_the_default_mask_where_the_map_is_computed(tmp_path):
    """Fed zero weights with ``want_scores``, a row gets the gradient of the segment target's
    default (the largest argmax region's class over its argmax mask, worked out here); without
    ``want_scores`` zero weights stay zero."""
    _, plain, lazy = _sessions(tmp_path)
    x = tm.inputs("segmenter", batch=2, seed=3)
    zeros = np.zeros((2, tm.SEG_CLASSES, 16, 16), np.float32)
    _, s, g, y = lazy.run(None, {"x": x, "target_weights": zeros, WANT_SCORES: np.array(True)})
    w = np.zeros_like(zeros)
    for row in range(2):
        top = s[row].argmax(0)
        c = np.bincount(top.ravel(), minlength=tm.SEG_CLASSES).argmax()
        w[row, c] = top == c
    _, s_plain, g_plain = plain.run(None, {"x": x, "target_weights": w})
    assert np.abs(g - g_plain).max() <= REL * np.abs(g_plain).max()
    want = np.einsum("nchw,nchw->n", s_plain.astype(np.float64), w.astype(np.float64))
    assert np.allclose(y, want, rtol=REL, atol=0)
    _, _, g0, y0 = lazy.run(None, {"x": x, "target_weights": zeros,
                                   WANT_SCORES: np.array(False)})
    assert not g0.any() and not y0.any()


def test_runners_feed_one_row_of_weights_whole_and_bind_no_empty_map(tmp_path):
    """RowRunner (a batch-1 model run row by row) feeds a one-row W to every row; a runner that
    binds its outputs ahead (as on CUDA) leaves the on-demand map unbound, so its rows may
    change between runs."""
    _, _, session = _sessions(tmp_path)
    x = tm.inputs("segmenter", batch=3)
    w = _mask_weights(1)
    runners = [Runner(session), RowRunner(session),
               Runner(session, bind=True, preallocate=True, free_rows=["scores"])]
    for want in (False, True, False):
        feeds = {"x": x, "target_weights": w, WANT_SCORES: np.array(want)}
        outs = [r.run(feeds) for r in runners]
        for other in outs[1:]:
            assert [o.shape for o in other] == [o.shape for o in outs[0]]
            for got, ref in zip(other, outs[0]):
                if ref.size:
                    assert np.abs(got - ref).max() <= REL * np.abs(ref).max()
        assert len(outs[0][1]) == (3 if want else 0)


def _rows(ex) -> list[int]:
    runs: list[int] = []
    real = ex.runner.run
    ex.runner.run = lambda feeds: runs.append(len(feeds["x"])) or real(feeds)
    return runs


@pytest.mark.parametrize("target", [None, 1, 2])
def test_a_default_mask_seeded_in_the_graph_runs_x_once(tmp_path, monkeypatch, target):
    """The run of x, fed zero weights, is seeded in the graph with the largest region's class
    and checked on the host: x runs once (m+1 inputs) where the chosen target is that one,
    twice (m+2) where it is not; the maps are those of the two-run way (``seeded`` False)."""
    _, path = tm.build_and_export("segmenter", tmp_path / "s.onnx")
    ex = ort_cam.Explainer(path, tm.MODELS["segmenter"].layer, quiet=True, cache=False,
                           preprocess="raw")
    x = tm.inputs("segmenter", batch=1)
    m = 8
    runs = _rows(ex)
    fast = ex.explain_array(x, baseline_array="zeros", steps=m, target=target)
    largest = int(np.argmax(np.bincount(np.argmax(fast.scores, axis=0).ravel(),
                                        minlength=tm.SEG_CLASSES)))
    once = fast.target_record["class"] == largest
    assert target is not None or once  # the default is the largest region's class
    assert sum(runs) == m + (1 if once else 2)
    monkeypatch.setattr(kind_named("segment"), "seeded", classmethod(lambda cls, *a: False))
    runs.clear()
    plain = ex.explain_array(x, baseline_array="zeros", steps=m, target=target)
    assert sum(runs) == m + 2
    assert fast.target_record == plain.target_record
    np.testing.assert_allclose(fast.scores_path, plain.scores_path, rtol=REL, atol=0)
    for method in ("gradcam", "igcam", "rsi"):
        scale = max(float(np.abs(plain[method].raw).max()), 1e-30)
        assert float(np.abs(fast[method].raw - plain[method].raw).max()) <= REL * scale
