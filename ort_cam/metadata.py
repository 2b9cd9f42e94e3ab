"""What ort_cam reads from a model's metadata_props (the preprocessing, the class names, the
default layer): shown, or stored in a copy of the model, never in the model itself."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx

from .errors import OrtCamError
from .files import refuse_overwrite
from .graph import layer_view, load_model
from .graph.load import read_model
from .graph.save import save_model
from .labels import check_labels, read_labels
from .metadata_keys import LABELS_KEY, LAYER_KEY, PREPROCESS_KEY
from .preprocess import (
    Preprocess,
    input_geometry,
    read_metadata,
    resolve_preprocess,
    write_metadata,
)

#: Class names shown before the rest are left out ("…").
LABELS_SHOWN = 5
_INTEGER_TYPES = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.UINT16,
                  onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64}


def stored_metadata(model: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``model`` stores, for people to read: the preprocessing as a dict, the class names
    as "N labels: a, b, …", the default layer; only the keys that are stored."""
    stored = {p.key: p.value for p in read_model(Path(model)).metadata_props}
    shown: dict[str, Any] = {k: json.loads(stored[k]) for k in (PREPROCESS_KEY, LABELS_KEY)
                             if k in stored}
    if LAYER_KEY in stored:
        shown[LAYER_KEY] = stored[LAYER_KEY]
    if LABELS_KEY in shown:
        names = shown[LABELS_KEY]
        shown[LABELS_KEY] = f"{len(names)} labels: {', '.join(names[:LABELS_SHOWN])}" + (
            " …" if len(names) > LABELS_SHOWN else "")
    return shown


def store_metadata(model: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   preprocess: dict[str, Any] | None = None,
                   labels: str | os.PathLike[str] | None = None, layer: str | None = None,
                   force: bool = False) -> tuple[list[Path], Preprocess]:
    """Write a copy of ``model`` to ``out`` with the preprocessing (``preprocess``: a preset
    and field overrides, the dict form ``Explainer`` takes; missing fields from the model's
    metadata or input shape), the class names of the file ``labels`` and the default
    ``layer`` stored. Returns the files written and the preprocessing stored."""
    model, out = Path(model), Path(out)
    proto = read_model(model)
    refuse_overwrite(out, force)
    if out.resolve() == model.resolve():
        raise OrtCamError("--out must differ from MODEL (ort-cam never rewrites your model)")
    spec = dict(preprocess or {})
    shape = [d.dim_value or d.dim_param for d in
             proto.graph.input[0].type.tensor_type.shape.dim]
    _need_size(proto, shape, spec)
    preset = spec.pop("preset", None)
    if preset is None and proto.graph.input[0].type.tensor_type.elem_type in _INTEGER_TYPES:
        preset = "raw"  # the model takes pixels and normalises them itself
    pre = resolve_preprocess(proto, shape, preset, **spec)
    write_metadata(proto, pre)
    extra = {}
    if labels is not None or layer is not None:
        loaded = load_model(proto, size=pre.size)
        if labels is not None:
            n_classes = loaded.shapes[loaded.output][-1]
            extra[LABELS_KEY] = json.dumps(check_labels(read_labels(labels), n_classes, labels))
        if layer is not None:
            extra[LAYER_KEY] = layer_view(loaded, layer).tensor
    keep = [p for p in proto.metadata_props if p.key not in extra]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in extra.items():
        proto.metadata_props.add(key=key, value=value)
    return save_model(proto, out), pre


def _need_size(proto: onnx.ModelProto, shape: list, spec: dict[str, Any]) -> None:
    """A dynamic height and width is stored only when the caller names the size."""
    _, hw = input_geometry(shape) if len(shape) == 4 else ("", (0, 0))
    if hw is None and spec.get("size") is None and read_metadata(proto) is None:
        raise OrtCamError("the model's input has a dynamic height and width; pass --size HxW "
                          "to store the size it runs at")
