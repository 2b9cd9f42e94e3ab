"""IOBinding runs (``runtime.Runner`` bound): chosen on CUDA only (or by $ORT_CAM_IOBINDING),
and on the CPU, where it can be asked for, bit-identical to ``session.run``: the same outputs,
the same maps for every method, fixed steps, steps="auto" (whose stored points must not share
buffers), Grad-CAM alone and the methods that run the model's head (its sessions bound too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tolerance import assert_rebatched

import ort_cam
from ort_cam.errors import OrtCamError
from ort_cam.runtime import CPU, CUDA, IOBINDING_ENV, Runner, wants_binding

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLES = sorted((ROOT / "models" / "demo" / "samples").glob("*.png"))


def test_binding_is_chosen_on_cuda_only(monkeypatch):
    monkeypatch.delenv(IOBINDING_ENV, raising=False)
    assert wants_binding([CUDA, CPU]) and wants_binding(["TensorrtExecutionProvider", CUDA, CPU])
    assert not wants_binding([CPU]) and not wants_binding(["TensorrtExecutionProvider", CPU])
    assert wants_binding([CPU], "1") and not wants_binding([CUDA, CPU], "0")
    monkeypatch.setenv(IOBINDING_ENV, "1")
    assert wants_binding([CPU])
    monkeypatch.setenv(IOBINDING_ENV, "yes")
    with pytest.raises(OrtCamError, match="use 1 .* 0"):
        wants_binding([CPU])


class _Claims:
    """A real CPU session that reports ``providers`` and counts its IOBinding runs."""

    def __init__(self, session, providers):
        self.session, self.providers, self.bound_runs = session, providers, 0

    def get_providers(self):
        return self.providers

    def run_with_iobinding(self, binding):
        self.bound_runs += 1
        return self.session.run_with_iobinding(binding)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def plain():
    return ort_cam.Explainer(DEMO, quiet=True, providers="cpu")


def _feeds(ex, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, *ex._input_shape[1:])).astype(np.float32)
    w = np.zeros((n, ex.n_classes), np.float32)
    w[:, 2] = 1.0
    return {ex.input_name: x, "target_weights": w}


def test_runner_binds_when_the_session_has_cuda(plain, monkeypatch):
    monkeypatch.delenv(IOBINDING_ENV, raising=False)
    cpu = _Claims(plain.session, [CPU])
    cuda = _Claims(plain.session, [CUDA, CPU])
    r_cpu = Runner(cpu, preallocate=True)  # type: ignore[arg-type]
    r_cuda = Runner(cuda, preallocate=True)  # type: ignore[arg-type]
    r_head = Runner(cuda)  # type: ignore[arg-type]  # as the head sessions: ORT allocates
    assert not r_cpu.bound and r_cuda.bound and r_head.bound
    feeds = _feeds(plain, 5)
    want = plain.session.run(r_cpu.output_names, feeds)
    first = r_cuda.run(feeds)  # the gradient's shape is not in the model: learned here
    second = r_cuda.run(feeds)  # now every output is a pre-allocated host array
    r_cpu.run(feeds)
    for a, b in zip(want, r_head.run(feeds)):
        np.testing.assert_array_equal(a, b)
    assert cuda.bound_runs == 3 and cpu.bound_runs == 0
    for a, b, c in zip(want, first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert b.dtype == c.dtype == a.dtype and c.flags.c_contiguous
    first[2][...] = 0  # every run hands back arrays of its own
    assert np.array_equal(second[2], want[2]) and np.abs(want[2]).max() > 0
    other = r_cuda.run(_feeds(plain, 3, seed=1))  # another batch size, the same shapes after it
    np.testing.assert_array_equal(other[1], plain.session.run(None, _feeds(plain, 3, seed=1))[1])


@pytest.mark.parametrize("steps, methods", [(8, None), ("auto", None), (12, ["gradcam"]),
                                            (4, ["scorecam", "ablationcam", "layerig"])])
def test_bound_maps_equal_plain_maps_on_cpu(plain, monkeypatch, steps, methods):
    monkeypatch.setenv(IOBINDING_ENV, "1")
    bound = ort_cam.Explainer(DEMO, quiet=True, providers="cpu")
    assert bound.runner.bound and not plain.runner.bound
    for image in SAMPLES[:2]:
        a = bound.explain(image, steps=steps, methods=methods, auto_tolerance=0.002)
        b = plain.explain(image, steps=steps, methods=methods, auto_tolerance=0.002)
        assert a.target == b.target and a.steps == b.steps
        np.testing.assert_array_equal(a.scores_path, b.scores_path)
        for name in b.methods:
            np.testing.assert_array_equal(a[name].raw, b[name].raw)
    if methods and "scorecam" in methods:  # the head's sessions ran bound too
        heads = bound._heads._runners.values() if bound._heads else []
        assert heads and all(r.bound and not r.preallocate for r in heads)
    many = bound.explain_many(SAMPLES[:3], steps=8)  # packed runs, bound
    for r, image in zip(many, SAMPLES[:3]):
        one = plain.explain(image, steps=8)
        for name in one.methods:  # bit for bit but where onnxruntime sums by the batch
            assert_rebatched(r[name].raw, one[name].raw, name)
