"""The flat table of VJP rules, keyed by ONNX op type, and the context each rule gets.

A rule is ``rule(ctx, node, gys) -> list of input gradients``: ``gys[i]`` is the gradient
flowing into ``node.outputs[i]`` (``None`` where no gradient flows), and the rule returns one
entry per ``node.inputs`` (``None`` for inputs that get no gradient: weights, shapes, indices).
Rules emit nodes only through ``ctx.b`` (the builder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .builder import Builder

Tensor = gs.Tensor
Grads = Sequence["Tensor | None"]
Rule = Callable[["VjpContext", gs.Node, list], Grads]

#: op type -> rule. Filled by ``@vjp`` in the rules_* modules; read by ``backprop``.
VJP_RULES: dict[str, Rule] = {}


def vjp(*op_types: str) -> Callable[[Rule], Rule]:
    """Register ``rule`` for each op type (one rule may serve several ops)."""

    def register(rule: Rule) -> Rule:
        for op in op_types:
            if op in VJP_RULES:
                raise ValueError(f"duplicate VJP rule for {op}")
            VJP_RULES[op] = rule
        return rule

    return register


class Unsupported(Exception):
    """A rule cannot differentiate this particular node (e.g. a dynamic Slice bound)."""


@dataclass
class VjpContext:
    """What a rule may know besides the node: static shapes, constant values, which inputs
    need a gradient, and the builder."""

    b: Builder
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    active: set[str] = field(default_factory=set)

    def shape(self, t: Tensor) -> tuple[int, ...]:
        """Static shape seen in the probe run (batch axis = probe batch; never bake it in)."""
        if isinstance(t, gs.Constant):
            return tuple(t.values.shape)
        try:
            return self.shapes[t.name]
        except KeyError:
            raise Unsupported(f"no recorded shape for tensor {t.name!r}") from None

    def rank(self, t: Tensor) -> int:
        return len(self.shape(t))

    def value(self, t: Tensor | None) -> np.ndarray | None:
        """The constant value of ``t``, or ``None`` if it is computed at run time."""
        if isinstance(t, gs.Constant):
            return np.asarray(t.values)
        return None

    def dtype(self, t: Tensor) -> np.dtype:
        if isinstance(t, gs.Constant):
            return t.values.dtype
        return np.dtype(self.dtypes.get(t.name, np.float32))

    def needs(self, node: gs.Node, i: int) -> bool:
        """Whether input ``i`` of ``node`` lies on the path from the layer (needs a gradient)."""
        return i < len(node.inputs) and node.inputs[i].name in self.active

    def scalar(self, value: float, like: Tensor) -> gs.Constant:
        """A scalar constant with the dtype of ``like``."""
        return self.b.const(np.array(value, dtype=self.dtype(like)), hint="scalar")

    def array(self, value: np.ndarray, like: Tensor) -> gs.Constant:
        return self.b.const(np.asarray(value, dtype=self.dtype(like)), hint="array")

    def attr(self, node: gs.Node, name: str, default=None):
        return node.attrs.get(name, default)

    def zeros_like(self, t: Tensor) -> Tensor:
        return self.b.zeros_like(t, dtype=self.dtype(t))

    def unbroadcast(self, g: Tensor, g_shape: Sequence[int], target: Tensor) -> Tensor:
        """Sum ``g`` (static shape ``g_shape``) over the axes that broadcasting added to
        ``target``, so that it gets ``target``'s shape."""
        t_shape = self.shape(target)
        g_shape = tuple(g_shape)
        if g_shape == t_shape:
            return g
        lead = len(g_shape) - len(t_shape)
        axes = list(range(lead))
        axes += [lead + i for i, d in enumerate(t_shape) if d == 1 and g_shape[lead + i] != 1]
        if axes:
            g = self.b.reduce("ReduceSum", g, axes, keepdims=True)
        if lead > 0:
            g = self.b.op("Reshape", g, self.shape_of(target))
        return g

    def shape_of(self, t: Tensor) -> Tensor:
        """The run-time shape of ``t`` (a constant when ``t`` is one)."""
        if isinstance(t, gs.Constant):
            return self.b.ints(t.values.shape)
        return self.b.op("Shape", t)
