"""One small builder through which every emitted node goes (a tape over onnx-graphsurgeon)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

Tensor = gs.Tensor


class Builder:
    """Appends nodes to a graph, naming every new tensor under one prefix.

    ``op`` returns the output tensor (or a list when ``n_out > 1``); ``const`` turns a
    NumPy value into a graph constant. The builder knows the opset so that helpers
    can pick the right form of ops whose signature changed (ReduceMean axes in 18).
    """

    def __init__(self, graph: gs.Graph, prefix: str = "ort_cam", opset: int | None = None):
        self.graph = graph
        self.prefix = prefix
        self.opset = opset if opset is not None else graph.opset
        self._count = 0
        self._names = {t for t in graph.tensors()}

    def _name(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"{self.prefix}/{hint}_{self._count}"
            if name not in self._names:
                self._names.add(name)
                return name

    def op(
        self,
        op_type: str,
        *inputs: Tensor | None,
        n_out: int = 1,
        **attrs: Any,
    ) -> Any:
        """Emit ``op_type(inputs)``; ``None`` inputs become empty (omitted optional) inputs."""
        ins = [gs.Variable.empty() if x is None else x for x in inputs]
        outs = [gs.Variable(self._name(op_type.lower())) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = gs.Node(op_type, name=self._name(op_type), attrs=attrs, inputs=ins, outputs=outs)
        self.graph.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    def const(self, value: Any, dtype: Any = None, hint: str = "const") -> gs.Constant:
        """A constant tensor holding ``value`` (converted with ``np.asarray(value, dtype)``)."""
        return gs.Constant(self._name(hint), np.ascontiguousarray(np.asarray(value, dtype=dtype)))

    def ints(self, values: Sequence[int]) -> gs.Constant:
        """An int64 1-D constant, as Reshape/Slice/Pad/ReduceSum take."""
        return self.const(np.asarray(list(values), dtype=np.int64), hint="ints")

    # Helpers for ops whose signature depends on the opset -------------------------------
    def reduce(self, op_type: str, x: Tensor, axes: Sequence[int], keepdims: bool = True) -> Tensor:
        """ReduceSum/ReduceMean/ReduceMax over ``axes`` in the form the opset wants."""
        axes = [int(a) for a in axes]
        axes_as_input = op_type == "ReduceSum" and self.opset >= 13 or self.opset >= 18
        if axes_as_input:
            return self.op(op_type, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x: Tensor, axes: Sequence[int]) -> Tensor:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.ints(axes))
        return self.op("Unsqueeze", x, axes=[int(a) for a in axes])

    def zeros_like(self, x: Tensor, dtype: Any = np.float32) -> Tensor:
        return self.op(
            "ConstantOfShape",
            self.op("Shape", x),
            # A numpy attribute would export as FLOATS; ConstantOfShape wants a TENSOR.
            value=gs.Constant(self._name("zero"), np.zeros(1, dtype=dtype)),
        )
