"""Integrated Gradients at the layer, as captum's ``LayerIntegratedGradients`` (Sundararajan,
Taly, Yan 2017, "Axiomatic Attribution for Deep Networks", ICML, applied to a layer's output).

The straight path in layer space from the baseline's activation A' = A(x0) to A = A(x), through
the head above the layer (its other inputs, the tensors crossing the cut, stay at x's values:
captum replaces the layer's output in a forward of x):

    attr[k,i,j] = (A − A')[k,i,j] · Σ_{l=0..m} w_l ∂y_c/∂A[k,i,j] ( A' + (l/m)(A − A') )
    w_l = 1/m, halved at l = 0 and l = m (trapezoid: captum's ``riemann_trapezoid`` with
          n_steps = m + 1)
    L   = ReLU( Σ_k attr[k] )

Completeness: Σ attr ≈ y_head(A) − y_head(A'). m is the explanation's ``steps`` (with
``steps="auto"``, the m the path settled on; when no path method is asked for, the default).
m + 1 head gradient runs, in batches of ``run_batch``.
"""

from __future__ import annotations

import numpy as np

from .common import channel_map
from .run_based import ModelRuns, RunsMethod, batches


def layer_integrated_gradients(a0: np.ndarray, a: np.ndarray, m: int,
                               runs: ModelRuns) -> np.ndarray:
    """attr [K, h, w] by the trapezoid rule over m + 1 points of the straight layer path."""
    delta = a - a0
    total = np.zeros_like(a)
    for part in batches(m + 1, runs.batch):
        ls = np.arange(part.start, part.stop)
        acts = a0[None] + (ls / m)[:, None, None, None] * delta[None]
        _, g = runs.head_gradients(acts)
        w = np.where((ls == 0) | (ls == m), 0.5, 1.0) / m
        total += np.tensordot(w, g, axes=(0, 0))
    return delta * total


class LayerIntegratedGradients(RunsMethod):
    """captum's LayerIntegratedGradients summed over channels (m + 1 head gradient runs)."""

    name = "layerig"
    title = "Layer Integrated Gradients"
    short = "Layer IG"
    color = "black"
    cost = "m+1 head gradient runs (straight path in layer space)"

    def compute(self, runs: ModelRuns) -> np.ndarray:
        attr = layer_integrated_gradients(runs.baseline_activation(), runs.activation(),
                                          self.state.m, runs)
        return channel_map(attr, self.options)
