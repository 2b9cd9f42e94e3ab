"""The keys ort_cam stores in a model's metadata_props, and how one is read back.

``ort-cam metadata`` writes them into a copy of the model; ``Explainer`` and the export read
them as defaults (the preprocessing, the class names, the layer).
"""

from __future__ import annotations

import onnx

#: The preprocessing, as ``Preprocess.to_json`` writes it.
PREPROCESS_KEY = "ort_cam.preprocess"
#: The class names, a JSON list in class order.
LABELS_KEY = "ort_cam.labels"
#: The default layer (a tensor name).
LAYER_KEY = "ort_cam.layer"


def stored_value(model: onnx.ModelProto, key: str) -> str | None:
    """The value ``model`` stores under ``key`` (the first one), or None."""
    return next((p.value for p in model.metadata_props if p.key == key), None)
