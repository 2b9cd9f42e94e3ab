"""Reverse-mode differentiation of a graph section, emitted as standard ONNX nodes."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..errors import NoGradientRuleError, OrtCamError
from ..graph.load import is_float
from . import (  # noqa: F401  (fill VJP_RULES)
    rules_contrib,
    rules_elementwise,
    rules_nn,
    rules_rnn,
    rules_shape,
    rules_tensor,
)
from .table import VJP_RULES, RuleContractError, Unsupported, VjpContext

#: Ops whose integer outputs carry a gradient (straight-through: rules_contrib).
STRAIGHT_THROUGH = {"QuantizeLinear"}


def _accumulate(ctx: VjpContext, parts: list[gs.Tensor]) -> gs.Tensor | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return ctx.b.op("Sum", *parts)


def path_nodes(graph: gs.Graph, wrt: str, score: str, ctx: VjpContext) -> list[gs.Node]:
    """Nodes on a float path from ``wrt`` to ``score``, in graph order; sets ``ctx.active``
    to the tensors on those paths. Integer/bool branches (Shape, indices) are not paths."""
    reach, forward = {wrt}, []
    for node in graph.nodes:
        if any(i.name in reach for i in node.inputs):
            floats = [o.name for o in node.outputs
                      if o.name and (is_float(ctx.dtype(o)) or node.op in STRAIGHT_THROUGH)]
            if floats:
                forward.append(node)
                reach.update(floats)
    if score not in reach:
        raise OrtCamError(f"the score does not depend on layer {wrt!r}; pick a layer before it")
    useful, path = {score}, []
    for node in reversed(forward):
        if any(o.name in useful for o in node.outputs):
            path.append(node)
            useful.update(i.name for i in node.inputs if i.name in reach)
    ctx.active = useful
    return path[::-1]


def _check(ctx: VjpContext, node: gs.Node, inp: gs.Tensor, gx: gs.Tensor) -> None:
    """The gradient of ``inp`` has ``inp``'s dtype and shape (an integer tensor between a
    QuantizeLinear and a DequantizeLinear: the float type it stands for). A shape the builder
    could not infer is taken from ``inp`` (that is what the contract promises)."""
    want, got = ctx.dtype(inp), ctx.b.dtype(gx)
    if not is_float(want) and node.op == "DequantizeLinear":
        want = ctx.dtype(node.outputs[0])
    if got is not None and got != want:
        raise RuleContractError(
            f"the VJP rule for {node.op} (node {node.name!r}) gives input {inp.name!r} a "
            f"{got} gradient; the input is {want}")
    want_shape, got_shape = ctx.shape(inp), ctx.b.shape(gx)
    if got_shape is not None and got_shape != want_shape:
        raise RuleContractError(
            f"the VJP rule for {node.op} (node {node.name!r}) gives input {inp.name!r} a "
            f"gradient of shape {list(got_shape)}; the input has {list(want_shape)}")
    ctx.b.declare(gx, None if got is not None else want,
                  None if got_shape is not None else want_shape)


def input_grads(ctx: VjpContext, node: gs.Node, gys: list[gs.Tensor | None]
                ) -> list[tuple[gs.Tensor, gs.Tensor]]:
    """(input, gradient) for every input of ``node`` on the path that gets a gradient.

    Raises ``NoGradientRuleError`` when the op has no rule (or the rule cannot handle this
    node), ``RuleContractError`` when the rule breaks its contract: one entry per input,
    each of its input's dtype and shape.
    """
    rule = VJP_RULES.get(node.op)
    if rule is None:
        raise NoGradientRuleError(node.op, node.name)
    try:
        gxs = list(rule(ctx, node, gys))
    except Unsupported as exc:
        raise NoGradientRuleError(node.op, node.name, detail=str(exc)) from None
    if len(gxs) != len(node.inputs):
        raise RuleContractError(
            f"the VJP rule for {node.op} returned {len(gxs)} gradient(s) for the "
            f"{len(node.inputs)} input(s) of node {node.name!r}; a rule returns one entry "
            "(a tensor or None) per input")
    pairs = []
    for inp, gx in zip(node.inputs, gxs, strict=True):
        if gx is not None and inp.name in ctx.active:
            _check(ctx, node, inp, gx)
            pairs.append((inp, gx))
    return pairs


def add_gradient(graph: gs.Graph, wrt: str, score: gs.Tensor, seed: gs.Tensor,
                 ctx: VjpContext) -> gs.Tensor:
    """Append nodes computing d(Σ seed·score)/d wrt and return that tensor."""
    nodes = path_nodes(graph, wrt, score.name, ctx)
    grads: dict[str, list[gs.Tensor]] = {score.name: [seed]}
    for node in reversed(nodes):
        gys = [_accumulate(ctx, grads.pop(o.name, [])) if o.name else None for o in node.outputs]
        if all(g is None for g in gys):
            continue
        for inp, gx in input_grads(ctx, node, gys):
            grads.setdefault(inp.name, []).append(gx)
    result = _accumulate(ctx, grads.get(wrt, []))
    if result is None:
        raise OrtCamError(f"no gradient reaches layer {wrt!r}")
    return result
