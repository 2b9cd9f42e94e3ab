"""Errors ort_cam raises. Each message is one line that says what to do next."""

from __future__ import annotations


class OrtCamError(Exception):
    """Base class: a problem with the user's input, reported as one line."""


class ModelLoadError(OrtCamError):
    """The ONNX file cannot be read, checked or converted."""


class UnknownLayerError(OrtCamError):
    """The requested layer names no tensor or node of the model."""


class NotSpatialError(OrtCamError):
    """The requested layer has no channel axis and spatial grid."""


class NoGradientRuleError(OrtCamError):
    """An op between the layer and the score has no VJP rule."""

    def __init__(self, op_type: str, node_name: str, suggestion: str | None = None,
                 detail: str | None = None):
        self.op_type = op_type
        self.node_name = node_name
        self.suggestion = suggestion
        self.detail = detail
        msg = f"no gradient rule for op {op_type!r} (node {node_name!r})"
        if detail:
            msg += f": {detail} is not supported"
        if suggestion:
            msg += f"; pick a layer after it, e.g. {suggestion!r}"
        else:
            msg += "; pick a layer after this node"
        super().__init__(msg)


class InputError(OrtCamError):
    """An image or array that cannot be used (unreadable, wrong shape, NaN)."""
