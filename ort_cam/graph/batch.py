"""A model exported with a fixed batch of 1, made to take any batch where the graph allows.

Exporters with static shapes fold the batch into constants: a Reshape target ``[1, 512]``
(``torch.flatten``, ``x.view(x.size(0), -1)``), a class token folded to a ``[1, 1, D]``
constant and concatenated with the patch tokens, a Resize to ``sizes`` ``[1, C, H, W]``, a
Slice that ends at 1 on the batch axis. ``free_batch`` follows the batch from the image input
through the graph (which axis of each tensor holds it, from the shapes of a batch-1 run) and
rewrites each such operand to take the batch from ``Shape(x)[0:1]`` of the input ``x``:

- a Reshape whose target puts the batch in axis k (the axes before k hold exactly the
  elements before the batch) gets target[k] = N·target[k] (N alone where target[k] is 1),
  built from ``Shape(x)[0:1]``, never a bare 0 (a literal zero under ``allowzero=1``);
- a Resize to constant ``sizes`` gets sizes[batch axis] = N;
- a Slice over the whole batch axis (start 0, end 1) gets end = INT64_MAX;
- an input of a Concat that holds no batch but a 1 where the other inputs hold it (a folded
  class token) is expanded to the batch (``Expand`` to ``[1, .., N, .., 1]``).

Where the batch is lost on the way (an op that mixes samples, or one this module has no rule
for that changes the rank), nothing after it is rewritten. Whatever it did, the caller checks
the result numerically (``load.py``: a batch of two different inputs must give what two
batch-1 runs give) and keeps the model at batch 1 when it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

Shape = tuple[int, ...]
_INT64_MAX = int(np.iinfo(np.int64).max)
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare", "ReduceLogSum"}
#: Ops whose output holds no batch (shape arithmetic, constants made from a shape).
_NO_BATCH = {"Shape", "Size", "ConstantOfShape", "NonZero", "Range"}


@dataclass(frozen=True)
class Carry:
    """Where a tensor holds the batch: ``axis``; ``merged``: the axis is N·m (m > 1 at batch
    1: the batch merged with other dims, as windows or attention heads), else N."""

    axis: int
    merged: bool = False


@dataclass
class BatchRewrite:
    """What ``free_batch`` did: ``rewritten``: descriptions of the operands rewritten
    ("Reshape node_view target [1, 512]"); ``lost``: the first node where the batch could not
    be followed (None when it was followed to every output)."""

    rewritten: list[str] = field(default_factory=list)
    lost: str | None = None


class _Rewriter:
    """Rewrites operands of ``graph`` to take the batch of the input ``source``."""

    def __init__(self, graph: gs.Graph, source: gs.Variable, shapes: dict[str, Shape]):
        self.graph, self.source, self.shapes = graph, source, shapes
        self.carry: dict[str, Carry] = {source.name: Carry(0)}
        self.done = BatchRewrite()
        self._batch: gs.Variable | None = None
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"ort_cam_batch/{hint}_{self._count}"

    def node(self, op: str, inputs: list[gs.Tensor], hint: str, **attrs) -> gs.Variable:
        out = gs.Variable(self.name(hint), dtype=np.int64)
        self.graph.nodes.append(gs.Node(op, name=self.name(op), inputs=inputs, outputs=[out],
                                        attrs=attrs))
        return out

    def ints(self, values: list[int], hint: str) -> gs.Constant:
        return gs.Constant(self.name(hint), np.asarray(values, dtype=np.int64))

    def batch(self) -> gs.Variable:
        """``Shape(x)[0:1]``: the batch as an int64 vector of one element (made once)."""
        if self._batch is None:
            self._batch = self.node("Shape", [self.source], "batch", start=0, end=1)
        return self._batch

    def with_batch(self, values: np.ndarray, k: int, hint: str) -> gs.Variable:
        """``values`` (an int64 vector) with element k multiplied by the batch (replaced by
        it where it is 1)."""
        values = np.asarray(values, dtype=np.int64).reshape(-1)
        middle: gs.Tensor = self.batch()
        if int(values[k]) != 1:
            middle = self.node("Mul", [middle, self.ints([int(values[k])], "factor")], "merged")
        parts: list[gs.Tensor] = []
        if k > 0:
            parts.append(self.ints([int(v) for v in values[:k]], "head"))
        parts.append(middle)
        if k + 1 < len(values):
            parts.append(self.ints([int(v) for v in values[k + 1:]], "tail"))
        return parts[0] if len(parts) == 1 else self.node("Concat", parts, hint, axis=0)

    def lose(self, node: gs.Node) -> None:
        if self.done.lost is None:
            self.done.lost = f"{node.op} {node.name}"


def _const(t: gs.Tensor | None) -> np.ndarray | None:
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    return None


def _shape(rw: _Rewriter, t: gs.Tensor) -> Shape | None:
    """The batch-1 shape of ``t`` (a constant's own)."""
    if isinstance(t, gs.Constant):
        return tuple(int(d) for d in np.shape(t.values))
    return rw.shapes.get(t.name)


def _present(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def _axis_in_output(a: Shape, b: Shape, carry: Carry) -> int | None:
    """The axis of ``b`` (a reshape of ``a``, batch-1 shapes) that holds the batch of ``a``'s
    axis ``carry.axis`` as its outermost factor: the first k whose leading axes hold exactly
    the elements before the batch; None when the batch falls inside an axis."""
    outer = int(np.prod(a[:carry.axis], dtype=np.int64))
    size = 1
    for k, d in enumerate(b):
        if size == outer:
            return k
        size *= int(d)
        if size > outer:
            return None
    return None


def _reshape(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    if index != 0:
        return None
    data, out = node.inputs[0], node.outputs[0]
    a, b = rw.shapes.get(data.name), rw.shapes.get(out.name)
    if a is None or b is None:
        return None
    if node.op == "Squeeze" and _squeezes(node, a, c):
        return None
    k = _axis_in_output(a, b, c)
    if k is None:
        return None
    target = _const(_present(node, 1)) if node.op == "Reshape" else None
    if target is not None:
        _reshape_target(rw, node, target, k, c)
    return Carry(k, int(b[k]) != 1)


def _squeezes(node: gs.Node, a: Shape, c: Carry) -> bool:
    """Whether a Squeeze removes the batch axis (at batch 1 it is a unit axis)."""
    axes = node.attrs.get("axes")
    if axes is None:
        value = _const(_present(node, 1))
        axes = None if value is None else value.reshape(-1).tolist()
    if axes is None:
        return True  # every unit axis: the batch axis among them
    return c.axis in [int(v) % len(a) for v in axes]


def _reshape_target(rw: _Rewriter, node: gs.Node, target: np.ndarray, k: int, c: Carry) -> None:
    values = target.reshape(-1)
    if k >= len(values) or int(values[k]) == -1:
        return  # -1 takes the batch in by itself
    copies = int(values[k]) == 0 and not int(node.attrs.get("allowzero", 0))
    if copies and k == c.axis:
        return  # 0 copies the input's axis k, the batch itself
    resolved = values.copy()
    resolved[k] = rw.shapes[node.outputs[0].name][k]
    node.inputs[1] = rw.with_batch(resolved, k, "reshape_target")
    rw.done.rewritten.append(f"Reshape {node.name} target {values.tolist()}")


def _transpose(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    rank = len(rw.shapes.get(node.inputs[0].name, ()))
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
    return Carry(perm.index(c.axis), c.merged) if c.axis in perm else None


def _gather(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    rank = len(rw.shapes.get(node.inputs[0].name, ()))
    axis = int(node.attrs.get("axis", 0)) % max(rank, 1)
    idx_rank = len(_shape(rw, node.inputs[1]) or ())
    if index == 1:  # the indices hold the batch (an embedding lookup)
        return Carry(axis + c.axis, c.merged)
    if axis == c.axis:
        return None  # picks samples
    return c if c.axis < axis else Carry(c.axis - 1 + idx_rank, c.merged)


def _reduce(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    if index != 0:
        return None
    rank = len(rw.shapes.get(node.inputs[0].name, ()))
    if node.op in ("ArgMax", "ArgMin"):
        axes: list[int] | None = [int(node.attrs.get("axis", 0))]
    else:
        axes = node.attrs.get("axes")
        if axes is None and _present(node, 1) is not None:
            value = _const(node.inputs[1])
            if value is None:
                return None
            axes = value.reshape(-1).tolist()
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return c
        return None  # every axis, the batch among them
    axes = [int(a) % rank for a in axes]
    if c.axis in axes:
        return None
    if int(node.attrs.get("keepdims", 1)):
        return c
    return Carry(c.axis - sum(a < c.axis for a in axes), c.merged)


def _concat(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    axis = int(node.attrs.get("axis", 0)) % len(rw.shapes[node.outputs[0].name])
    if axis == c.axis:
        return None  # samples stacked on the batch axis
    for i, t in enumerate(node.inputs):
        if t.name in rw.carry:
            continue
        shape = _shape(rw, t)
        if c.merged or shape is None or len(shape) <= c.axis or shape[c.axis] != 1:
            return None
        ones = [1] * len(shape)
        node.inputs[i] = _expand(rw, t, rw.with_batch(np.asarray(ones), c.axis, "expand_to"))
        rw.done.rewritten.append(f"Concat {node.name} input {t.name} {list(shape)} expanded "
                                 "to the batch")
    return c


def _expand(rw: _Rewriter, t: gs.Tensor, shape: gs.Tensor) -> gs.Variable:
    dtype = np.asarray(t.values).dtype if isinstance(t, gs.Constant) else t.dtype
    out = gs.Variable(rw.name("batch_expanded"), dtype=dtype)
    rw.graph.nodes.append(gs.Node("Expand", name=rw.name("Expand"), inputs=[t, shape],
                                  outputs=[out]))
    return out


def _slice(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    if index != 0:
        return None
    starts, ends = _const(_present(node, 1)), _const(_present(node, 2))
    axes_t, steps_t = _present(node, 3), _present(node, 4)
    axes, steps = _const(axes_t), _const(steps_t)
    if starts is None or ends is None or (axes_t is not None and axes is None) \
            or (steps_t is not None and steps is None):
        return c  # computed at run time: from the shapes, as the exporter wrote it
    rank = len(rw.shapes.get(node.inputs[0].name, ()))
    axes_list = [int(a) % rank for a in (axes.reshape(-1) if axes is not None
                                         else range(starts.size))]
    if c.axis not in axes_list:
        return c
    i = axes_list.index(c.axis)
    size = rw.shapes[node.inputs[0].name][c.axis]
    step = 1 if steps is None else int(steps.reshape(-1)[i])
    start, end = int(starts.reshape(-1)[i]), int(ends.reshape(-1)[i])
    if c.merged or step != 1 or start not in (0, -size) or end < size:
        return None  # a part of the batch
    if end < _INT64_MAX:
        new_ends = ends.reshape(-1).astype(np.int64).copy()
        new_ends[i] = _INT64_MAX
        node.inputs[2] = rw.ints(new_ends.tolist(), "slice_ends")
        rw.done.rewritten.append(f"Slice {node.name} ends {ends.reshape(-1).tolist()}")
    return c


def _resize(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    if index != 0:
        return None
    sizes = _const(_present(node, 3))
    if sizes is not None and sizes.size > c.axis and not c.merged:
        values = sizes.reshape(-1).astype(np.int64)
        if int(values[c.axis]) == 1:
            node.inputs[3] = rw.with_batch(values, c.axis, "resize_sizes")
            rw.done.rewritten.append(f"Resize {node.name} sizes {values.tolist()}")
    return _broadcasting(rw, node, c, 0)


def _matmul(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    rank = len(rw.shapes.get(node.inputs[index].name, ()))
    out_rank = len(rw.shapes.get(node.outputs[0].name, ()))
    contracted = rank - 1 if index == 0 else rank - 2
    if rank < 2 or c.axis == contracted:
        return None
    return Carry(c.axis + out_rank - rank, c.merged)


def _gemm(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    trans = int(node.attrs.get("transA" if index == 0 else "transB", 0))
    if index == 0 and c.axis == trans:
        return Carry(0, c.merged)
    if index == 1 and c.axis == 1 - trans:
        return Carry(1, c.merged)
    return None


def _repeats_one(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    """Tile and Expand keep the batch where they repeat (broadcast) it once."""
    if index != 0:
        return None
    value = _const(_present(node, 1))
    out_rank = len(rw.shapes.get(node.outputs[0].name, ()))
    in_rank = len(rw.shapes.get(node.inputs[0].name, ()))
    axis = c.axis + out_rank - in_rank
    if value is None:
        return Carry(axis, c.merged)
    values = value.reshape(-1)
    return Carry(axis, c.merged) if axis < values.size and int(values[axis]) == 1 else None


def _broadcasting(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    """Element-wise and same-rank ops: the batch stays on its axis, counted from the right
    (numpy broadcasting), where the output has that axis at the same size."""
    a = rw.shapes.get(node.inputs[index].name)
    out = node.outputs[0] if node.outputs else None
    b = rw.shapes.get(out.name) if out is not None else None
    if a is None or b is None or len(b) < len(a):
        return None
    axis = c.axis + len(b) - len(a)
    return Carry(axis, c.merged) if b[axis] == a[c.axis] else None


def _split(rw: _Rewriter, node: gs.Node, c: Carry, index: int) -> Carry | None:
    rank = len(rw.shapes.get(node.inputs[0].name, ()))
    axis = int(node.attrs.get("axis", 0)) % max(rank, 1)
    return c if index == 0 and axis != c.axis else None


_Rule = Callable[[_Rewriter, gs.Node, Carry, int], "Carry | None"]
_RULES: dict[str, _Rule] = {
    "Reshape": _reshape, "Flatten": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Transpose": _transpose, "Concat": _concat, "Slice": _slice, "Resize": _resize,
    "Tile": _repeats_one, "Expand": _repeats_one, "Split": _split, "MatMul": _matmul,
    "Gemm": _gemm, "Gather": _gather,
    **{op: _reduce for op in (*_REDUCE, "ArgMax", "ArgMin")},
}


def _step(rw: _Rewriter, node: gs.Node) -> None:
    """Follow the batch through ``node`` (rewriting its operands where needed)."""
    carried = [(i, rw.carry[t.name]) for i, t in enumerate(node.inputs) if t.name in rw.carry]
    if not carried or node.op in _NO_BATCH:
        return
    index, c = carried[0]
    rule = _RULES.get(node.op)
    got = rule(rw, node, c, index) if rule is not None else _broadcasting(rw, node, c, index)
    first = rw.shapes.get(node.outputs[0].name) if node.outputs else None
    # further outputs: Split's parts, or those of the first one's shape (TopK's values, ...)
    outs = [] if got is None else [
        (o, got) for k, o in enumerate(node.outputs)
        if k == 0 or node.op == "Split" or rw.shapes.get(o.name) == first]
    if not outs:
        rw.lose(node)
    for out, carry in outs:
        if out.name:
            rw.carry[out.name] = carry


def free_batch(graph: gs.Graph, shapes: dict[str, Shape]) -> BatchRewrite:
    """Rewrite ``graph`` (in place; topologically sorted, its first input's axis 0 the batch)
    so that its batch-1 operands take the batch (see the module docstring). ``shapes``: every
    tensor's shape in a run at batch 1."""
    source = graph.inputs[0]
    rw = _Rewriter(graph, source, {**shapes, source.name: shapes.get(source.name, ())})
    for node in list(graph.nodes):
        _step(rw, node)
    graph.toposort()
    return rw.done


def fixed_batch_one(graph: gs.Graph) -> bool:
    """Whether every input of ``graph`` has a fixed batch of 1 (axis 0)."""
    return bool(graph.inputs) and all(
        t.shape is not None and len(t.shape) >= 1 and t.shape[0] == 1 for t in graph.inputs)


def agreement(batched: list[np.ndarray], rows: list[list[np.ndarray]]
              ) -> tuple[float, str | None]:
    """How far the outputs of one batched run (``batched``) are from those of its rows run
    one at a time (``rows[i]``): the largest difference relative to each output's largest
    magnitude, and what differs beyond numbers (a shape, an integer value), else None."""
    worst = 0.0
    for k, value in enumerate(batched):
        value = np.asarray(value)
        parts = [np.asarray(r[k]) for r in rows]
        if any(p.ndim == 0 for p in parts) or np.concatenate(parts).shape != value.shape:
            want = [len(parts), *parts[0].shape[1:]] if parts[0].ndim else []
            return float("inf"), f"output {k} has shape {list(value.shape)}, not {want}"
        ref = np.concatenate(parts)
        if not np.issubdtype(value.dtype, np.floating):
            if not np.array_equal(value, ref):
                return float("inf"), f"output {k} ({value.dtype}) differs"
            continue
        if ref.size:
            scale = float(np.max(np.abs(ref)))
            diff = float(np.max(np.abs(value.astype(np.float64) - ref)))
            worst = max(worst, diff / scale if scale > 0 else diff)
    return worst, None if np.isfinite(worst) else "an output is not finite"
