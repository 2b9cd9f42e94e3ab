"""The flat table of VJP rules, keyed by ONNX op type, and the context each rule gets.

A rule is ``rule(ctx, node, gys) -> list of input gradients``: ``gys[i]`` is the gradient
flowing into ``node.outputs[i]`` (``None`` where no gradient flows), and the rule returns
exactly one entry per ``node.inputs``, omitted optional inputs included (``None`` for inputs
that get no gradient: weights, shapes, indices). ``backprop`` enforces that count and checks
each gradient's dtype and shape against its input. Rules emit nodes only through ``ctx.b``
(the typed builder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from ..errors import OrtCamError
from .builder import Builder
from .infer import Shape

#: What a rule gets (one per output) and returns (one per input): a tensor or None each.
Gys = list["gs.Tensor | None"]
Grads = Sequence["gs.Tensor | None"]
Rule = Callable[["VjpContext", gs.Node, Gys], Grads]

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


class RuleContractError(OrtCamError):
    """A rule broke the contract: wrong number of gradients, or one of the wrong dtype or shape
    (a bug in ``ort_cam.grad``, never a property of the user's model)."""


class UnknownTypeError(OrtCamError):
    """A tensor whose dtype neither the probe run recorded nor the builder inferred."""


@dataclass
class VjpContext:
    """What a rule may know besides the node: every tensor's dtype and static shape, constant
    values, which inputs need a gradient, and the builder."""

    b: Builder
    active: set[str] = field(default_factory=set)

    def shape(self, t: gs.Tensor) -> Shape:
        """Static shape seen in the probe run (batch axis = probe batch; never bake it in)."""
        shape = self.b.shape(t)
        if shape is None:
            raise Unsupported(f"no recorded shape for tensor {t.name!r}")
        return shape

    def rank(self, t: gs.Tensor) -> int:
        return len(self.shape(t))

    def value(self, t: gs.Tensor | None) -> np.ndarray | None:
        """The constant value of ``t``, or ``None`` if it is computed at run time."""
        if isinstance(t, gs.Constant):
            return np.asarray(t.values)
        return None

    def dtype(self, t: gs.Tensor) -> np.dtype:
        """The dtype of ``t``: every forward tensor has one from the probe run, every emitted
        one from the builder; a tensor without one is an error, never a float32 guess."""
        dtype = self.b.dtype(t)
        if dtype is None:
            raise UnknownTypeError(
                f"tensor {t.name!r} has no known dtype (not seen in the probe run, not "
                "inferred by the builder); this is a bug in ort_cam.grad, please report it")
        return dtype

    def onnx_dtype(self, t: gs.Tensor) -> int:
        """The ONNX element type (``TensorProto`` enum) of ``t``, as Cast's ``to`` wants."""
        return int(helper.np_dtype_to_tensor_dtype(self.dtype(t)))

    def needs(self, node: gs.Node, i: int) -> bool:
        """Whether input ``i`` of ``node`` lies on the path from the layer (needs a gradient)."""
        return i < len(node.inputs) and node.inputs[i].name in self.active

    def grads(self, node: gs.Node, *leading: gs.Tensor | None) -> list[gs.Tensor | None]:
        """The rule's answer: ``leading`` for the first inputs, ``None`` for the rest."""
        if len(leading) > len(node.inputs):
            raise RuleContractError(
                f"the VJP rule for {node.op} gives {len(leading)} gradients for the "
                f"{len(node.inputs)} inputs of node {node.name!r}")
        return [*leading, *[None] * (len(node.inputs) - len(leading))]

    def scalar(self, value: float, like: gs.Tensor) -> gs.Constant:
        """A scalar constant with the dtype of ``like``."""
        return self.b.const(np.array(value, dtype=self.dtype(like)), hint="scalar")

    def array(self, value: np.ndarray, like: gs.Tensor) -> gs.Constant:
        return self.b.const(np.asarray(value, dtype=self.dtype(like)), hint="array")

    def attr(self, node: gs.Node, name: str, default: Any = None) -> Any:
        return node.attrs.get(name, default)

    def zeros_like(self, t: gs.Tensor) -> gs.Tensor:
        return self.b.zeros_like(t, dtype=self.dtype(t))

    def unbroadcast(self, g: gs.Tensor, target: gs.Tensor) -> gs.Tensor:
        """Sum ``g`` over the axes that broadcasting added to ``target``, so that it gets
        ``target``'s shape (both shapes are known: ``g``'s from the builder)."""
        t_shape, g_shape = self.shape(target), self.shape(g)
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

    def shape_of(self, t: gs.Tensor) -> gs.Tensor:
        """The run-time shape of ``t`` (a constant when ``t`` is one)."""
        if isinstance(t, gs.Constant):
            return self.b.ints(t.values.shape)
        return self.b.op("Shape", t)
