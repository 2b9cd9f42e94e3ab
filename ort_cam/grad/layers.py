"""Candidate layers as ``ort-cam layers`` lists them: every rank-4 float tensor, with its
layout, and whether the head above it can be differentiated with the rule table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx_graphsurgeon as gs

from ..graph.layers import layouts
from ..graph.load import LoadedModel, is_float
from ..graph.split import ancestors
from .backprop import VJP_RULES


@dataclass
class LayerInfo:
    """One candidate layer, as ``ort-cam layers`` lists it."""

    name: str
    op: str
    node: str
    shape: list[int | str]
    layout: str | None  # "NCHW", "NHWC" or None (unknown)
    channel_axis: int | None
    differentiable: bool
    blocker: str | None  # "Op (node)" of the first op without a rule above this layer

    def as_dict(self) -> dict:
        return asdict(self)


def first_blocker(model: LoadedModel, tensor: str, above: set[int] | None = None
                  ) -> gs.Node | None:
    """The first node (in graph order) between ``tensor`` and the output that has no rule;
    ``above``: ids of the output's ancestor nodes, when already known."""
    if above is None:
        above = ancestors(model.graph, model.output)
    rules = VJP_RULES
    reach = {tensor}
    for node in model.graph.nodes:
        if id(node) not in above or not any(i.name in reach for i in node.inputs):
            continue
        floats = [o.name for o in node.outputs if o.name and is_float(model.dtypes.get(o.name))]
        if not floats:
            continue
        if node.op not in rules:
            return node
        reach.update(floats)
    return None


def list_layers(model: LoadedModel, spatial_only: bool = True) -> list[LayerInfo]:
    """Every rank-4 float tensor computed by the model, in graph order."""
    lay = layouts(model)
    above = ancestors(model.graph, model.output)
    result = []
    for node in model.graph.nodes:
        for out in node.outputs:
            shape = model.shapes.get(out.name)
            if not out.name or shape is None or len(shape) != 4:
                continue
            if not is_float(model.dtypes.get(out.name)):
                continue
            layout = lay.get(out.name)
            axis = {"NCHW": 1, "NHWC": 3}.get(layout) if layout else None
            if spatial_only and axis is not None:
                h, w = (shape[2], shape[3]) if axis == 1 else (shape[1], shape[2])
                if h * w <= 1:
                    continue
            blocker = first_blocker(model, out.name, above)
            result.append(LayerInfo(
                name=out.name, op=node.op, node=node.name,
                shape=["N", *shape[1:]], layout=layout, channel_axis=axis,
                differentiable=blocker is None,
                blocker=f"{blocker.op} ({blocker.name})" if blocker is not None else None,
            ))
    return result


def suggest_layer_after(model: LoadedModel, node_name: str) -> str | None:
    """The first candidate layer after ``node_name`` whose head can be differentiated."""
    names = [n.name for n in model.graph.nodes]
    if node_name not in names:
        return None
    after = names.index(node_name)
    order = {n.name: i for i, n in enumerate(model.graph.nodes)}
    for info in list_layers(model):
        if order.get(info.node, -1) > after and info.differentiable:
            return info.name
    return None
