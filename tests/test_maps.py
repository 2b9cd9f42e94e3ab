"""Upsampling and normalisation (METHODS.md eqs 25, 26) by hand and against PIL."""

import numpy as np
import pytest
from PIL import Image

from ort_cam.maps import is_dark, normalize, upsample


def test_upsample_2_to_4_by_hand():
    # Half-pixel centres: output 0 and 1 sample source -0.25 (clamped to 0) and 0.25.
    up = upsample(np.array([[0.0, 4.0], [8.0, 12.0]]), (4, 4))
    row = [0.0, 1.0, 3.0, 4.0]
    np.testing.assert_allclose(up[0], row)
    np.testing.assert_allclose(up[:, 0], [0.0, 2.0, 6.0, 8.0])
    want = 0.75 * (0.75 * 0 + 0.25 * 4) + 0.25 * (0.75 * 8 + 0.25 * 12)
    np.testing.assert_allclose(up[1, 1], want)


def test_upsample_identity_and_constant():
    a = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(upsample(a, (3, 4)), a)
    np.testing.assert_allclose(upsample(np.full((2, 3), 5.0), (7, 11)), 5.0)


def test_upsample_matches_pil_bilinear():
    # PIL's BILINEAR upscaling uses the same half-pixel convention (support 1 when enlarging).
    rng = np.random.default_rng(0)
    a = rng.random((7, 5)).astype(np.float32)
    pil = np.asarray(Image.fromarray(a, mode="F").resize((20, 28), Image.BILINEAR))
    np.testing.assert_allclose(upsample(a, (28, 20)), pil, atol=1e-5)


def test_upsample_matches_torch_align_corners_false():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = rng.random((7, 7))
    ref = torch.nn.functional.interpolate(torch.from_numpy(a)[None, None], size=(224, 200),
                                          mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(upsample(a, (224, 200)), ref, atol=1e-12)


def test_normalize_and_dark():
    m = np.array([[1.0, 3.0], [2.0, 5.0]])
    np.testing.assert_allclose(normalize(m, eps=0.0), [[0, 0.5], [0.25, 1.0]])
    assert normalize(np.zeros((2, 2))).max() == 0.0
    assert is_dark(np.zeros((3, 3)))
    assert is_dark(np.array([[0.0, 5e-9]]), eps=1e-8)
    assert not is_dark(np.array([[0.0, 2e-8]]), eps=1e-8)
    # (max-min)/(max-min+eps) < 0.5  <=>  max - min < eps
    assert normalize(np.array([[0.0, 5e-9]]), eps=1e-8).max() < 0.5
