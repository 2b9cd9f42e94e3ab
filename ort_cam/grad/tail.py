"""Scores on demand: a map whose last ops only resample it (a segmenter that upsamples its
logits to the input's size) is differentiated without computing the full-size map on the path.

Where S = T(Z) with T linear (Resize in nearest or linear mode, Transpose, Identity: the
"tail"), the target ``y = Σ W ⊙ S`` equals ``Σ Z ⊙ Tᵀ(W)``, and the gradient below Z is that
of ``Tᵀ(W)``. Tᵀ applies the transposed resampling matrices (the Resize rule), which never read
S. So the fused model computes ``g_Z = Tᵀ(W)``, ``y = Σ Z ⊙ g_Z`` (in float64, its output
``target_value``) and the gradient below Z from g_Z, and computes S only when its input
``want_scores`` is true (the run of x, where the target is chosen from S): an If whose
branches both give ``(S or an empty [0, ...] map, g_Z)``. W may be fed with one row for a whole
chunk of path points (Tᵀ maps rows one by one; g_Z is expanded to Z's rows), so a path point
pays neither the full-size forward nor a full-size copy of W.

On the resnet18 segment head of ``tools/bench_targets.py`` (21 classes upsampled x32 to 224²),
the full-size map and its layout conversion were 36 of the 55 ms a chunk of 17 points spent
past the class target's 310 (onnxruntime's profiler, 1 thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from .backprop import input_grads
from .builder import Builder
from .table import VjpContext

#: Ops a tail may hold: linear in their first input, with rules that do not read the forward
#: output and map the rows of the batch one by one (so one row of W serves every row).
TAIL_OPS = ("Resize", "Transpose", "Identity")
#: The ops that make a tail worth it: they enlarge the map.
_RESAMPLING = ("Resize",)


@dataclass(frozen=True)
class Tail:
    """Z (``start``) and the nodes from Z to S, in forward order."""

    start: gs.Variable
    nodes: tuple[gs.Node, ...]


def find_tail(score: gs.Tensor, layer: str) -> Tail | None:
    """The linear tail that ends at ``score``: a chain of ``TAIL_OPS`` whose every tensor but
    S feeds the next node only, with a Resize in it, not holding the layer; else None."""
    nodes: list[gs.Node] = []
    t = score
    while t.name != layer and len(t.inputs) == 1:
        node = t.inputs[0]
        data = node.inputs[0] if node.inputs else None
        if node.op not in TAIL_OPS or not isinstance(data, gs.Variable):
            break
        if len(data.outputs) != 1 or any(i is data for i in node.inputs[1:]):
            break
        nodes.append(node)
        t = data
    if not any(n.op in _RESAMPLING for n in nodes):
        return None
    assert isinstance(t, gs.Variable)
    return Tail(t, tuple(reversed(nodes)))


def _copy_forward(b: Builder, tail: Tail) -> gs.Tensor:
    """S computed again from Z in the builder's (sub)graph: the tail's nodes copied."""
    t: gs.Tensor = tail.start
    for node in tail.nodes:
        inputs = [t, *node.inputs[1:]]
        t = b.op(node.op, *inputs, **dict(node.attrs))
        b.declare(t, b.dtype(node.outputs[0]), b.shape(node.outputs[0]))
    return t


def _transposed(b: Builder, tail: Tail, g: gs.Tensor) -> gs.Tensor:
    """Tᵀ(g): the tail's rules applied from S back to Z, in the builder's (sub)graph."""
    ctx = VjpContext(b, active={tail.start.name, *(n.outputs[0].name for n in tail.nodes)})
    for node in reversed(tail.nodes):
        ((_, g),) = input_grads(ctx, node, [g])
    return g


Seed = Callable[[Builder, gs.Tensor, gs.Tensor], gs.Tensor]


def scores_on_demand(b: Builder, tail: Tail, weights: gs.Tensor, want: gs.Tensor,
                     seed: Seed | None = None) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor]:
    """(S or an empty map, g_Z expanded to Z's rows, y = Σ Z ⊙ g_Z in float64) in ``b``'s
    graph: S and ``seed(builder, S, W)`` (the W used where S is computed: a default target
    seeded into zero rows) only where ``want`` is true."""
    end = tail.nodes[-1].outputs[0]
    dtype, shape = b.dtype(end), b.shape(end)
    assert dtype is not None and shape is not None  # the probe run typed the forward graph
    then = b.branch("scores")
    s = _copy_forward(then, tail)
    used = seed(then, s, weights) if seed is not None else weights
    then.graph.outputs = [then.op("Identity", s), then.op("Identity", _transposed(then, tail,
                                                                                  used))]
    other = b.branch("no_scores")
    empty = other.const(np.zeros((0, *shape[1:]), dtype), hint="empty_scores")
    other.graph.outputs = [other.op("Identity", empty),
                           other.op("Identity", _transposed(other, tail, weights))]
    for graph in (then.graph, other.graph):
        graph.outputs[0].dtype, graph.outputs[0].shape = dtype, None
        graph.outputs[1].dtype, graph.outputs[1].shape = b.dtype(tail.start), None
    s_out, g_rows = b.op("If", want, n_out=2, then_branch=then.graph, else_branch=other.graph)
    z = tail.start
    b.declare(s_out, dtype, shape)
    g_z = b.declare(b.op("Expand", g_rows, b.op("Shape", z)), b.dtype(z), b.shape(z))
    wide = [b.op("Cast", t, to=TensorProto.DOUBLE) for t in (z, g_z)]
    rank = len(b.shape(z) or ())
    y = b.reduce("ReduceSum", b.op("Mul", *wide), range(1, rank), keepdims=False)
    return s_out, g_z, b.declare(y, np.float64, (shape[0],))
