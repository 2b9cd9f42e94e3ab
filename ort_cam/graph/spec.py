"""What a layer may be asked to be read as, with nothing loaded (no onnx): the CLI's choices
are built from it at import."""

from __future__ import annotations

#: The layouts a layer can be read in (``LayerHint.layout``): channels first, channels last,
#: or a transformer's tokens [N, T, C].
LAYER_LAYOUTS = ("NCHW", "NHWC", "tokens")
