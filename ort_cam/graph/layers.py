"""Layers: which tensors have a channel axis and a spatial grid, and where the channels are.
(Whether the head above a layer can be differentiated is ``grad.layers``'s question.)"""

from __future__ import annotations

import difflib

import onnx_graphsurgeon as gs

from ..errors import NotSpatialError, UnknownLayerError
from .load import LoadedModel, is_float

#: Ops whose rank-4 outputs are NCHW by the ONNX spec.
_NCHW_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "InstanceNormalization", "LpPool", "LRN", "GlobalLpPool",
}
_TO_NHWC, _TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def layouts(model: LoadedModel) -> dict[str, str]:
    """Layout of every rank-4 tensor that can be told: propagated from convs, pools and
    Transposes; element-wise ops pass their input's layout through."""
    found: dict[str, str] = {}
    shapes = model.shapes
    for inp in model.graph.inputs:
        s = shapes.get(inp.name, ())
        if len(s) == 4:
            found[inp.name] = "NHWC" if s[3] in (1, 3, 4) and s[1] not in (1, 3, 4) else "NCHW"
    for node in model.graph.nodes:
        for out in node.outputs:
            if len(shapes.get(out.name, ())) != 4:
                continue
            lay = _output_layout(node, shapes.get(out.name), found, shapes)
            if lay:
                found[out.name] = lay
    return found


def _output_layout(node: gs.Node, out_shape: tuple[int, ...] | None, found: dict[str, str],
                   shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The layout of a rank-4 output of ``node`` (shape ``out_shape``), or None if untold."""
    if node.op in _NCHW_OPS:
        return "NCHW"
    if node.op == "Transpose":
        src = found.get(node.inputs[0].name)
        perm = list(node.attrs.get("perm", []))
        if perm == [0, 1, 2, 3]:
            return src
        if src == "NCHW" and perm == _TO_NHWC:
            return "NHWC"
        if src == "NHWC" and perm == _TO_NCHW:
            return "NCHW"
        return None
    if node.op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "MatMul", "Gemm"):
        return None
    for inp in node.inputs:  # element-wise: an input of the same shape first, else any
        lay = found.get(inp.name)
        if lay and shapes.get(inp.name) == out_shape:
            return lay
    for inp in node.inputs:
        if found.get(inp.name) and len(shapes.get(inp.name, ())) == 4:
            return found[inp.name]
    return None


def resolve_layer(model: LoadedModel, name: str) -> str:
    """The tensor a user means by ``name``: a tensor name, or a node name (its first output)."""
    tensors = model.graph.tensors()
    t = tensors.get(name)
    if isinstance(t, gs.Variable) and (t.inputs or t in model.graph.inputs):
        return name
    for node in model.graph.nodes:
        if node.name == name and node.outputs:
            return node.outputs[0].name
    choices = [n for n, t in tensors.items() if isinstance(t, gs.Variable) and t.inputs]
    choices += [n.name for n in model.graph.nodes if n.name]
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise UnknownLayerError(
        f"unknown layer {name!r}{hint} (run `ort-cam layers MODEL` to list them)"
    )


def spatial_layer(model: LoadedModel, name: str) -> tuple[str, int]:
    """Resolve ``name`` and check it has a channel axis and a grid; (tensor, channel axis)."""
    tensor = resolve_layer(model, name)
    shape = model.shapes.get(tensor, ())
    if len(shape) != 4 or not is_float(model.dtypes.get(tensor)):
        raise NotSpatialError(
            f"layer {tensor!r} has shape {list(shape)}, not [N,K,h,w] or [N,h,w,K]; "
            "pick a convolution or pooling output (see `ort-cam layers MODEL`)"
        )
    layout = layouts(model).get(tensor)
    if layout is None:
        raise NotSpatialError(
            f"cannot tell where the channels of {tensor!r} (shape {list(shape)}) are; "
            "pick a tensor produced by a Conv/Pool or its activation"
        )
    axis = 1 if layout == "NCHW" else 3
    h, w = (shape[2], shape[3]) if axis == 1 else (shape[1], shape[2])
    if h * w <= 1:
        raise NotSpatialError(
            f"layer {tensor!r} has a {h}x{w} grid, so its map is constant; pick an earlier layer"
        )
    return tensor, axis
