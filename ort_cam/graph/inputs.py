"""The model's image input as ort_cam needs it: a dynamic height and width given a size (the
caller's, else the one stored in the model's metadata), and an integer input that the model
casts to float replaced by that Cast's float output, so the path runs in float."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from ..errors import ModelLoadError
from ..metadata_keys import PREPROCESS_KEY, stored_value
from ..preprocess import input_geometry
from .exported import exported

#: What ``size`` is: (height, width) of the model's image input.
Size = tuple[int, int]


def image_input(graph: gs.Graph) -> gs.Variable | None:
    """The model's one rank-4 input ([N,C,H,W] or [N,H,W,C]), or None when there is not
    exactly one."""
    images = [t for t in graph.inputs if t.shape is not None and len(t.shape) == 4]
    return images[0] if len(images) == 1 else None


def _dim(d: object) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def check_size(size: Sequence[int]) -> Size:
    """``size`` as (height, width) of two positive ints, else a one-line error."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ModelLoadError(f"size {size!r} is not (height, width)") from None
    if h < 1 or w < 1:
        raise ModelLoadError(f"size {h}x{w} is not a positive height x width")
    return h, w


def size_shapes(graph: gs.Graph, size: Sequence[int], what: str = "--size") -> dict[str, list[int]]:
    """``input_shapes`` (input name -> shape without the batch axis) that give the image input
    ``size`` = (height, width). A fixed height or width must equal the size's."""
    h, w = check_size(size)
    inp = image_input(graph)
    if inp is None:
        raise ModelLoadError(f"{what} sets the height and width of an image input [N,C,H,W] or "
                             f"[N,H,W,C]; the model's inputs are "
                             f"{[[*(t.shape or [])] for t in graph.inputs]}")
    assert inp.shape is not None
    layout, _ = input_geometry(inp.shape)
    c_axis, hw_axes = (1, (2, 3)) if layout == "NCHW" else (3, (1, 2))
    channels = _dim(inp.shape[c_axis])
    if channels is None:
        raise ModelLoadError(f"input {inp.name!r} {list(inp.shape)} has a dynamic channel "
                             "axis; pass input_shapes with the whole shape")
    fixed = [_dim(inp.shape[a]) for a in hw_axes]
    if any(f is not None and f != v for f, v in zip(fixed, (h, w), strict=True)):
        have = "x".join(str(f) if f else "?" for f in fixed)
        raise ModelLoadError(f"{what} {h}x{w} does not fit input {inp.name!r}, whose height x "
                             f"width is {have} (only a dynamic height or width can be set)")
    shape = [channels, h, w] if layout == "NCHW" else [h, w, channels]
    return {inp.name: shape}


def stored_size(model: onnx.ModelProto) -> Size | None:
    """The size of the preprocessing stored in the model's metadata (``ort-cam metadata``)."""
    text = stored_value(model, PREPROCESS_KEY)
    if text is None:
        return None
    try:
        return check_size(json.loads(text)["size"])
    except (ValueError, KeyError, TypeError, ModelLoadError):
        return None  # resolve_preprocess reports a bad description where it reads it


def exporter_size(model: onnx.ModelProto) -> tuple[Size, str] | None:
    """The input size an exporter stored in the model's metadata (Ultralytics' ``imgsz``,
    ``graph.exported``) and the key it came from."""
    found = exported(model)
    return None if found.size is None else (found.size, found.size_source)


def own_size(width_height: tuple[int, int], multiple: int) -> Size:
    """(height, width) of an image of ``width_height`` pixels (PIL's order), each side rounded
    to the nearest multiple of ``multiple`` (at least one)."""
    m = max(int(multiple), 1)
    w, h = (max(m, int(round(v / m)) * m) for v in width_height)
    return h, w


def has_dynamic_hw(graph: gs.Graph) -> bool:
    inp = image_input(graph)
    return inp is not None and any(_dim(d) is None for d in (inp.shape or [])[1:])


def _float_cast_target(node: gs.Node) -> np.dtype | None:
    if node.op != "Cast":
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
    return dtype if np.issubdtype(dtype, np.floating) else None


def float_after_cast(graph: gs.Graph) -> tuple[dict[str, np.dtype], list[str]]:
    """Replace every integer graph input whose every use is a Cast to one float type by that
    Cast's output, under the input's name: the model then takes the pixel values as floats,
    and a path between two images runs in float, as the model computes after its Cast. Returns
    {input name: its integer dtype} and notes for the user. An integer input used otherwise is
    left as it is (``prepared.build`` refuses it by name)."""
    replaced: dict[str, np.dtype] = {}
    notes = []
    for i, inp in enumerate(list(graph.inputs)):
        if inp.dtype is None or not np.issubdtype(np.dtype(inp.dtype), np.integer):
            continue
        users = list(inp.outputs)
        targets = {_float_cast_target(n) for n in users}
        if not users or None in targets or len(targets) != 1:
            continue
        first, rest = users[0], users[1:]
        out = first.outputs[0]
        for cast in rest:  # every Cast computes the same tensor: read the first one's
            twin = cast.outputs[0]
            for consumer in list(twin.outputs):
                for k, t in enumerate(consumer.inputs):
                    if t is twin:
                        consumer.inputs[k] = out
            for j, t in enumerate(graph.outputs):
                if t is twin:
                    graph.outputs[j] = out
            cast.inputs.clear()
        first.inputs.clear()
        first.outputs.clear()
        name, dtype = inp.name, np.dtype(inp.dtype)
        inp.name = f"{name}__{dtype.name}"
        out.name, out.dtype, out.shape = name, targets.pop(), inp.shape
        graph.inputs[i] = out
        replaced[name] = dtype
        notes.append(f"input {name!r} is {dtype.name} and cast to {out.dtype.name} inside; "
                     f"the path runs in {out.dtype.name} on the Cast's output (pixel values, "
                     "no normalisation)")
    return replaced, notes


def _tensor_to_float32(t: onnx.TensorProto) -> onnx.TensorProto:
    from onnx import numpy_helper

    out = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
    out.doc_string = t.doc_string
    return out


def float16_to_float32(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A float16 model computing in float32: its float16 weights and constants cast (exactly)
    to float32, its Casts to float16 made Casts to float32, its inputs and outputs float32.
    onnxruntime's CPU provider lacks float16 kernels for many ops, and a gradient in float16
    is too coarse for the maps; the float32 model computes what the float16 one rounds."""
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    g = model.graph
    values = [*g.input, *g.output, *g.value_info]
    if not (any(t.data_type == f16 for t in g.initializer)
            or any(v.type.tensor_type.elem_type == f16 for v in values)):
        return model, []
    for i, t in enumerate(g.initializer):
        if t.data_type == f16:
            g.initializer[i].CopyFrom(_tensor_to_float32(t))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == f16:
                a.i = f32
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == f16:
                a.t.CopyFrom(_tensor_to_float32(a.t))
    for v in values:
        if v.type.tensor_type.elem_type == f16:
            v.type.tensor_type.elem_type = f32
    return model, ["float16 model: computed in float32 (its float16 weights cast exactly; "
                   "feed float32)"]
