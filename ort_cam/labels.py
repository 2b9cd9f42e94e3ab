"""Class names: read from a list, a file or the model's metadata, and checked against the
number of classes the model has."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import OrtCamError
from .metadata_keys import LABELS_KEY, MetadataOnly, stored_value

if TYPE_CHECKING:
    import onnx


def read_labels(source, model: onnx.ModelProto | MetadataOnly | None = None) -> list[str] | None:
    """Labels from a list, a text file (one per line) or a JSON list file; else the model's
    metadata (``ort_cam.labels``); else None."""
    if source is None:
        stored = stored_value(model, LABELS_KEY) if model is not None else None
        return list(json.loads(stored)) if stored else None
    if isinstance(source, (list, tuple)):
        return [str(s) for s in source]
    path = Path(source)
    if not path.is_file():
        raise OrtCamError(f"labels file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [str(s) for s in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_labels(labels: list[str] | None, n_classes: int, source=None) -> list[str] | None:
    """``labels``, refused when they cannot name the model's classes: none at all, or another
    number of them than the model has classes (``source``: where they came from)."""
    if labels is None:
        return None
    where = "the labels" if source is not None else f"the labels stored in the model ({LABELS_KEY})"
    if isinstance(source, (str, os.PathLike)):
        where = f"labels file {source}"
    if not labels:
        raise OrtCamError(f"{where} holds no label; give one class name per line")
    if len(labels) != n_classes:
        raise OrtCamError(f"{where} has {len(labels)} labels but the model has {n_classes} "
                          "classes; give one class name per class, in class order")
    return labels


def refuse_labels(labels: object, kind: str) -> None:
    """No labels for a target kind that names nothing (segment, detection, ...): given ones
    are refused."""
    if labels is not None:
        raise OrtCamError(f"labels do not apply to a {kind} target (it has no classes)")
