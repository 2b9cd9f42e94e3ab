"""Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu 2020, "Score-CAM: Score-Weighted
Visual Explanations for Convolutional Neural Networks", CVPR workshops, Algorithm 1).

Each channel, upsampled to the input and scaled to [0, 1], masks the input; the class score of
the masked input, softmax-normalised over the channels, weights the channel:

    M_k = s( Up(A[k]) ),   s(M) = (M − min M) / (max M − min M)   (0 where A[k] is constant)
    S_k = y_c( x ⊙ M_k ),  α_k = exp(S_k) / Σ_j exp(S_j)
    L   = ReLU( Σ_k α_k A[k] )

Up is the bilinear half-pixel upsampling of the maps (``maps.upsample``); x ⊙ M_k multiplies
the model-space input, broadcast over its channels (as pytorch-grad-cam). The paper's
baseline term −y_c(x_b) is the same for every k and cancels in the softmax. K model runs, in
batches of ``run_batch``.

Two steps differ from pytorch-grad-cam 1.5.7: it upsamples with torch's
``UpsamplingBilinear2d``, which is ``align_corners=True`` (the paper does not say which), and
divides by max − min + 1e-8. tests/test_methods_gradcam_lib.py compares with its upsampling
swapped for the half-pixel one, and prints the difference that align_corners makes.
"""

from __future__ import annotations

import numpy as np

from ..maps import upsample
from .common import weights_map
from .run_based import ModelRuns, RunsMethod, batches


def channel_masks(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """s(Up(A[k])) for every channel of ``a`` [k, h, w] -> [k, H, W] in [0, 1]."""
    up = np.stack([upsample(ch, size) for ch in a])
    lo = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - lo
    return np.divide(up - lo, span, out=np.zeros_like(up), where=span > 0)


def score_weights(a: np.ndarray, runs: ModelRuns) -> np.ndarray:
    """α = softmax_k( y_c(x ⊙ M_k) )."""
    size = runs.input_size()
    s = np.empty(a.shape[0])
    for part in batches(a.shape[0], runs.batch):
        s[part] = runs.masked_scores(channel_masks(a[part], size))
    e = np.exp(s - s.max())
    return e / e.sum()


class ScoreCam(RunsMethod):
    """Channels weighted by the softmax of the scores of the input masked by each (K runs)."""

    name = "scorecam"
    title = "Score-CAM"
    short = "Score"
    color = "darkorange"
    cost = "K model runs, batched (K channels); no gradient"

    def compute(self, runs: ModelRuns) -> np.ndarray:
        a = runs.activation()
        return weights_map(score_weights(a, runs), a, self.options)
