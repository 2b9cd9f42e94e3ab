"""Ablation-CAM (Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep
Convolutional Network via Gradient-free Localization", WACV, eqs 2–4).

Each channel's weight is the relative drop of the class score when that channel alone is
set to zero at the layer:

    w_k = ( y_c − y_c^k ) / y_c,     y_c^k = y_c with A[k] = 0
    L   = ReLU( Σ_k w_k A[k] )

y_c and every y_c^k come from the same forward head (the model above the layer, fed the
layer values and the tensors that cross the cut at x), K + 1 rows in batches of
``run_batch``. If y_c is exactly 0 the weights are y_c − y_c^k (the paper's quotient is
undefined there).

Deviation of pytorch-grad-cam 1.5.7 from the paper: where the layer's smallest value is not
exactly 0 (no ReLU before it), it "ablates" to min(A) − 1e7 instead of 0, and within a batch
each row re-reads the minimum that the rows before it already lowered, so the value put in
channel k is min(A) − (i+1)·1e7 for its position i in the batch of 32. On ReLU layers (min 0)
both compute the paper's quantity.
"""

from __future__ import annotations

import numpy as np

from .common import weights_map
from .run_based import ModelRuns, RunsMethod, batches


def ablation_weights(a: np.ndarray, runs: ModelRuns) -> np.ndarray:
    """w_k = (y_c − y_c^k)/y_c for A [K, h, w], y_c^k from the head with A[k] = 0."""
    k = a.shape[0]
    drops = np.empty(k + 1)  # row 0: nothing ablated
    for part in batches(k + 1, runs.batch):
        rows = np.arange(part.start, part.stop)
        acts = np.repeat(a[None], len(rows), axis=0)
        hit = rows > 0
        acts[np.flatnonzero(hit), rows[hit] - 1] = 0.0
        drops[part] = runs.head_scores(acts)
    y, yk = drops[0], drops[1:]
    return (y - yk) / y if y != 0 else y - yk


class AblationCam(RunsMethod):
    """Relative score drop when each channel is zeroed, through the head (K + 1 head rows)."""

    name = "ablationcam"
    title = "Ablation-CAM"
    short = "Ablation"
    color = "darkred"
    cost = "K+1 head runs, batched (K channels); no gradient"

    def compute(self, runs: ModelRuns) -> np.ndarray:
        a = runs.activation()
        return weights_map(ablation_weights(a, runs), a, self.options)
