"""What an explainer resolves of its model before it opens a session: the prepared model (from
the cache, else built), the size and layer view asked for, the preprocessing and the class
names. ``Explainer`` opens its session on it; the export reads the same and opens none."""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx

from .errors import OrtCamError
from .graph import LayerHint, LoadedModel, load_model, view_layer
from .labels import check_labels, read_labels
from .prepared import Prepared, prepared_model
from .preprocess import Preprocess, preprocess_from_spec, requested_size


@dataclass
class ModelSetup:
    """One (model, layer, score) resolved: ``prepared`` (see ``Prepared``), the ``size`` and
    ``layer_hint`` asked for, the model ``output`` explained, the ``preprocess`` of an image
    input (None for another input), and ``loaded``, the loaded model (None until first used
    when the prepared model came from the cache)."""

    source: str | os.PathLike | onnx.ModelProto
    prepared: Prepared
    output: str | None
    size: tuple[int, int] | None
    layer_hint: LayerHint | None
    preprocess: Preprocess | None
    loaded: LoadedModel | None

    @classmethod
    def resolve(cls, model: str | os.PathLike | onnx.ModelProto, layer: str | None, *,
                preprocess: Preprocess | str | dict | None, score: str | None, cache: bool,
                output: str | None, size: tuple[int, int] | None,
                layer_layout: str | None = None, grid: tuple[int, int] | None = None,
                extra_tokens: int | None = None, target_kind: str | None = None) -> ModelSetup:
        """The setup of ``Explainer(model, layer, ...)``, its arguments as it takes them."""
        size = requested_size(size, preprocess)
        hint = LayerHint(layer_layout, grid, extra_tokens) if (
            layer_layout or grid or extra_tokens is not None) else None
        prep = prepared_model(model, layer, score, use_cache=cache, output=output, size=size,
                              hint=hint, target_kind=target_kind)
        pre = None
        if len(prep.input_shape) == 4:
            pre = preprocess_from_spec(prep.metadata_model(), list(prep.input_shape), preprocess,
                                       prep.cast_input)
        return cls(model, prep, output, size, hint, pre, prep.loaded)

    @property
    def model(self) -> LoadedModel:
        """The loaded model (loaded on first use when the setup came from the cache)."""
        if self.loaded is None:
            loaded = load_model(self.source, size=self.size, output=self.output)
            self.loaded = view_layer(loaded, self.prepared.layer, self.layer_hint)[0]
        return self.loaded

    @property
    def fused(self) -> onnx.ModelProto:
        """The fused gradient model (parsed on first use when it came from the cache)."""
        prep = self.prepared
        if prep.fused is None:
            assert prep.fused_bytes is not None
            prep.fused = onnx.load_model_from_string(prep.fused_bytes)
        return prep.fused

    def labels(self, spec, n_classes: int) -> list[str] | None:
        """The class names of ``spec`` (a list or a file), else the model's stored ones, else
        None; refused when they cannot name the ``n_classes`` classes."""
        return check_labels(read_labels(spec, self.prepared.metadata_model()), n_classes, spec)


def class_count(shape: tuple | list) -> int:
    """C of a class-score output's declared shape [N, C]."""
    width = shape[1] if len(shape) > 1 else None
    if not isinstance(width, int):
        raise OrtCamError("cannot tell the number of classes of the model output")
    return width

