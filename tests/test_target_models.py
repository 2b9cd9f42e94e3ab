"""The torch test models of tests/target_models.py export as documented: the ONNX model (batch
3, not the exported 1) gives torch's outputs, the named layer tensor holds the named module's
output, and the scores are spread out enough to exercise each target."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")  # in the test extras; skip cleanly without it

import target_models as tm  # noqa: E402

#: float32 against float32 with other kernels: outputs reach ~300 (box sizes in pixels), so
#: this is ~1e-7 relative to the largest value, 10x over the 2e-6 absolute differences seen.
TOL = 2e-5


@pytest.mark.parametrize("name", list(tm.MODELS))
def test_export_matches_torch(name, tmp_path):
    spec = tm.MODELS[name]
    model, path = tm.build_and_export(name, tmp_path / f"{name}.onnx")
    proto = onnx.load(str(path))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(spec.layer, 1, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = tm.inputs(name, batch=3)
    *outs, layer = sess.run(None, {"x": x})
    seen = {}
    hook = model.get_submodule(spec.module).register_forward_hook(
        lambda _m, _i, o: seen.update(layer=o.numpy()))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    hook.remove()
    assert len(outs) == len(spec.outputs) == 1
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(outs[0] - ref).max() <= TOL * scale
    assert np.abs(layer - seen["layer"]).max() <= TOL * max(1.0, float(np.abs(layer).max()))


def _out(name: str, seed: int = 0) -> np.ndarray:
    with torch.no_grad():
        return tm.build(name, seed)(torch.from_numpy(tm.inputs(name, batch=4, seed=seed))).numpy()


def test_shapes_and_spread():
    """Each output has its documented shape, and enough variety for its target: the CRNN
    reads several symbols and blanks, the binary logit takes both signs, the probability map
    crosses 0.5, the segmenter's argmax has every class, the detector's scores spread."""
    det = _out("detector")
    assert det.shape == (4, 4 + tm.DET_CLASSES, tm.DET_ANCHORS)
    assert np.ptp(det[:, 4:]) > 0.5
    assert _out("detector_obj").shape == (4, 5 + tm.DET_CLASSES, tm.DET_ANCHORS)
    crnn = _out("crnn")
    assert crnn.shape == (4, tm.CRNN_STEPS, tm.CRNN_VOCAB)
    assert np.allclose(np.exp(crnn).sum(-1), 1.0, atol=1e-5)
    read = crnn.argmax(-1)
    assert (read == tm.CRNN_BLANK).any() and len(np.unique(read)) >= 4
    assert np.allclose(_out("crnn_softmax").sum(-1), 1.0, atol=1e-5)
    ml = _out("multilabel")
    assert ml.shape == (4, 20) and ((ml > 0) & (ml < 1)).all()
    binary = _out("binary", seed=0)
    assert binary.shape == (4, 1) and (binary > 0).any() and (binary < 0).any()
    assert _out("embedding").shape == (4, tm.EMBED_DIM)
    seg = _out("segmenter")
    assert seg.shape == (4, tm.SEG_CLASSES, 16, 16)
    assert len(np.unique(seg.argmax(1))) == tm.SEG_CLASSES
    prob = _out("probmap")
    assert prob.shape == (4, 1, 16, 16) and 0.1 < (prob > 0.5).mean() < 0.9


def test_build_is_seeded_and_leaves_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = tm.build("crnn", seed=3), tm.build("crnn", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(tm.build("crnn", seed=4).fc.weight, a.fc.weight)
