"""Split a model at a layer into a prefix (inputs -> layer and every crossing tensor) and a
head (those tensors -> output)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .load import LoadedModel, is_float


@dataclass
class Cut:
    """Where a model is cut: the layer and the other tensors that cross from prefix to head
    (skip connections, shape tensors), in first-use order; ``rebuilt``: the integer tensors
    the head reads that are computed from tensor shapes alone (``x.view(x.size(0), -1)``'s
    target), which the head computes again from the layer's own shape instead, so that it
    takes any batch."""

    layer: str
    crossing: list[str]
    output: str
    rebuilt: list[str] = field(default_factory=list)

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


#: Ops through which a tensor computed from shapes alone stays so (integer arithmetic).
_SHAPE_OPS = {
    "Abs", "Add", "And", "Cast", "Ceil", "Concat", "ConstantOfShape", "Div", "Equal", "Expand",
    "Floor", "Gather", "Greater", "Identity", "Less", "Max", "Min", "Mod", "Mul", "Neg", "Not",
    "Or", "Range", "ReduceProd", "ReduceSum", "Reshape", "Slice", "Squeeze", "Sub", "Tile",
    "Unsqueeze", "Where",
}


def shape_leaves(t: gs.Tensor) -> list[gs.Node] | None:
    """The Shape/Size nodes that ``t`` is computed from, when it is computed from tensor shapes
    and constants alone; else None (it depends on values, or on a graph input's)."""
    leaves: list[gs.Node] = []
    seen: set[int] = set()
    stack = [t]
    while stack:
        x = stack.pop()
        if isinstance(x, gs.Constant) or not x.name:
            continue
        if not x.inputs:
            return None  # a graph input: its values, not its shape
        node = x.inputs[0]
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op in ("Shape", "Size"):
            leaves.append(node)
        elif node.op in _SHAPE_OPS:
            stack.extend(node.inputs)
        else:
            return None
    return leaves


def find_cut(graph: gs.Graph, layer: str, output: str) -> Cut:
    """The head is what depends on the layer and feeds the output; everything else it reads
    that is not a constant crosses the cut, but for tensors computed from shapes alone, which
    the head computes again (``Cut.rebuilt``)."""
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
    rebuilt = [name for name in crossing if shape_leaves(graph.tensors()[name])]
    return Cut(layer, [n for n in crossing if n not in rebuilt], output, rebuilt)


def _batch_free(shape: tuple[int, ...], dtype: np.dtype | None, batch: int
                ) -> list[int | str]:
    if not is_float(dtype):
        return list(shape)
    if len(shape) >= 1 and shape[0] == batch:
        return ["N", *shape[1:]]
    return list(shape)


def _cut_tensors(model: LoadedModel, g: gs.Graph, cut: Cut) -> list[gs.Variable]:
    """The cut tensors of the copy ``g``, typed with their recorded dtype and batch-free shape."""
    tensors = g.tensors()
    out = []
    for name in cut.head_inputs:
        t = tensors[name]
        t.dtype = model.dtypes.get(name)
        t.shape = _batch_free(model.shapes[name], t.dtype, model.probe_batch)
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
    for name in cut.rebuilt:
        for leaf in shape_leaves(g.tensors()[name]) or []:
            _from_layer_shape(model, g, leaf, ins[0])
    return g.cleanup(remove_unused_graph_inputs=False).toposort()


def _batch_axes(model: LoadedModel, name: str) -> tuple[int, ...]:
    if name in model.batch_axes:
        return model.batch_axes[name]
    shape = model.shapes.get(name, ())
    return (0,) if shape and shape[0] == model.probe_batch else ()


def _from_layer_shape(model: LoadedModel, g: gs.Graph, leaf: gs.Node, layer: gs.Tensor) -> None:
    """Replace ``leaf`` (Shape or Size of a prefix tensor t) by the same value computed from the
    layer's batch and t's static dims: the nodes write ``leaf``'s output tensor."""
    t, out = leaf.inputs[0], leaf.outputs[0]
    shape, axes = model.shapes[t.name], _batch_axes(model, t.name)
    base = f"{out.name}/from_layer"

    def node(op: str, ins: list, suffix: str, **attrs) -> gs.Variable:
        y = gs.Variable(f"{base}/{suffix}", dtype=np.int64)
        g.nodes.append(gs.Node(op, name=f"{base}/{op}_{suffix}", inputs=ins, outputs=[y],
                               attrs=attrs))
        return y

    def const(values: list[int], suffix: str) -> gs.Constant:
        return gs.Constant(f"{base}/{suffix}", np.asarray(values, dtype=np.int64))

    layer_axis = (_batch_axes(model, layer.name) or (0,))[0]
    batch = node("Slice", [node("Shape", [layer], "shape"), const([layer_axis], "start"),
                           const([layer_axis + 1], "end")], "batch")
    if leaf.op == "Size":
        static = int(np.prod([d for i, d in enumerate(shape) if i not in axes]))
        parts = [batch] * len(axes) + [const([static], "static")]
        value = parts[0] if len(parts) == 1 else node("Mul", parts[:2], "size")
        for i, p in enumerate(parts[2:]):
            value = node("Mul", [value, p], f"size{i}")
        final = gs.Node("Squeeze", name=f"{base}/Squeeze", inputs=[value, const([0], "axis")],
                        outputs=[out])
    else:
        rank = len(shape)
        lo, hi = slice(leaf.attrs.get("start", 0), leaf.attrs.get("end", rank)).indices(rank)[:2]
        parts = [batch if i in axes else const([shape[i]], f"dim{i}") for i in range(lo, hi)]
        final = gs.Node("Concat", name=f"{base}/Concat", inputs=parts, outputs=[out],
                        attrs={"axis": 0})
    leaf.outputs.clear()
    g.nodes.append(final)
