"""The ops the exported explainer is written in: a thin typed face over the project's
``Builder``, so that the reductions and the graph read as array code and every node still goes
through one builder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ..grad.builder import Builder

Tensor: TypeAlias = gs.Tensor
F64 = np.float64


def onnx_type(dtype: Any) -> int:
    """The TensorProto element type of a NumPy dtype."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class Ops:
    """Array operations emitted as ONNX nodes through ``Builder``. Constants given as Python
    numbers are float64 (the reductions run in float64, as ort_cam's NumPy code does)."""

    def __init__(self, builder: Builder):
        self.b = builder

    # --- values -------------------------------------------------------------------------
    def const(self, value: Any, dtype: Any = F64) -> Tensor:
        arr = np.asarray(value, dtype)
        c = self.b.const(arr)
        if arr.ndim == 0:  # Builder.const's np.ascontiguousarray makes 0-d values 1-d
            c.values = arr
        return c

    def zeros(self, shape: Sequence[int], dtype: Any = F64) -> Tensor:
        """np.zeros(shape, dtype) without storing it (ConstantOfShape)."""
        value = gs.Constant(f"{self.b.prefix}/zero", np.zeros(1, dtype))
        return self.b.op("ConstantOfShape", self.b.ints(shape), value=value)

    def i64(self, value: Any) -> Tensor:
        return self.const(value, np.int64)

    def _t(self, x: Tensor | float) -> Tensor:
        return x if isinstance(x, gs.Tensor) else self.const(x)

    # --- elementwise --------------------------------------------------------------------
    def add(self, x: Tensor | float, y: Tensor | float) -> Tensor:
        return self.b.op("Add", self._t(x), self._t(y))

    def sub(self, x: Tensor | float, y: Tensor | float) -> Tensor:
        return self.b.op("Sub", self._t(x), self._t(y))

    def mul(self, x: Tensor | float, y: Tensor | float) -> Tensor:
        return self.b.op("Mul", self._t(x), self._t(y))

    def div(self, x: Tensor | float, y: Tensor | float) -> Tensor:
        return self.b.op("Div", self._t(x), self._t(y))

    def maximum(self, x: Tensor, y: Tensor | float) -> Tensor:
        return self.b.op("Max", x, self._t(y))

    def relu(self, x: Tensor) -> Tensor:
        """max(x, 0) in float64 (np.maximum(x, 0.0))."""
        return self.maximum(x, 0.0)

    def abs(self, x: Tensor) -> Tensor:
        return self.b.op("Abs", x)

    def sqrt(self, x: Tensor) -> Tensor:
        return self.b.op("Sqrt", x)

    def where(self, cond: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return self.b.op("Where", cond, x, y)

    def greater(self, x: Tensor, y: Tensor | float) -> Tensor:
        return self.b.op("Greater", x, self._t(y))

    def less(self, x: Tensor, y: Tensor) -> Tensor:
        return self.b.op("Less", x, y)

    def equal(self, x: Tensor, y: Tensor) -> Tensor:
        return self.b.op("Equal", x, y)

    def logical_and(self, x: Tensor, y: Tensor) -> Tensor:
        return self.b.op("And", x, y)

    def logical_not(self, x: Tensor) -> Tensor:
        return self.b.op("Not", x)

    def minimum(self, x: Tensor, y: Tensor) -> Tensor:
        return self.b.op("Min", x, y)

    def cast(self, x: Tensor, dtype: Any) -> Tensor:
        return self.b.op("Cast", x, to=onnx_type(dtype))

    # --- reductions ---------------------------------------------------------------------
    def sum(self, x: Tensor, axes: Sequence[int], keep: bool = False) -> Tensor:
        return self.b.reduce("ReduceSum", x, axes, keepdims=keep)

    def mean(self, x: Tensor, axes: Sequence[int], keep: bool = False) -> Tensor:
        return self.b.reduce("ReduceMean", x, axes, keepdims=keep)

    def min(self, x: Tensor, axes: Sequence[int]) -> Tensor:
        return self.b.reduce("ReduceMin", x, axes, keepdims=False)

    def max(self, x: Tensor, axes: Sequence[int]) -> Tensor:
        return self.b.reduce("ReduceMax", x, axes, keepdims=False)

    def argmax(self, x: Tensor, axis: int) -> Tensor:
        """The first index of the largest value (np.argmax)."""
        return self.b.op("ArgMax", x, axis=axis, keepdims=0, select_last_index=0)

    # --- shapes -------------------------------------------------------------------------
    def reshape(self, x: Tensor, shape: Sequence[int] | Tensor) -> Tensor:
        s = shape if isinstance(shape, gs.Tensor) else self.b.ints(shape)
        return self.b.op("Reshape", x, s)

    def take(self, x: Tensor, index: int | Tensor, axis: int = 0) -> Tensor:
        """x[index] along ``axis`` (the axis goes away; negative indices count from the end;
        an index out of range is an error at run time)."""
        i = index if isinstance(index, gs.Tensor) else self.i64(index)
        return self.b.op("Gather", x, i, axis=axis)

    def take_list(self, x: Tensor, indices: Sequence[int], axis: int) -> Tensor:
        return self.b.op("Gather", x, self.b.ints(indices), axis=axis)

    def rows(self, x: Tensor, start: int, end: int) -> Tensor:
        """x[start:end] along axis 0."""
        return self.b.op("Slice", x, self.b.ints([start]), self.b.ints([end]), self.b.ints([0]))

    def concat(self, xs: Sequence[Tensor], axis: int) -> Tensor:
        return self.b.op("Concat", *xs, axis=axis)

    def unsqueeze(self, x: Tensor, axes: Sequence[int]) -> Tensor:
        return self.b.unsqueeze(x, axes)

    def transpose(self, x: Tensor, perm: Sequence[int]) -> Tensor:
        return self.b.op("Transpose", x, perm=[int(p) for p in perm])

    def shape(self, x: Tensor) -> Tensor:
        return self.b.op("Shape", x)

    def expand(self, x: Tensor, shape: Tensor) -> Tensor:
        return self.b.op("Expand", x, shape)

    def arange(self, start: Tensor | int, end: Tensor | int) -> Tensor:
        """int64 start, start+1, ..., end-1."""
        s = start if isinstance(start, gs.Tensor) else self.i64(start)
        e = end if isinstance(end, gs.Tensor) else self.i64(end)
        return self.b.op("Range", s, e, self.i64(1))

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        return self.b.op("MatMul", x, y)

    def identity(self, x: Tensor) -> Tensor:
        return self.b.op("Identity", x)

    def loop(self, trips: int, states: Sequence[Tensor], body: gs.Graph) -> list[Tensor]:
        """A Loop of ``trips`` iterations over ``body`` with loop-carried ``states``."""
        outs = self.b.op("Loop", self.i64(trips), self.const(True, np.bool_), *states,
                         n_out=len(states), body=body)
        return outs if isinstance(outs, list) else [outs]
