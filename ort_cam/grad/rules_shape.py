"""VJP rules of ops that move values around: reshapes, transposes, slicing, reductions."""

from __future__ import annotations

import numpy as np

from .table import Unsupported, VjpContext, vjp

_INT64_MAX = np.iinfo(np.int64).max


def _onnx_dtype(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx: VjpContext, node, gys):
    x = node.inputs[0]
    return [ctx.b.op("Reshape", gys[0], ctx.shape_of(x))] + [None] * (len(node.inputs) - 1)


@vjp("Transpose")
def transpose(ctx, node, gys):
    rank = ctx.rank(node.inputs[0])
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
    return [ctx.b.op("Transpose", gys[0], perm=[int(i) for i in np.argsort(perm)])]


@vjp("Expand")
def expand(ctx, node, gys):
    return [ctx.unbroadcast(gys[0], ctx.shape(node.outputs[0]), node.inputs[0]), None]


def _const_ints(ctx, node, i, what):
    if len(node.inputs) <= i or not node.inputs[i].name:
        return None
    v = ctx.value(node.inputs[i])
    if v is None:
        raise Unsupported(f"{node.op} whose {what} is computed at run time")
    return [int(a) for a in np.asarray(v).reshape(-1)]


def _axes(ctx, node, rank, input_index=1):
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
def reduce_mean_sum(ctx, node, gys):
    x, b = node.inputs[0], ctx.b
    shape = ctx.shape(x)
    axes = _axes(ctx, node, len(shape))
    g = gys[0]
    if not axes:
        return [g, None]
    if not int(node.attrs.get("keepdims", 1)):
        g = b.unsqueeze(g, axes)
    if node.op == "ReduceMean" and 0 in axes:
        # Averaged over the batch too: count the elements at run time (never bake the batch).
        count = b.op("Div", b.op("Size", x), b.op("Size", node.outputs[0]))
        g = b.op("Div", g, b.op("Cast", count, to=_onnx_dtype(ctx.dtype(x))))
    elif node.op == "ReduceMean":
        g = b.op("Div", g, ctx.scalar(int(np.prod([shape[a] for a in axes])), x))
    return [b.op("Expand", g, b.op("Shape", x)), None]


@vjp("ReduceMax", "ReduceMin")
def reduce_max_min(ctx, node, gys):
    """To the extreme element(s) (every tied extreme gets the full gradient)."""
    x, y, b = node.inputs[0], node.outputs[0], ctx.b
    axes = _axes(ctx, node, ctx.rank(x))
    g = gys[0]
    if not axes:
        return [g, None]
    if not int(node.attrs.get("keepdims", 1)):
        g, y = b.unsqueeze(g, axes), b.unsqueeze(y, axes)
    return [b.op("Where", b.op("Equal", x, y), g, ctx.scalar(0, x)), None]


@vjp("Concat")
def concat(ctx, node, gys):
    rank = ctx.rank(node.outputs[0])
    axis = int(node.attrs["axis"]) % rank
    grads, offset = [], 0
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
def split(ctx, node, gys):
    rank = ctx.rank(node.inputs[0])
    axis = int(node.attrs.get("axis", 0)) % rank
    parts = [g if g is not None else ctx.zeros_like(out) for g, out in zip(gys, node.outputs)]
    return [ctx.b.op("Concat", *parts, axis=axis), None]


@vjp("Slice")
def slice_(ctx, node, gys):
    """Pad back the sliced-away border; a strided axis goes back through a 0/1 matrix."""
    x, b = node.inputs[0], ctx.b
    shape = ctx.shape(x)
    rank = len(shape)
    starts = _const_ints(ctx, node, 1, "starts")
    ends = _const_ints(ctx, node, 2, "ends")
    axes = _const_ints(ctx, node, 3, "axes") or list(range(len(starts)))
    steps = _const_ints(ctx, node, 4, "steps") or [1] * len(starts)
    g = gys[0]
    pads = [0] * (2 * rank)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= rank
        idx = list(range(*slice(start, end, step).indices(shape[axis])))
        if not idx:
            return [None, None, None, None, None]
        if step == 1:
            pads[axis], pads[rank + axis] = idx[0], shape[axis] - idx[-1] - 1
            continue
        onehot = np.zeros((len(idx), shape[axis]))
        onehot[np.arange(len(idx)), idx] = 1.0
        g = _matmul_along(ctx, g, axis, rank, ctx.array(onehot, x))
    if any(pads):
        g = b.op("Pad", g, b.ints(pads), ctx.scalar(0, x))
    return [g, None, None, None, None]


def _matmul_along(ctx, g, axis, rank, matrix):
    """Apply ``g @ matrix`` along ``axis`` (moved last and back)."""
    b = ctx.b
    if axis == rank - 1:
        return b.op("MatMul", g, matrix)
    perm = [a for a in range(rank) if a != axis] + [axis]
    moved = b.op("MatMul", b.op("Transpose", g, perm=perm), matrix)
    return b.op("Transpose", moved, perm=[int(i) for i in np.argsort(perm)])


@vjp("Pad")
def pad(ctx, node, gys):
    mode = node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        raise Unsupported(f"Pad in {mode!r} mode")
    x, b = node.inputs[0], ctx.b
    rank = ctx.rank(x)
    pads = _const_ints(ctx, node, 1, "pads")
    axes = _const_ints(ctx, node, 3, "axes")
    if axes is not None:
        full = [0] * (2 * rank)
        for j, a in enumerate(axes):
            full[a % rank], full[rank + a % rank] = pads[j], pads[len(axes) + j]
        pads = full
    # A negative pad (a crop) in the forward pass pads back with zeros; then the padded
    # border is cut off. Ends count from the back, so no static size (the batch) is baked in.
    g = gys[0]
    crops = [max(-p, 0) for p in pads]
    if any(crops):
        g = b.op("Pad", g, b.ints(crops), ctx.scalar(0, x))
    axes_cut = [a for a in range(rank) if pads[a] > 0 or pads[rank + a] > 0]
    if axes_cut:
        starts = [max(pads[a], 0) for a in axes_cut]
        ends = [-pads[rank + a] if pads[rank + a] > 0 else _INT64_MAX for a in axes_cut]
        g = b.op("Slice", g, b.ints(starts), b.ints(ends), b.ints(axes_cut))
    return [g] + [None] * (len(node.inputs) - 1)


@vjp("Gather")
def gather(ctx, node, gys):
    """Gather with constant 0-D/1-D indices: scatter back through a 0/1 (count) matrix."""
    x, idx_t = node.inputs
    idx = ctx.value(idx_t)
    if idx is None:
        raise Unsupported("Gather whose indices are computed at run time")
    shape = ctx.shape(x)
    rank = len(shape)
    axis = int(node.attrs.get("axis", 0)) % rank
    if idx.ndim > 1:
        raise Unsupported("Gather with indices of rank > 1")
    g = gys[0]
    if idx.ndim == 0:
        g = ctx.b.unsqueeze(g, [axis])
    flat = np.asarray(idx).reshape(-1) % shape[axis]
    counts = np.zeros((flat.size, shape[axis]))
    np.add.at(counts, (np.arange(flat.size), flat), 1.0)
    return [_matmul_along(ctx, g, axis, rank, ctx.array(counts, x)), None]
