"""One small builder through which every emitted node goes: a tape over onnx-graphsurgeon whose
tensors carry their dtype and, where it can be inferred, their shape (as onnx-ir's tape)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from .infer import Known, Shape, infer


class Builder:
    """Appends nodes to a graph, naming every new tensor under one prefix.

    ``op`` returns the output tensor (or a list when ``n_out > 1``); ``const`` turns a NumPy
    value into a graph constant. Every tensor is typed: ``dtype(t)`` and ``shape(t)`` answer
    for the forward graph's tensors (from ``dtypes``/``shapes``, the probe run's) and for the
    ones the builder made (inferred from their inputs by ``infer``). The types are kept here,
    not on the graph, so the exported model is the same with or without them. The builder
    knows the opset so that helpers can pick the right form of ops whose signature changed
    (ReduceMean axes in 18).
    """

    def __init__(self, graph: gs.Graph, prefix: str = "ort_cam", opset: int | None = None,
                 dtypes: Mapping[str, Any] | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None):
        self.graph = graph
        self.prefix = prefix
        self.opset: int = opset if opset is not None else graph.opset
        self._dtypes = {k: np.dtype(v) for k, v in (dtypes or {}).items()}
        self._shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
        self._values: dict[str, np.ndarray] = {}  # int64 values known now (Shape outputs)
        self._count = 0
        self._names = set(graph.tensors())

    def branch(self, hint: str) -> Builder:
        """A builder of a subgraph (an If's branch) whose nodes may read this graph's
        tensors: it knows their types, and names its own under a fresh prefix."""
        sub = Builder(gs.Graph(opset=self.opset), prefix=self.name(hint), opset=self.opset)
        sub._dtypes, sub._shapes = dict(self._dtypes), dict(self._shapes)
        sub._values, sub._names = dict(self._values), set(self._names)
        return sub

    # Names and types --------------------------------------------------------------------
    def name(self, hint: str) -> str:
        """A fresh tensor or node name ``{prefix}/{hint}_{n}``, unused in the graph."""
        while True:
            self._count += 1
            name = f"{self.prefix}/{hint}_{self._count}"
            if name not in self._names:
                self._names.add(name)
                return name

    def dtype(self, t: gs.Tensor) -> np.dtype | None:
        """The dtype of ``t``, or ``None`` when nothing recorded or inferred one."""
        if isinstance(t, gs.Constant):
            return np.dtype(t.values.dtype)
        if t.name in self._dtypes:
            return self._dtypes[t.name]
        # a tensor the graph code made with its type (split's rebuilt shape tensors)
        return np.dtype(t.dtype) if getattr(t, "dtype", None) is not None else None

    def shape(self, t: gs.Tensor) -> Shape | None:
        """The static shape of ``t`` (probe batch on axis 0), or ``None`` when unknown."""
        if isinstance(t, gs.Constant):
            return tuple(int(d) for d in t.values.shape)
        return self._shapes.get(t.name)

    def declare(self, t: gs.Tensor, dtype: Any, shape: Sequence[int] | None = None) -> gs.Tensor:
        """Record the type of a tensor made outside the builder (a graph input, a seed)."""
        if dtype is not None:
            self._dtypes[t.name] = np.dtype(dtype)
        if shape is not None:
            self._shapes[t.name] = tuple(int(d) for d in shape)
        return t

    def _known(self, t: gs.Tensor | None) -> Known | None:
        if t is None:
            return None
        if isinstance(t, gs.Constant):
            return Known(self.dtype(t), self.shape(t), np.asarray(t.values))
        return Known(self.dtype(t), self.shape(t), self._values.get(t.name))

    # Emitting ---------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: gs.Tensor | None, n_out: int = 1,
           out_names: Sequence[str] | None = None, **attrs: Any) -> Any:
        """Emit ``op_type(inputs)``; ``None`` inputs become empty (omitted optional) inputs.

        The first output is typed from the inputs (``infer``); ``out_names`` names the
        outputs instead of fresh names.
        """
        ins = [gs.Variable.empty() if x is None else x for x in inputs]
        names = list(out_names) if out_names is not None else [
            self.name(op_type.lower()) for _ in range(n_out)]
        self._names.update(names)
        outs = [gs.Variable(n) for n in names]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = gs.Node(op_type, name=self.name(op_type), attrs=attrs, inputs=ins, outputs=outs)
        self.graph.nodes.append(node)
        known = infer(op_type, [self._known(x) for x in inputs], attrs)
        self.declare(outs[0], known.dtype, known.shape)
        if known.value is not None:
            self._values[outs[0].name] = known.value
        return outs[0] if len(outs) == 1 else outs

    def add_output(self, node: gs.Node, index: int, dtype: Any, shape: Sequence[int] | None,
                   hint: str = "output") -> gs.Variable:
        """Output ``index`` of the forward ``node``, added (named and typed) when the node
        leaves it out; the one way a rule may change the forward graph (MaxPool's Indices)."""
        if index < len(node.outputs) and node.outputs[index].name:
            return node.outputs[index]
        out = gs.Variable(self.name(hint), dtype=np.dtype(dtype))
        while len(node.outputs) < index:
            node.outputs.append(gs.Variable.empty())
        if index < len(node.outputs):
            node.outputs[index] = out
        else:
            node.outputs.append(out)
        self.declare(out, dtype, shape)
        return out

    def const(self, value: Any, dtype: Any = None, hint: str = "const") -> gs.Constant:
        """A constant tensor holding ``value`` (converted with ``np.asarray(value, dtype)``)."""
        return gs.Constant(self.name(hint), np.ascontiguousarray(np.asarray(value, dtype=dtype)))

    def ints(self, values: Sequence[int]) -> gs.Constant:
        """An int64 1-D constant, as Reshape/Slice/Pad/ReduceSum take."""
        return self.const(np.asarray(list(values), dtype=np.int64), hint="ints")

    # Helpers for ops whose signature depends on the opset -------------------------------
    def reduce(self, op_type: str, x: gs.Tensor, axes: Sequence[int],
               keepdims: bool = True) -> gs.Tensor:
        """ReduceSum/ReduceMean/ReduceMax over ``axes`` in the form the opset wants."""
        axes = [int(a) for a in axes]
        axes_as_input = op_type == "ReduceSum" and self.opset >= 13 or self.opset >= 18
        if axes_as_input:
            return self.op(op_type, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x: gs.Tensor, axes: Sequence[int]) -> gs.Tensor:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.ints(axes))
        return self.op("Unsqueeze", x, axes=[int(a) for a in axes])

    def zeros_like(self, x: gs.Tensor, dtype: Any) -> gs.Tensor:
        """Zeros of ``x``'s run-time shape, in ``dtype``."""
        return self.op(
            "ConstantOfShape",
            self.op("Shape", x),
            # A numpy attribute would export as FLOATS; ConstantOfShape wants a TENSOR.
            value=gs.Constant(self.name("zero"), np.zeros(1, dtype=dtype)),
        )
