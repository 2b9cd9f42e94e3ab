"""Split a model at a layer into a prefix (inputs -> layer and every crossing tensor) and a
head (those tensors -> output)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .load import PROBE_BATCH, LoadedModel, is_float


@dataclass
class Cut:
    """Where a model is cut: the layer and the other tensors that cross from prefix to head
    (skip connections, shape tensors), in first-use order."""

    layer: str
    crossing: list[str]
    output: str

    @property
    def head_inputs(self) -> list[str]:
        return [self.layer, *self.crossing]


def descendants(graph: gs.Graph, name: str) -> list[gs.Node]:
    """Nodes that (transitively) consume tensor ``name``, in graph order."""
    reach, result = {name}, []
    for node in graph.nodes:  # graph is topologically sorted
        if any(i.name in reach for i in node.inputs):
            result.append(node)
            reach.update(o.name for o in node.outputs if o.name)
    return result


def ancestors(graph: gs.Graph, name: str) -> set[int]:
    """ids of the nodes that ``name`` (transitively) depends on."""
    tensors = graph.tensors()
    seen: set[int] = set()
    stack = [tensors[name]]
    while stack:
        t = stack.pop()
        for node in t.inputs:
            if id(node) not in seen:
                seen.add(id(node))
                stack.extend(node.inputs)
    return seen


def find_cut(graph: gs.Graph, layer: str, output: str) -> Cut:
    """The head is what depends on the layer and feeds the output; everything else it reads
    that is not a constant crosses the cut."""
    anc = ancestors(graph, output)
    head = [n for n in descendants(graph, layer) if id(n) in anc]
    head_ids = {id(n) for n in head}
    crossing: list[str] = []
    for node in head:
        for t in node.inputs:
            if isinstance(t, gs.Constant) or not t.name or t.name == layer:
                continue
            if t.inputs and id(t.inputs[0]) in head_ids:
                continue
            if t.name not in crossing:
                crossing.append(t.name)
    return Cut(layer, crossing, output)


def _batch_free(shape: tuple[int, ...], dtype: np.dtype | None) -> list[int | str]:
    if not is_float(dtype):
        return list(shape)
    if len(shape) >= 1 and shape[0] == PROBE_BATCH:
        return ["N", *shape[1:]]
    return list(shape)


def _cut_tensors(model: LoadedModel, g: gs.Graph, cut: Cut) -> list[gs.Variable]:
    """The cut tensors of the copy ``g``, typed with their recorded dtype and batch-free shape."""
    tensors = g.tensors()
    out = []
    for name in cut.head_inputs:
        t = tensors[name]
        t.dtype = model.dtypes.get(name)
        t.shape = _batch_free(model.shapes[name], t.dtype)
        out.append(t)
    return out


def prefix_graph(model: LoadedModel, cut: Cut) -> gs.Graph:
    """Model inputs -> the layer and the crossing tensors."""
    g = model.graph.copy()
    g.outputs = _cut_tensors(model, g, cut)
    return g.cleanup().toposort()


def head_graph(model: LoadedModel, cut: Cut) -> gs.Graph:
    """The layer and the crossing tensors -> the model output."""
    g = model.graph.copy()
    ins = _cut_tensors(model, g, cut)
    for t in ins:
        t.inputs.clear()  # cut the producers off: these are now graph inputs
    g.inputs = ins
    g.outputs = [g.tensors()[cut.output]]
    return g.cleanup(remove_unused_graph_inputs=False).toposort()
