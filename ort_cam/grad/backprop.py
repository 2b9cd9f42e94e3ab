"""Reverse-mode differentiation of a graph section, emitted as standard ONNX nodes."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from ..errors import NoGradientRuleError, OrtCamError
from ..graph.load import is_float
from . import rules_elementwise, rules_nn, rules_shape  # noqa: F401  (fill VJP_RULES)
from .table import VJP_RULES, Unsupported, VjpContext


def _accumulate(ctx: VjpContext, parts: list) -> gs.Tensor | None:
    parts = [p for p in parts if p is not None]
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
            floats = [o.name for o in node.outputs if o.name and is_float(ctx.dtype(o))]
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


def add_gradient(graph: gs.Graph, wrt: str, score: gs.Tensor, seed: gs.Tensor,
                 ctx: VjpContext) -> gs.Tensor:
    """Append nodes computing d(Σ seed·score)/d wrt and return that tensor."""
    nodes = path_nodes(graph, wrt, score.name, ctx)
    grads: dict[str, list] = {score.name: [seed]}
    for node in reversed(nodes):
        gys = [_accumulate(ctx, grads.pop(o.name, [])) if o.name else None for o in node.outputs]
        if all(g is None for g in gys):
            continue
        rule = VJP_RULES.get(node.op)
        if rule is None:
            raise NoGradientRuleError(node.op, node.name)
        try:
            gxs = list(rule(ctx, node, gys))
        except Unsupported as exc:
            raise NoGradientRuleError(node.op, node.name, detail=str(exc)) from None
        for inp, gx in zip(node.inputs, gxs):
            if gx is not None and inp.name in ctx.active:
                grads.setdefault(inp.name, []).append(gx)
    result = _accumulate(ctx, grads.get(wrt, []))
    if result is None:
        raise OrtCamError(f"no gradient reaches layer {wrt!r}")
    return result
