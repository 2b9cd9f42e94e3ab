"""What exporters store in a model's ``metadata_props`` (class names, input size), read the way
each one writes it.

What the common exporters write (surveyed from their sources, 2026-12):

- Ultralytics (YOLOv8, YOLO11: ``model.export(format="onnx")``): ``str()`` of Python values:
  ``names`` a dict literal ``{0: 'person', 1: 'bicycle', ...}``, ``imgsz`` a list literal
  ``[640, 640]`` (height, width), ``task`` (classify, detect, segment, pose, obb), ``stride``,
  ``batch``, ``channels``, and description, author, date, version, license, docs, args.
- YOLOv5's export.py: ``stride`` and ``names`` (a list or dict literal).
- The QGIS Deepness plugin's convention: JSON values: ``class_names`` (``{"0": "background",
  ...}``), ``model_type`` (Segmentor, Detector, Regressor), ``tiles_size`` (the input side),
  ``standardization_mean``/``_std``, ``resolution``.
- torch.onnx (both exporters), timm, tf2onnx, paddle2onnx and Hugging Face optimum write
  none of these (optimum keeps ``config.json`` beside the model; PaddleOCR recognisers as
  RapidOCR ships them carry ``character``, the CTC alphabet, not class names).
- ort_cam's own keys (``ort-cam metadata``: ``ort_cam.preprocess``, ``ort_cam.labels``,
  ``ort_cam.layer``) are read where they are used and take precedence over these. The task
  (Ultralytics' ``task``) is read by ``targets.detect``, which picks the target kind.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..metadata_keys import MetadataOnly

if TYPE_CHECKING:
    import onnx

#: The keys read here, by the exporter that writes them.
NAMES_KEYS = {"names": "Ultralytics, YOLOv5", "class_names": "Deepness"}
SIZE_KEYS = {"imgsz": "Ultralytics", "tiles_size": "Deepness"}


@dataclass(frozen=True)
class Exported:
    """What an exporter stored: ``names`` (class names in class order) and ``size`` (height,
    width of the input), each with the key it came from (``names_key``, ``size_key``)."""

    names: list[str] | None = None
    size: tuple[int, int] | None = None
    names_key: str | None = None
    size_key: str | None = None

    @property
    def size_source(self) -> str:
        """Where the size came from, for a note: 'imgsz (Ultralytics)'."""
        return f"{self.size_key} ({SIZE_KEYS.get(self.size_key or '', '')})"


def _literal(text: str) -> object:
    """A value written as JSON or as a Python literal (``str()`` of a dict or list)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _names(value: object) -> list[str] | None:
    """Class names from a list, or from a dict of class index -> name whose keys are 0..n-1."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and value:
        try:
            indexed = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        if sorted(indexed) == list(range(len(indexed))):
            return [indexed[i] for i in range(len(indexed))]
    return None


def _size(value: object) -> tuple[int, int] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) in (1, 2) \
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return (int(value[0]), int(value[-1]))
    return None


def exported(model: onnx.ModelProto | MetadataOnly) -> Exported:
    """What ``model``'s metadata says of its class names and input size (the first key of
    each kind that parses)."""
    props = {p.key: p.value for p in model.metadata_props}
    names = next(((v, k) for k in NAMES_KEYS if k in props
                  for v in [_names(_literal(props[k]))] if v is not None), (None, None))
    size = next(((v, k) for k in SIZE_KEYS if k in props
                 for v in [_size(_literal(props[k]))] if v is not None), (None, None))
    return Exported(names[0], size[0], names[1], size[1])
