"""VJP rules of ops that move values around: reshapes, transposes, slicing, reductions (Pad
and Gather are in rules_tensor)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .table import Grads, Gys, Unsupported, VjpContext, vjp

_INT64_MAX = int(np.iinfo(np.int64).max)


@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x = node.inputs[0]
    return ctx.grads(node, ctx.b.op("Reshape", gys[0], ctx.shape_of(x)))


@vjp("Transpose")
def transpose(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    rank = ctx.rank(node.inputs[0])
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
    return [ctx.b.op("Transpose", gys[0], perm=[int(i) for i in np.argsort(perm)])]


@vjp("Expand")
def expand(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    return [ctx.unbroadcast(gys[0], node.inputs[0]), None]


def _const_ints(ctx: VjpContext, node: gs.Node, i: int, what: str) -> list[int] | None:
    if len(node.inputs) <= i or not node.inputs[i].name:
        return None
    v = ctx.value(node.inputs[i])
    if v is None:
        raise Unsupported(f"{node.op} whose {what} is computed at run time")
    return [int(a) for a in np.asarray(v).reshape(-1)]


def _required_ints(ctx: VjpContext, node: gs.Node, i: int, what: str) -> list[int]:
    values = _const_ints(ctx, node, i, what)
    if values is None:
        raise Unsupported(f"{node.op} without its {what} input")
    return values


def _axes(ctx: VjpContext, node: gs.Node, rank: int, input_index: int = 1) -> list[int]:
    """Reduction axes from the attribute or (opset >= 13/18) the second input."""
    axes = node.attrs.get("axes")
    if axes is None:
        axes = _const_ints(ctx, node, input_index, "axes")
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return []
        return list(range(rank))
    return sorted(int(a) % rank for a in axes)


@vjp("ReduceMean", "ReduceSum")
def reduce_mean_sum(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, b = node.inputs[0], ctx.b
    shape = ctx.shape(x)
    axes = _axes(ctx, node, len(shape))
    g = gys[0]
    if not axes:
        return ctx.grads(node, g)
    if not int(node.attrs.get("keepdims", 1)):
        g = b.unsqueeze(g, axes)
    if node.op == "ReduceMean" and 0 in axes:
        # Averaged over the batch too: count the elements at run time (never bake the batch).
        count = b.op("Div", b.op("Size", x), b.op("Size", node.outputs[0]))
        g = b.op("Div", g, b.op("Cast", count, to=ctx.onnx_dtype(x)))
    elif node.op == "ReduceMean":
        g = b.op("Div", g, ctx.scalar(int(np.prod([shape[a] for a in axes])), x))
    return ctx.grads(node, b.op("Expand", g, b.op("Shape", x)))


@vjp("ReduceMax", "ReduceMin")
def reduce_max_min(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """To the extreme element(s) (every tied extreme gets the full gradient)."""
    x, y, b = node.inputs[0], node.outputs[0], ctx.b
    axes = _axes(ctx, node, ctx.rank(x))
    g = gys[0]
    if not axes:
        return ctx.grads(node, g)
    if not int(node.attrs.get("keepdims", 1)):
        g, y = b.unsqueeze(g, axes), b.unsqueeze(y, axes)
    return ctx.grads(node, b.op("Where", b.op("Equal", x, y), g, ctx.scalar(0, x)))


@vjp("Concat")
def concat(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    rank = ctx.rank(node.outputs[0])
    axis = int(node.attrs["axis"]) % rank
    grads: list[gs.Tensor | None] = []
    offset = 0
    for i, x in enumerate(node.inputs):
        size = ctx.shape(x)[axis]
        if ctx.needs(node, i):
            grads.append(ctx.b.op("Slice", gys[0], ctx.b.ints([offset]),
                                  ctx.b.ints([offset + size]), ctx.b.ints([axis])))
        else:
            grads.append(None)
        offset += size
    return grads


@vjp("Split")
def split(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    rank = ctx.rank(node.inputs[0])
    axis = int(node.attrs.get("axis", 0)) % rank
    parts = [g if g is not None else ctx.zeros_like(out) for g, out in zip(gys, node.outputs)]
    return ctx.grads(node, ctx.b.op("Concat", *parts, axis=axis))


@vjp("Slice")
def slice_(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Pad back the sliced-away border; a strided axis goes back through a 0/1 matrix."""
    x, b = node.inputs[0], ctx.b
    shape = ctx.shape(x)
    rank = len(shape)
    starts = _required_ints(ctx, node, 1, "starts")
    ends = _required_ints(ctx, node, 2, "ends")
    axes = _const_ints(ctx, node, 3, "axes") or list(range(len(starts)))
    steps = _const_ints(ctx, node, 4, "steps") or [1] * len(starts)
    g = gys[0]
    pads = [0] * (2 * rank)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= rank
        idx = list(range(*slice(start, end, step).indices(shape[axis])))
        if not idx:
            return ctx.grads(node)
        if step == 1:
            pads[axis], pads[rank + axis] = idx[0], shape[axis] - idx[-1] - 1
            continue
        onehot = np.zeros((len(idx), shape[axis]))
        onehot[np.arange(len(idx)), idx] = 1.0
        g = _matmul_along(ctx, g, axis, rank, ctx.array(onehot, x))
    if any(pads):
        g = b.op("Pad", g, b.ints(pads), ctx.scalar(0, x))
    return ctx.grads(node, g)


def _matmul_along(ctx: VjpContext, g: gs.Tensor, axis: int, rank: int,
                  matrix: gs.Tensor) -> gs.Tensor:
    """Apply ``g @ matrix`` along ``axis`` (moved last and back)."""
    b = ctx.b
    if axis == rank - 1:
        return b.op("MatMul", g, matrix)
    perm = [a for a in range(rank) if a != axis] + [axis]
    moved = b.op("MatMul", b.op("Transpose", g, perm=perm), matrix)
    return b.op("Transpose", moved, perm=[int(i) for i in np.argsort(perm)])


# DepthToSpace and SpaceToDepth: a reshape, a transpose and a reshape ------------------------
def _depth_space_steps(node: gs.Node, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """The forward pass as reshape(x, six) -> transpose(perm) -> reshape(y), per ONNX's
    definitions: (six, perm), ``six``'s batch written 0 (Reshape copies it)."""
    _, c, h, w = shape
    bs = int(node.attrs["blocksize"])
    if node.op == "SpaceToDepth":
        return [0, c, h // bs, bs, w // bs, bs], [0, 3, 5, 1, 2, 4]
    mode = node.attrs.get("mode", "DCR")
    if (mode.decode() if isinstance(mode, bytes) else str(mode)) == "CRD":
        return [0, c // bs**2, bs, bs, h, w], [0, 1, 4, 2, 5, 3]
    return [0, bs, bs, c // bs**2, h, w], [0, 3, 4, 1, 5, 2]


@vjp("DepthToSpace", "SpaceToDepth")
def depth_space(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Both move each value to one place (a permutation): the gradient undoes it, g reshaped
    to the transposed six-axis view, transposed back, reshaped to x's shape."""
    x, b = node.inputs[0], ctx.b
    six, perm = _depth_space_steps(node, ctx.shape(x))
    g = b.op("Reshape", gys[0], b.ints([six[p] for p in perm]))
    g = b.op("Transpose", g, perm=[int(i) for i in np.argsort(perm)])
    return ctx.grads(node, b.op("Reshape", g, ctx.shape_of(x)))
