"""Output dtype and static shape of the ops the builder emits, worked out from their inputs.

A small subset of ONNX type and shape inference: the ops the VJP rules and the heads emit.
Shapes are those of the probe run (batch ``PROBE_BATCH`` on axis 0): they let a rule read the
shape of a tensor it made instead of computing it by hand, and they are never baked into the
graph. An op or an input whose shape is not known gives ``None`` (unknown), never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Known:
    """What is known about one input at build time: dtype, shape, and the value when it is a
    constant or the output of a Shape node (an int64 vector)."""

    dtype: np.dtype | None = None
    shape: Shape | None = None
    value: np.ndarray | None = None


#: Ops whose output dtype is a fixed one.
_BOOL = {"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Not"}
_INT64 = {"Shape", "Size"}
#: Ops whose output has the dtype of their first input (Where: of its second).
_LIKE_FIRST = {
    "Abs", "Add", "Ceil", "Concat", "Conv", "ConvTranspose", "CumSum", "Div", "Einsum", "Elu",
    "Erf", "Exp",
    "Expand", "Flatten", "Floor", "Gather", "Gemm", "Identity", "LeakyRelu", "Log",
    "LogSoftmax", "MatMul", "Max", "Mean", "Min", "Mul", "Neg", "Pad", "Pow", "Reciprocal",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Round",
    "ScatterElements", "Sigmoid", "Sign", "Slice", "Softmax", "Softplus", "Sqrt", "Squeeze",
    "Sub", "Sum", "Tanh", "Transpose", "Unsqueeze",
}
#: Ops whose output shape is the broadcast of all their inputs' shapes.
_BROADCAST = {
    "Add", "And", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Max",
    "Mean", "Min", "Mul", "Or", "Pow", "Sub", "Sum", "Where", "Xor",
}
#: Ops whose output shape is their first input's.
_SAME_SHAPE = {
    "Abs", "Cast", "Ceil", "CumSum", "Elu", "Erf", "Exp", "Floor", "Identity", "LeakyRelu",
    "Log",
    "LogSoftmax", "Neg", "Not", "Reciprocal", "Relu", "Round", "ScatterElements", "Sigmoid",
    "Sign", "Softmax", "Softplus", "Sqrt", "Tanh",
}


def infer(op: str, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Known:
    """dtype, shape and (for Shape) value of the first output of ``op``; ``None`` inputs are
    omitted optional ones."""
    dtype = _dtype(op, ins, attrs)
    shape = _shape(op, ins, attrs)
    value = None
    first = ins[0] if ins else None
    if op == "Shape" and first is not None and first.shape is not None:
        value = np.asarray(first.shape, dtype=np.int64)
    return Known(dtype, shape, value)


def _dtype(op: str, ins: Sequence[Known | None], attrs: dict[str, Any]) -> np.dtype | None:
    if op in _BOOL:
        return np.dtype(bool)
    if op in _INT64:
        return np.dtype(np.int64)
    if op == "Cast":
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
    if op in ("ConstantOfShape", "Constant"):
        value = attrs.get("value")
        return np.dtype(np.float32) if value is None else _array(value).dtype
    index = 1 if op == "Where" else 0 if op in _LIKE_FIRST else len(ins)
    source = ins[index] if index < len(ins) else None
    return source.dtype if source is not None else None


def _shape(op: str, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    try:
        return _shape_or_raise(op, ins, attrs)
    except (ValueError, IndexError, KeyError, ZeroDivisionError):
        return None  # inputs the op rejects: unknown here, onnxruntime will say what is wrong


def _shape_or_raise(op: str, ins: Sequence[Known | None], attrs: dict[str, Any]
                    ) -> Shape | None:
    if op in _BROADCAST:
        shapes = _shapes(ins)
        return None if shapes is None else _broadcast(*shapes)
    first = ins[0] if ins else None
    if op in ("ConstantOfShape", "Constant"):
        return _constant_shape(op, first, attrs)
    if first is None or first.shape is None:
        return None
    if op in _SAME_SHAPE:
        return first.shape
    rule = _SHAPE_RULES.get(op)
    return rule(first.shape, ins, attrs) if rule is not None else None


def _shapes(ins: Sequence[Known | None]) -> list[Shape] | None:
    """The shapes of all (present) inputs, or ``None`` when one is unknown."""
    shapes = [k.shape for k in ins if k is not None]
    return None if any(s is None for s in shapes) else [s for s in shapes if s is not None]


def _broadcast(*shapes: Shape) -> Shape:
    return tuple(int(d) for d in np.broadcast_shapes(*shapes))


def _constant_shape(op: str, first: Known | None, attrs: dict[str, Any]) -> Shape | None:
    if op == "Constant":
        value = attrs.get("value")
        return tuple(_array(value).shape) if value is not None else None
    if first is None or first.value is None:
        return None
    return tuple(int(d) for d in first.value)


def _array(value: Any) -> np.ndarray:
    """A tensor attribute's value (a graph-surgeon Constant or an array)."""
    return np.asarray(getattr(value, "values", value))


def _input_ints(ins: Sequence[Known | None], i: int) -> list[int] | None:
    """The value of int input ``i``, when known at build time."""
    k = ins[i] if i < len(ins) else None
    if k is None or k.value is None:
        return None
    return [int(v) for v in np.asarray(k.value).reshape(-1)]


def _present(ins: Sequence[Known | None], i: int) -> bool:
    return i < len(ins) and ins[i] is not None


def _axes(rank: int, ins: Sequence[Known | None], attrs: dict[str, Any]) -> list[int] | None:
    """Axes from the ``axes`` attribute or the second input ([] when neither is given), made
    non-negative; ``None`` when the input's value is not known."""
    if "axes" in attrs:
        axes: list[int] | None = [int(a) for a in attrs["axes"]]
    elif _present(ins, 1):
        axes = _input_ints(ins, 1)
    else:
        axes = []
    return None if axes is None else sorted(a % rank for a in axes)


def _reshape(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    target = _input_ints(ins, 1)
    if target is None:
        return None
    keep_zero = bool(attrs.get("allowzero", 0))
    out = [shape[i] if d == 0 and not keep_zero else d for i, d in enumerate(target)]
    if -1 in out:
        rest = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(shape)) // rest if rest else 0
    return tuple(out)


def _expand(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    target = _input_ints(ins, 1)
    return None if target is None else _broadcast(shape, tuple(target))


def _reduce(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    axes = _axes(len(shape), ins, attrs)
    if axes is None:
        return None
    if not axes:
        if attrs.get("noop_with_empty_axes"):
            return shape
        axes = list(range(len(shape)))
    if int(attrs.get("keepdims", 1)):
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _unsqueeze(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    given = attrs["axes"] if "axes" in attrs else _input_ints(ins, 1)
    if given is None:
        return None
    rank = len(shape) + len(given)
    out = list(shape)
    for a in sorted(int(a) % rank for a in given):
        out.insert(a, 1)
    return tuple(out)


def _flatten(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape:
    axis = int(attrs.get("axis", 1)) % (len(shape) + 1)
    return int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))


def _transpose(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape:
    perm = attrs.get("perm", list(range(len(shape)))[::-1])
    return tuple(shape[int(p)] for p in perm)


def _matmul(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    other = ins[1].shape if _present(ins, 1) and ins[1] is not None else None
    if other is None:
        return None
    a = (1, *shape) if len(shape) == 1 else shape
    b = (*other, 1) if len(other) == 1 else other
    out = (*_broadcast(a[:-2], b[:-2]), a[-2], b[-1])
    if len(shape) == 1:
        out = out[:-2] + out[-1:]
    if len(other) == 1:
        out = out[:-1]
    return out


def _gemm(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    other = ins[1].shape if _present(ins, 1) and ins[1] is not None else None
    if other is None:
        return None
    m = shape[1] if attrs.get("transA") else shape[0]
    n = other[0] if attrs.get("transB") else other[1]
    return m, n


def _concat(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    shapes = _shapes(ins)
    if shapes is None:
        return None
    axis = int(attrs["axis"]) % len(shape)
    return tuple(sum(s[axis] for s in shapes) if i == axis else d for i, d in enumerate(shape))


def _slice(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    starts, ends = _input_ints(ins, 1), _input_ints(ins, 2)
    if starts is None or ends is None:
        return None
    axes = _input_ints(ins, 3) if _present(ins, 3) else list(range(len(starts)))
    steps = _input_ints(ins, 4) if _present(ins, 4) else [1] * len(starts)
    if axes is None or steps is None:
        return None
    out = list(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= len(shape)
        out[axis] = len(range(*slice(start, end, step).indices(shape[axis])))
    return tuple(out)


def _pad(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    pads = _input_ints(ins, 1)
    if pads is None or _present(ins, 3):  # an axes input: the rules never emit one
        return None
    n = len(shape)
    return tuple(d + pads[i] + pads[n + i] for i, d in enumerate(shape))


def _window_geometry(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]
                     ) -> tuple[Shape, list[int], list[int], list[int]] | None:
    """Weight shape, strides, explicit pads and kernel extents of a Conv/ConvTranspose in the
    form the rules emit (explicit pads, no auto_pad); ``None`` for any other form."""
    w = ins[1].shape if _present(ins, 1) and ins[1] is not None else None
    if w is None or "pads" not in attrs or "auto_pad" in attrs or "output_shape" in attrs:
        return None
    n = len(shape) - 2
    d = [int(v) for v in attrs.get("dilations", [1] * n)]
    extent = [(w[2 + i] - 1) * d[i] + 1 for i in range(n)]
    return w, [int(v) for v in attrs.get("strides", [1] * n)], list(attrs["pads"]), extent


def _conv(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    geometry = _window_geometry(shape, ins, attrs)
    if geometry is None:
        return None
    w, s, pads, extent = geometry
    n = len(shape) - 2
    sizes = [(shape[2 + i] + pads[i] + pads[n + i] - extent[i]) // s[i] + 1 for i in range(n)]
    return (shape[0], w[0], *sizes)


def _conv_transpose(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]
                    ) -> Shape | None:
    geometry = _window_geometry(shape, ins, attrs)
    if geometry is None:
        return None
    w, s, pads, extent = geometry
    n = len(shape) - 2
    extra = [int(v) for v in attrs.get("output_padding", [0] * n)]
    sizes = [s[i] * (shape[2 + i] - 1) + extra[i] + extent[i] - pads[i] - pads[n + i]
             for i in range(n)]
    return (shape[0], w[1] * int(attrs.get("group", 1)), *sizes)


def _shape_of(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape:
    return (len(shape),)


def _size(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape:
    return ()


def _einsum(shape: Shape, ins: Sequence[Known | None], attrs: dict[str, Any]) -> Shape | None:
    """The output shape of an explicit equation ("...ij,...jk->...ik"); None otherwise."""
    shapes = _shapes(ins)
    eq = attrs.get("equation")
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    if shapes is None or "->" not in eq:
        return None
    lhs, rhs = eq.split("->")
    sizes: dict[str, int] = {}
    ells = []
    for term, s in zip(lhs.split(","), shapes, strict=True):
        n_ell = len(s) - len(term.replace("...", ""))
        head, _, tail = term.partition("...")
        for c, d in zip(head, s, strict=False):
            sizes[c] = max(sizes.get(c, 1), d)
        for c, d in zip(tail, s[len(s) - len(tail):], strict=True):
            sizes[c] = max(sizes.get(c, 1), d)
        if "..." in term:
            ells.append(tuple(s[len(head):len(head) + n_ell]))
    ell = _broadcast(*ells) if ells else ()
    out: list[int] = []
    for part in rhs.split("...")[:1]:
        out += [sizes[c] for c in part]
    if "..." in rhs:
        out += list(ell) + [sizes[c] for c in rhs.split("...")[1]]
    return tuple(out)


_ShapeRule = Callable[[Shape, Sequence[Known | None], dict[str, Any]], "Shape | None"]
_SHAPE_RULES: dict[str, _ShapeRule] = {
    "Shape": _shape_of, "Size": _size, "Reshape": _reshape, "Expand": _expand,
    "ReduceSum": _reduce, "ReduceMean": _reduce, "ReduceMax": _reduce, "ReduceMin": _reduce,
    "Unsqueeze": _unsqueeze, "Flatten": _flatten, "Transpose": _transpose, "MatMul": _matmul,
    "Gemm": _gemm, "Concat": _concat, "Slice": _slice, "Pad": _pad, "Conv": _conv,
    "ConvTranspose": _conv_transpose, "Einsum": _einsum,
}
