"""VJP rules of the ops transformers and resampling layers add: Einsum, Tile, CumSum, Resize
(nearest and linear), GridSample (bilinear and nearest; zeros and border padding), Pad in
every mode (constant, edge, reflect, wrap), GatherElements, Gather (constant indices, or
computed at run time), and the norms ReduceL2, ReduceL1, ReduceSumSquare, ReduceLogSumExp.

Resize and the non-constant Pad modes are linear maps along each axis: their gradient applies
the transpose of each axis's 0/1 or interpolation matrix, worked out here from the attributes
as onnxruntime computes the forward (tests/vjp_cases.py checks every mode against it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .rules_shape import _INT64_MAX, _axes, _const_ints, _matmul_along, _required_ints
from .table import Grads, Gys, Unsupported, VjpContext, vjp


# Einsum ----------------------------------------------------------------------------------
def _einsum_terms(node: gs.Node) -> tuple[list[str], str]:
    """The input subscripts and the output subscripts of an Einsum (spaces removed; an
    implicit output made explicit: the letters used once, in order, after any ellipsis)."""
    eq = node.attrs["equation"]
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if "->" not in eq:
        letters = [c for t in terms for c in t.replace("...", "")]
        rhs = ("..." if any("..." in t for t in terms) else "") + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, rhs


def _letters(term: str) -> list[str]:
    return list(term.replace("...", ""))


@vjp("Einsum")
def einsum(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """d/d input i: the Einsum of the output gradient with the other inputs, to input i's
    subscripts; a letter only input i has (summed over there) is broadcast back."""
    terms, out = _einsum_terms(node)
    b, grads = ctx.b, ctx.grads(node)
    for i, (x, term) in enumerate(zip(node.inputs, terms, strict=True)):
        if not ctx.needs(node, i):
            continue
        letters = _letters(term)
        if len(set(letters)) != len(letters):
            raise Unsupported("Einsum with a repeated index in one operand (a diagonal)")
        others = [out] + [t for j, t in enumerate(terms) if j != i]
        known = set("".join(others))
        if "..." in term and not any("..." in t for t in others):
            raise Unsupported("Einsum summing over an ellipsis")
        target = "".join(c for c in term.replace("...", ".") if c == "." or c in known)
        target = target.replace(".", "...")
        tensors = [gys[0]] + [t for j, t in enumerate(node.inputs) if j != i]
        gx = b.op("Einsum", *tensors, equation=f"{','.join(others)}->{target}")
        missing = [c for c in letters if c not in known]
        if missing:
            n_ell = ctx.rank(x) - len(letters)
            positions = _positions(term, n_ell)
            gx = b.op("Expand", b.unsqueeze(gx, [positions[c] for c in missing]),
                      b.op("Shape", x))
        grads[i] = ctx.unbroadcast(gx, x)
    return grads


def _positions(term: str, n_ell: int) -> dict[str, int]:
    """The axis of each letter of ``term`` once its ellipsis stands for ``n_ell`` axes."""
    pos, axis = {}, 0
    for part in term.split("..."):
        for c in part:
            pos[c] = axis
            axis += 1
        axis += n_ell
    return pos


# Tile and CumSum ---------------------------------------------------------------------------
@vjp("Tile")
def tile(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """g viewed as [r0, d0, r1, d1, ...] and summed over the repeats (d0 = -1: the batch)."""
    x, b = node.inputs[0], ctx.b
    repeats = _required_ints(ctx, node, 1, "repeats")
    dims = list(ctx.shape(x))
    if all(r == 1 for r in repeats):
        return ctx.grads(node, gys[0])
    target = [v for k, (r, d) in enumerate(zip(repeats, dims)) for v in (r, -1 if k == 0 else d)]
    g = b.op("Reshape", gys[0], b.ints(target))
    summed = b.reduce("ReduceSum", g, list(range(0, 2 * len(dims), 2)), keepdims=False)
    return ctx.grads(node, summed)


@vjp("CumSum")
def cumsum(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """The adjoint of a cumulative sum is the cumulative sum the other way."""
    axis = node.inputs[1]
    reverse = 1 - int(node.attrs.get("reverse", 0))
    gx = ctx.b.op("CumSum", gys[0], axis, exclusive=int(node.attrs.get("exclusive", 0)),
                  reverse=reverse)
    return ctx.grads(node, gx)


# Gathers with indices at run time --------------------------------------------------------
@vjp("GatherElements")
def gather_elements(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x, idx = node.inputs
    axis = int(node.attrs.get("axis", 0))
    zeros = ctx.zeros_like(x)
    return [ctx.b.op("ScatterElements", zeros, idx, gys[0], axis=axis, reduction="add"), None]


def gather_dynamic(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Gather whose indices are computed at run time (a token picked by ArgMax): the gradient
    scattered back with ScatterElements(reduction=add), the indices broadcast along g."""
    x, idx = node.inputs
    b, g = ctx.b, gys[0]
    rank = ctx.rank(x)
    axis = int(node.attrs.get("axis", 0)) % rank
    idx_rank = ctx.rank(idx)
    if idx_rank > 1:
        raise Unsupported("Gather with run-time indices of rank > 1")
    if idx_rank == 0:
        g, idx = b.unsqueeze(g, [axis]), b.unsqueeze(idx, [0])
    if ctx.dtype(idx) != np.dtype(np.int64):
        idx = b.op("Cast", idx, to=7)
    shape = [1] * rank
    shape[axis] = -1
    full = b.op("Expand", b.op("Reshape", idx, b.ints(shape)), b.op("Shape", g))
    return [b.op("ScatterElements", ctx.zeros_like(x), full, g, axis=axis, reduction="add"),
            None]


# Norms -----------------------------------------------------------------------------------
@vjp("ReduceL2", "ReduceL1", "ReduceSumSquare", "ReduceLogSumExp")
def reduce_norms(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """g (broadcast back over the reduced axes) times d y / d x: x / y (L2, 0 where y = 0),
    sign(x) (L1), 2x (sum of squares), exp(x - y) (log-sum-exp)."""
    x, y, b = node.inputs[0], node.outputs[0], ctx.b
    axes = _axes(ctx, node, ctx.rank(x))
    g = gys[0]
    if not axes:
        raise Unsupported(f"{node.op} with noop_with_empty_axes")
    if not int(node.attrs.get("keepdims", 1)):
        g, y = b.unsqueeze(g, axes), b.unsqueeze(y, axes)
    zero = ctx.scalar(0, x)
    if node.op == "ReduceL2":
        safe = b.op("Where", b.op("Equal", y, zero), ctx.scalar(1, x), y)
        slope = b.op("Where", b.op("Equal", y, zero), zero, b.op("Div", x, safe))
    elif node.op == "ReduceL1":
        slope = b.op("Sign", x)
    elif node.op == "ReduceSumSquare":
        slope = b.op("Mul", x, ctx.scalar(2, x))
    else:
        slope = b.op("Exp", b.op("Sub", x, y))
    return ctx.grads(node, b.op("Mul", b.op("Expand", g, b.op("Shape", x)), slope))


# Resize ----------------------------------------------------------------------------------
def _attr_str(node: gs.Node, name: str, default: str) -> str:
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _source_coordinate(mode: str, o: np.ndarray, n_in: int, n_out: int, scale: float
                       ) -> np.ndarray:
    """The input coordinate of output index ``o`` (ONNX Resize's coordinate_transformation)."""
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o, dtype=np.float64)
    if mode == "align_corners":
        return o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o, dtype=np.float64)
    if mode == "asymmetric":
        return o / scale
    if mode == "half_pixel_symmetric":
        adj = n_out / (scale * n_in)
        center = n_in / 2
        return center * (1 - adj) + (o + 0.5) / scale - 0.5
    raise Unsupported(f"Resize with coordinate_transformation_mode {mode!r}")


def _nearest(values: np.ndarray, mode: str) -> np.ndarray:
    if mode == "floor":
        return np.floor(values)
    if mode == "ceil":
        return np.ceil(values)
    frac = values - np.floor(values)
    if mode == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(values), np.round(values))
    if mode == "round_prefer_floor":
        return np.where(frac == 0.5, np.floor(values), np.round(values))
    raise Unsupported(f"Resize with nearest_mode {mode!r}")


def resize_matrix(node: gs.Node, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """[n_out, n_in]: output = matrix @ input along one axis, as onnxruntime resizes."""
    mode = _attr_str(node, "mode", "nearest")
    coord = _attr_str(node, "coordinate_transformation_mode", "half_pixel")
    # in float32, as onnxruntime computes them (o / 0.6f is 5 there, 4.9999998 in float64)
    f32 = np.float32
    x = _source_coordinate(coord, np.arange(n_out, dtype=f32), f32(n_in), f32(n_out), f32(scale))
    x = np.asarray(x, dtype=f32).astype(np.float64)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        idx = np.clip(_nearest(x, _attr_str(node, "nearest_mode", "round_prefer_floor")),
                      0, n_in - 1).astype(int)
        m[rows, idx] = 1.0
        return m
    if mode != "linear":
        raise Unsupported(f"Resize in {mode!r} mode")
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = x - lo
    np.add.at(m, (rows, lo), 1 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def _resize_scales(ctx: VjpContext, node: gs.Node, shape: tuple, out: tuple) -> list[float]:
    """Per-axis scales: the ``scales`` input when given, else output / input size."""
    scales = ctx.value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    axes = node.attrs.get("axes")
    full = [float(np.float32(o) / np.float32(i)) for o, i in zip(out, shape, strict=True)]
    if scales is not None and np.asarray(scales).size:
        given = [float(s) for s in np.asarray(scales).reshape(-1)]
        for k, a in enumerate(axes if axes is not None else range(len(shape))):
            full[int(a) % len(shape)] = given[k]
    return full


@vjp("Resize")
def resize(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    x = node.inputs[0]
    if int(node.attrs.get("antialias", 0)):
        raise Unsupported("Resize with antialias")
    if _attr_str(node, "coordinate_transformation_mode", "") == "tf_crop_and_resize":
        raise Unsupported("Resize in tf_crop_and_resize mode")
    if _attr_str(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported("Resize with a keep_aspect_ratio_policy")
    shape, out = ctx.shape(x), ctx.shape(node.outputs[0])
    scales = _resize_scales(ctx, node, shape, out)
    g, rank = gys[0], len(shape)
    for axis in range(rank):
        if shape[axis] == out[axis] and math.isclose(scales[axis], 1.0):
            continue
        if axis == 0:
            raise Unsupported("Resize along the batch axis")
        m = resize_matrix(node, shape[axis], out[axis], scales[axis])
        g = _matmul_along(ctx, g, axis, rank, ctx.array(m, x))
    return ctx.grads(node, g)


# Pad in edge, reflect and wrap modes -----------------------------------------------------
def pad_matrix(mode: str, n: int, before: int, after: int) -> np.ndarray:
    """[n + before + after, n]: the 0/1 matrix of one axis of a Pad in ``mode``."""
    rows = np.arange(n + before + after)
    i = rows - before
    if mode == "edge":
        src = np.clip(i, 0, n - 1)
    elif mode == "wrap":
        src = np.mod(i, n)
    else:  # reflect, without repeating the edge (numpy's "reflect")
        period = 2 * (n - 1) if n > 1 else 1
        src = np.abs(np.mod(i, period))
        src = np.where(src > n - 1, period - src, src) if n > 1 else np.zeros_like(i)
    m = np.zeros((len(rows), n))
    m[np.arange(len(rows)), src] = 1.0
    return m


def _pads_of_every_axis(ctx: VjpContext, node: gs.Node, rank: int) -> list[int]:
    """Pad's begin/end pads for all ``rank`` axes (its optional ``axes`` input expanded)."""
    pads = _required_ints(ctx, node, 1, "pads")
    axes = _const_ints(ctx, node, 3, "axes")
    if axes is None:
        return list(pads)
    full = [0] * (2 * rank)
    for j, a in enumerate(axes):
        full[a % rank], full[rank + a % rank] = pads[j], pads[len(axes) + j]
    return full


def pad_modes(ctx: VjpContext, node: gs.Node, gys: Gys, mode: str) -> Grads:
    """Pad in edge/reflect/wrap mode: the transpose of each padded axis's 0/1 matrix."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    pads = _pads_of_every_axis(ctx, node, rank)
    g = gys[0]
    for axis in range(rank):
        before, after = pads[axis], pads[rank + axis]
        if before == after == 0:
            continue
        if axis == 0:
            raise Unsupported(f"Pad in {mode!r} mode along the batch axis")
        g = _matmul_along(ctx, g, axis, rank, ctx.array(pad_matrix(mode, shape[axis], before,
                                                                   after), x))
    return ctx.grads(node, g)


# Pad (every mode) and Gather (constant indices), moved here from rules_shape ------------
@vjp("Pad")
def pad(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    mode = node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        return pad_modes(ctx, node, gys, mode)
    x, b = node.inputs[0], ctx.b
    rank = ctx.rank(x)
    pads = _pads_of_every_axis(ctx, node, rank)
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
    return ctx.grads(node, g)


@vjp("Gather")
def gather(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Gather with constant 0-D/1-D indices: scatter back through a 0/1 (count) matrix."""
    x, idx_t = node.inputs
    idx = ctx.value(idx_t)
    if idx is None:
        return gather_dynamic(ctx, node, gys)
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


# GridSample ------------------------------------------------------------------------------
_GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest"}
_GRID_PADDINGS = ("zeros", "border")


@dataclass
class _Taps:
    """GridSample's sampling taps as [N, 1, P] tensors (P = H_out·W_out): per tap its flat
    input index (int64, clamped into the image), its weight, and (zeros padding) 1 where the
    tap lies inside the image, 0 outside (``None`` for border padding: every tap counts)."""

    index: list[gs.Tensor] = field(default_factory=list)
    weight: list[gs.Tensor] = field(default_factory=list)
    inside: list[gs.Tensor | None] = field(default_factory=list)


def _grid_axis(ctx: VjpContext, node: gs.Node, k: int, n: int) -> gs.Tensor:
    """Pixel coordinate [N, 1, P] along grid component ``k`` (0: x, 1: y) for an input
    axis of ``n`` pixels, as onnxruntime denormalises it."""
    grid, x, b = node.inputs[1], node.inputs[0], ctx.b
    gk = b.op("Reshape", b.op("Slice", grid, b.ints([k]), b.ints([k + 1]), b.ints([3])),
              b.ints([0, 1, -1]))
    return b.op("Add", b.op("Mul", gk, ctx.scalar(_grid_scale(node, n), x)),
                ctx.scalar((n - 1) / 2, x))


def _grid_scale(node: gs.Node, n: int) -> float:
    """d pixel / d grid along an axis of ``n`` pixels."""
    return (n - 1) / 2 if int(node.attrs.get("align_corners", 0)) else n / 2


def _clamped(ctx: VjpContext, x: gs.Tensor, t: gs.Tensor, n: int) -> gs.Tensor:
    return ctx.b.op("Max", ctx.b.op("Min", t, ctx.scalar(n - 1, x)), ctx.scalar(0, x))


def _grid_taps(ctx: VjpContext, node: gs.Node, corners: list[tuple[gs.Tensor, gs.Tensor,
               gs.Tensor]], size: tuple[int, int]) -> _Taps:
    """(column, row, weight) per tap -> _Taps: zeros padding zeroes a tap outside the image,
    border padding clamps it to the edge (as onnxruntime samples)."""
    x, b = node.inputs[0], ctx.b
    h, w = size
    zeros = _attr_str(node, "padding_mode", "zeros") == "zeros"
    taps = _Taps()
    for col, row, weight in corners:
        cc, rc = _clamped(ctx, x, col, w), _clamped(ctx, x, row, h)
        inside = None
        if zeros:
            inside = b.op("Cast", b.op("And", b.op("Equal", cc, col), b.op("Equal", rc, row)),
                          to=ctx.onnx_dtype(x))
            weight = b.op("Mul", weight, inside)
        taps.index.append(b.op("Cast", b.op("Add", b.op("Mul", rc, ctx.scalar(w, x)), cc),
                               to=7))
        taps.weight.append(weight)
        taps.inside.append(inside)
    return taps


def _refuse_grid_sample(ctx: VjpContext, node: gs.Node) -> str:
    """The sampling mode ("linear" or "nearest"); ``Unsupported`` for the rest."""
    mode = _GRID_MODES.get(_attr_str(node, "mode", "bilinear"))
    padding = _attr_str(node, "padding_mode", "zeros")
    rank = ctx.rank(node.inputs[0])
    if mode is None or padding not in _GRID_PADDINGS or rank != 4:
        raise Unsupported(
            f"GridSample with mode {_attr_str(node, 'mode', 'bilinear')!r}, padding_mode "
            f"{padding!r} on a rank-{rank} input (the rule covers modes bilinear/linear and "
            "nearest, padding zeros and border, 4-D inputs)")
    return mode


@vjp("GridSample")
def grid_sample(ctx: VjpContext, node: gs.Node, gys: Gys) -> Grads:
    """Bilinear or nearest sampling, zeros or border padding, either align_corners, 4-D. The
    input's gradient scatters g·weight to each tap (ScatterElements, add); the grid's is the
    bilinear weights' slope times the tap values (0 for nearest: piecewise constant)."""
    x, grid, b = node.inputs[0], node.inputs[1], ctx.b
    mode = _refuse_grid_sample(ctx, node)
    _, _, h, w = ctx.shape(x)
    u, v = _grid_axis(ctx, node, 0, w), _grid_axis(ctx, node, 1, h)
    g = b.op("Reshape", gys[0], b.ints([0, 0, -1]))  # [N, C, P]
    xf = b.op("Reshape", x, b.ints([0, 0, h * w]))  # [N, C, H·W]
    one = ctx.scalar(1, x)
    if mode == "nearest":
        weights: tuple[gs.Tensor, ...] = ()
        taps = _grid_taps(ctx, node, [(b.op("Round", u), b.op("Round", v), one)], (h, w))
    else:
        u0, v0 = b.op("Floor", u), b.op("Floor", v)
        u1, v1 = b.op("Add", u0, one), b.op("Add", v0, one)
        wu1, wv1 = b.op("Sub", u, u0), b.op("Sub", v, v0)
        weights = (b.op("Sub", one, wu1), wu1, b.op("Sub", one, wv1), wv1)
        wu0, wv0 = weights[0], weights[2]
        taps = _grid_taps(ctx, node, [
            (u0, v0, b.op("Mul", wv0, wu0)), (u1, v0, b.op("Mul", wv0, wu1)),
            (u0, v1, b.op("Mul", wv1, wu0)), (u1, v1, b.op("Mul", wv1, wu1))], (h, w))
    index = [b.op("Expand", i, b.op("Shape", g)) for i in taps.index]  # [N, C, P] each
    grads = ctx.grads(node)
    if ctx.needs(node, 0):
        upd = [b.op("Mul", g, wt) for wt in taps.weight]
        scattered = b.op("ScatterElements", ctx.zeros_like(xf), _cat(ctx, index),
                         _cat(ctx, upd), axis=2, reduction="add")
        grads[0] = b.op("Reshape", scattered, ctx.shape_of(x))
    if ctx.needs(node, 1):
        grads[1] = ctx.zeros_like(grid) if mode == "nearest" else _grid_grad(
            ctx, node, g, xf, index, taps, weights)
    return grads


def _cat(ctx: VjpContext, ts: list[gs.Tensor]) -> gs.Tensor:
    return ts[0] if len(ts) == 1 else ctx.b.op("Concat", *ts, axis=2)


def _grid_grad(ctx: VjpContext, node: gs.Node, g: gs.Tensor, xf: gs.Tensor,
               index: list[gs.Tensor], taps: _Taps, weights: tuple[gs.Tensor, ...]
               ) -> gs.Tensor:
    """d/d grid of bilinear sampling: with taps 00, 10 (column + 1), 01, 11 (row + 1) and
    values p (0 outside a zeros-padded image), dy/du = wv0·(p10 − p00) + wv1·(p11 − p01) and
    dy/dv = wu0·(p01 − p00) + wu1·(p11 − p10), u and v in pixels; times d pixel / d grid."""
    x, b = node.inputs[0], ctx.b
    _, _, h, w = ctx.shape(x)
    wu0, wu1, wv0, wv1 = weights
    p = []
    for i, inside in zip(index, taps.inside, strict=True):
        value = b.op("GatherElements", xf, i, axis=2)  # [N, C, P]
        p.append(value if inside is None else b.op("Mul", value, inside))
    p00, p10, p01, p11 = p
    du = b.op("Add", b.op("Mul", wv0, b.op("Sub", p10, p00)),
              b.op("Mul", wv1, b.op("Sub", p11, p01)))
    dv = b.op("Add", b.op("Mul", wu0, b.op("Sub", p01, p00)),
              b.op("Mul", wu1, b.op("Sub", p11, p10)))
    parts = []
    for slope, n in ((du, w), (dv, h)):
        summed = b.reduce("ReduceSum", b.op("Mul", g, slope), [1], keepdims=True)  # [N, 1, P]
        parts.append(b.op("Mul", summed, ctx.scalar(_grid_scale(node, n), x)))
    pairs = b.op("Transpose", b.op("Concat", *parts, axis=1), perm=[0, 2, 1])  # [N, P, 2]
    return b.op("Reshape", pairs, ctx.shape_of(node.inputs[1]))
