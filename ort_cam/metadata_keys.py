"""The keys ort_cam stores in a model's metadata_props, and how one is read back.

``ort-cam metadata`` writes them into a copy of the model; ``Explainer`` and the export read
them as defaults (the preprocessing, the class names, the layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

#: The preprocessing, as ``Preprocess.to_json`` writes it.
PREPROCESS_KEY = "ort_cam.preprocess"
#: The class names, a JSON list in class order.
LABELS_KEY = "ort_cam.labels"
#: The default layer (a tensor name).
LAYER_KEY = "ort_cam.layer"


@dataclass(frozen=True)
class MetadataProp:
    """One metadata property, as an ONNX model holds it."""

    key: str
    value: str


@dataclass
class MetadataOnly:
    """The metadata properties of a model, without the model (the readers of stored values
    take it where they take an ``onnx.ModelProto``)."""

    metadata_props: list[MetadataProp] = field(default_factory=list)

    @classmethod
    def of(cls, values: Mapping[str, str]) -> MetadataOnly:
        return cls([MetadataProp(k, v) for k, v in values.items()])


def stored_value(model: onnx.ModelProto | MetadataOnly, key: str) -> str | None:
    """The value ``model`` stores under ``key`` (the first one), or None."""
    return next((p.value for p in model.metadata_props if p.key == key), None)
