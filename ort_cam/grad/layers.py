"""Candidate layers as ``ort-cam layers`` lists them: every rank-4 float tensor and every
token tensor with a grid, with its layout, and whether the head above it can be
differentiated with the rule table."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx_graphsurgeon as gs

from ..graph.layers import token_grid, traces
from ..graph.load import LoadedModel, is_float
from ..graph.split import ancestors
from .backprop import STRAIGHT_THROUGH, VJP_RULES


@dataclass
class LayerInfo:
    """One candidate layer, as ``ort-cam layers`` lists it."""

    name: str
    op: str
    node: str
    shape: list[int | str]
    layout: str | None  # "NCHW", "NHWC", "tokens" or None (unknown)
    channel_axis: int | None
    differentiable: bool
    blocker: str | None  # "Op (node)" of the first op without a rule above this layer
    grid: list[int] | None = None  # a token layer's grid [h, w] ...
    extra_tokens: int | None = None  # ... and its leading extra tokens

    def as_dict(self) -> dict:
        """The fields, but the token ones where they are None (not a token layer)."""
        d = asdict(self)
        for key in ("grid", "extra_tokens"):
            if d[key] is None:
                del d[key]
        return d


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
        floats = [o.name for o in node.outputs if o.name and (
            is_float(model.dtypes.get(o.name)) or node.op in STRAIGHT_THROUGH)]
        if not floats:
            continue
        if node.op not in rules:
            return node
        reach.update(floats)
    return None


def list_layers(model: LoadedModel, spatial_only: bool = True) -> list[LayerInfo]:
    """Every rank-4 float tensor computed by the model, and every token tensor [N, T, C]
    whose grid can be told (``graph.layers.token_grid``), in graph order."""
    found = traces(model)
    above = ancestors(model.graph, model.output)
    result = []
    for node in model.graph.nodes:
        for out in node.outputs:
            shape = model.shapes.get(out.name)
            if not out.name or shape is None or not is_float(model.dtypes.get(out.name)):
                continue
            info = _candidate(model, out.name, shape, found, spatial_only)
            if info is None:
                continue
            blocker = first_blocker(model, out.name, above)
            result.append(LayerInfo(
                name=out.name, op=node.op, node=node.name, shape=["N", *shape[1:]],
                layout=info[0], channel_axis=info[1], differentiable=blocker is None,
                blocker=f"{blocker.op} ({blocker.name})" if blocker is not None else None,
                grid=info[2], extra_tokens=info[3]))
    return result


def _candidate(model: LoadedModel, name: str, shape: tuple[int, ...], found: dict,
               spatial_only: bool) -> tuple | None:
    """(layout, channel axis, grid, extra tokens) of a candidate layer, else None."""
    if len(shape) == 4:
        tr = found.get(name)
        layout = tr.layout if tr is not None and tr.layout in ("NCHW", "NHWC") else None
        if layout is None and shape[0] != model.probe_batch:
            return None  # no batch on axis 0 (attention heads, windows): not a layer
        axis = {"NCHW": 1, "NHWC": 3}.get(layout) if layout else None
        if spatial_only and axis is not None:
            h, w = (shape[2], shape[3]) if axis == 1 else (shape[1], shape[2])
            if h * w <= 1:
                return None
        return layout, axis, None, None
    told = token_grid(model, name, found) if len(shape) == 3 else None
    if told is None or (spatial_only and told[0][0] * told[0][1] <= 1):
        return None
    (h, w), extra, _ = told
    return "tokens", 2, [h, w], extra


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
