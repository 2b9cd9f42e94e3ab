"""The explainer without ``Loop``: each top-level Loop of a fixed trip count replaced by that
many copies of its body, for engines that have no Loop (tract: ``Unimplemented(Loop)``).

Copy ``i`` reads the iteration number as the constant ``i``, the condition as ``True`` and the
states as copy ``i − 1``'s outputs (copy 0: the Loop's initial values); the Loop's outputs are
the last copy's states. The body's initializers (the model's weights) are hoisted into the outer
graph once, so the file grows by the body's nodes, not its weights. Names the body defines get
the prefix ``trip<i>/``; names it reads from the outer scope stay as they are, also inside
subgraphs nested in the body (an If of the model). An If whose condition the copy fixes (the
on-demand map's ``want_scores``: iteration 0 or not) is replaced by the branch it takes: tract
types an If only where it can pick the branch before running.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OrtCamError


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of ``name`` if an initializer or a Constant node gives it."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def _defined(graph: onnx.GraphProto, top: bool) -> set[str]:
    """Names a (sub)graph defines: node outputs, and, below the top body, inputs and
    initializers; recursively through nested subgraphs."""
    names = {o for node in graph.node for o in node.output if o}
    if not top:
        names |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                names |= _defined(sub, top=False)
    return names


def _subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _renamed_node(node: onnx.NodeProto, rename: Callable[[str], str],
                  prefix: str) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.name = prefix + node.name if node.name else ""
    new.input[:] = [rename(i) if i else "" for i in node.input]
    new.output[:] = [rename(o) if o else "" for o in node.output]
    for attr in new.attribute:
        for sub in _subgraphs(attr):
            _rename_subgraph(sub, rename, prefix)
    return new


def _rename_subgraph(graph: onnx.GraphProto, rename: Callable[[str], str], prefix: str) -> None:
    nodes = [_renamed_node(n, rename, prefix) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = rename(value.name)


def _copy_body(body: onnx.GraphProto, trip: int, states: list[str], outer: onnx.GraphProto,
               defined: set[str]) -> list[str]:
    """Append copy ``trip`` of ``body`` to ``outer``; return the names of its state outputs."""
    prefix = f"trip{trip}/"
    it_name, cond_name = f"{prefix}iteration", f"{prefix}cond"
    outer.initializer.extend([numpy_helper.from_array(np.array(trip, np.int64), it_name),
                              numpy_helper.from_array(np.array(True), cond_name)])
    fixed = {body.input[0].name: it_name, body.input[1].name: cond_name}
    fixed.update({i.name: s for i, s in zip(body.input[2:], states, strict=True)})

    def rename(name: str) -> str:
        if name in fixed:
            return fixed[name]
        return prefix + name if name in defined else name

    outer.node.extend(_renamed_node(n, rename, prefix) for n in body.node)
    return [rename(o.name) for o in body.output[1:]]


def _unroll(node: onnx.NodeProto, outer: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Replace the Loop ``node`` (already removed from ``outer``) by copies of its body."""
    trips = _constant(outer, node.input[0]) if node.input[0] else None
    body = next(a.g for a in node.attribute if a.name == "body")
    n_states = len(node.input) - 2
    if trips is None or len(body.output) != 1 + n_states:
        raise OrtCamError(f"Loop {node.name!r} cannot be unrolled: it needs a constant trip "
                          "count and no scan outputs")
    outer.initializer.extend(body.initializer)
    defined = _defined(body, top=True) | {i.name for i in body.input}
    states = list(node.input[2:])
    for trip in range(int(trips)):
        states = _copy_body(body, trip, states, outer, defined)
    return [helper.make_node("Identity", [s], [o], name=f"{node.name}/unrolled/{k}")
            for k, (s, o) in enumerate(zip(states, node.output, strict=True))]


#: Ops whose value ``_value`` works out from constants (an If's condition in a copy).
_FOLDABLE: dict[str, Callable[..., np.ndarray]] = {
    "Equal": np.equal, "Not": np.logical_not, "Identity": np.asarray}


def _value(name: str, graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto],
           depth: int = 0) -> np.ndarray | None:
    """The value of ``name`` where constants give it through ``_FOLDABLE`` ops, else None."""
    known = _constant(graph, name)
    node = producers.get(name)
    if known is not None or node is None or node.op_type not in _FOLDABLE or depth > 8:
        return known
    args = [_value(i, graph, producers, depth + 1) for i in node.input]
    if any(a is None for a in args):
        return None
    return np.asarray(_FOLDABLE[node.op_type](*args))


def _fold_ifs(graph: onnx.GraphProto) -> None:
    """Each If of ``graph`` whose condition constants give replaced by that branch's nodes
    (its initializers hoisted) and Identities from the branch's outputs to the If's."""
    producers = {o: n for n in graph.node for o in n.output}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        cond = _value(node.input[0], graph, producers) if node.op_type == "If" else None
        if cond is None or cond.size != 1:
            nodes.append(node)
            continue
        key = "then_branch" if bool(cond.reshape(())) else "else_branch"
        branch = next(a.g for a in node.attribute if a.name == key)
        graph.initializer.extend(branch.initializer)
        nodes.extend(branch.node)
        nodes.extend(helper.make_node("Identity", [b.name], [o], name=f"{node.name}/{key}/{k}")
                     for k, (b, o) in enumerate(zip(branch.output, node.output, strict=True)))
    del graph.node[:]
    graph.node.extend(nodes)


def _used(graph: onnx.GraphProto) -> set[str]:
    """Names the nodes of ``graph`` read, also from inside their subgraphs."""
    names = {i for node in graph.node for i in node.input}
    for node in graph.node:
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                names |= _used(sub)
    return names


def unroll_loops(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every top-level Loop unrolled (a new model; ``model`` is unchanged).
    The Loops' trip counts and conditions, now unread, are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        if node.op_type == "Loop":
            graph.node.extend(_unroll(node, graph))
        else:
            graph.node.append(node)
    _fold_ifs(graph)
    keep = _used(graph) | {o.name for o in graph.output} | {i.name for i in graph.input}
    inits = [i for i in graph.initializer if i.name in keep]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return out
