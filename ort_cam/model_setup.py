"""What an explainer resolves of its model before it opens a session: the prepared model (from
the cache, else built), the size and layer view asked for, the preprocessing and the class
names. ``Explainer`` opens its session on it; the export reads the same and opens none."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .baselines import make_baseline
from .engine import check_finite
from .errors import InputError, OrtCamError
from .graph.exported import exported
from .labels import check_labels, read_labels
from .prepared import Prepared, prepared_model
from .preprocess import Preprocess, load_image, preprocess_from_spec, requested_size
from .targets import TargetOptions

if TYPE_CHECKING:  # (what loads a model is imported where one is loaded)
    import onnx

    from .graph import LayerHint, LoadedModel


@dataclass
class ModelSetup:
    """One (model, layer, score) resolved: ``prepared`` (see ``Prepared``), the ``size`` and
    ``layer_hint`` asked for, the model ``output`` explained, the ``preprocess`` of an image
    input (None for another input), and ``loaded``, the loaded model (None until first used
    when the prepared model came from the cache); ``again`` prepares the model once more
    with the same arguments (``prepared_model``), for the fused model where only its
    optimised form came from the cache."""

    source: str | os.PathLike | onnx.ModelProto
    prepared: Prepared
    output: str | None
    size: tuple[int, int] | None
    layer_hint: LayerHint | None
    preprocess: Preprocess | None
    loaded: LoadedModel | None
    again: Callable[..., Prepared] | None = field(default=None, repr=False)

    @classmethod
    def resolve(cls, model: str | os.PathLike | onnx.ModelProto, layer: str | None, *,
                preprocess: Preprocess | str | dict | None, score: str | None, cache: bool,
                output: str | None, size: tuple[int, int] | None,
                layer_layout: str | None = None, grid: tuple[int, int] | None = None,
                extra_tokens: int | None = None, target: TargetOptions | None = None,
                session: dict | None = None, on_demand: bool = True) -> ModelSetup:
        """The setup of ``Explainer(model, layer, ...)``, its arguments as it takes them;
        ``session`` and ``on_demand`` as ``prepared_model`` takes them."""
        size = requested_size(size, preprocess)
        hint = None
        if layer_layout or grid or extra_tokens is not None:
            from .graph import LayerHint

            hint = LayerHint(layer_layout, grid, extra_tokens)
        again = partial(prepared_model, model, layer, score, use_cache=cache, output=output,
                        size=size, hint=hint, target=target, on_demand=on_demand)
        prep = again(session=session)
        pre = None
        if len(prep.input_shape) == 4:
            pre = preprocess_from_spec(prep.metadata_model(), list(prep.input_shape), preprocess,
                                       prep.cast_input)
        return cls(model, prep, output, size, hint, pre, prep.loaded, again)

    @property
    def model(self) -> LoadedModel:
        """The loaded model (loaded on first use when the setup came from the cache)."""
        if self.loaded is None:
            from .graph import load_model, view_layer

            loaded = load_model(self.source, size=self.size, output=self.output)
            self.loaded = view_layer(loaded, self.prepared.layer, self.layer_hint)[0]
        return self.loaded

    @property
    def fused(self) -> onnx.ModelProto:
        """The fused gradient model (parsed on first use when it came from the cache)."""
        prep = self.prepared
        if prep.fused is None and prep.fused_bytes is None and self.again is not None:
            other = self.again()  # only the optimised model came from the cache
            prep.fused, prep.fused_bytes = other.fused, other.fused_bytes
            self.loaded = self.loaded or other.loaded
        if prep.fused is None:
            import onnx

            assert prep.fused_bytes is not None
            prep.fused = onnx.load_model_from_string(prep.fused_bytes)
        return prep.fused

    @property
    def layout(self) -> str:
        """The image input's layout (NCHW or NHWC; NCHW for an input that is no image)."""
        return self.preprocess.layout if self.preprocess is not None else "NCHW"

    def image_inputs(self, image, baseline, seed: int, blur_radius: float | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, Image.Image]:
        """(x, x0, pixels, seconds, the photo upright) for one image (a path, a PIL image or
        an H×W×3 uint8 array) and the ``baseline`` (``baselines.make_baseline``)."""
        if self.preprocess is None:
            raise OrtCamError("the model input is not an image batch [N,C,H,W]/[N,H,W,C]; "
                              "use explain_array with your own preprocessing")
        pre = self.preprocess
        t0 = time.perf_counter()
        photo = load_image(image)
        pixels = pre.resize_image(photo)
        x = pre.normalize(pixels)
        check_finite(x, "the preprocessed image")
        x0 = make_baseline(baseline, pixels, x, pre, blur_radius=blur_radius, seed=seed)
        return x, x0, pixels, time.perf_counter() - t0, photo

    def array_inputs(self, x, baseline) -> tuple[np.ndarray, np.ndarray]:
        """(x, x0) from a model-space input and baseline (an array of x's shape, or
        "zeros"), each with a batch axis of 1 and in the model's input dtype."""
        x = self._batch1(x, "x")
        check_finite(x, "the input array")
        if isinstance(baseline, str) and baseline == "zeros":
            return x, np.zeros_like(x)
        x0 = self._batch1(baseline, "baseline_array")
        if x0.shape != x.shape:
            raise InputError(f"baseline has shape {x0.shape[1:]} but the input has "
                             f"{x.shape[1:]}; pass a baseline of the input's shape")
        check_finite(x0, "the baseline array")
        return x, x0

    def _batch1(self, x, what) -> np.ndarray:
        x = np.asarray(x)
        shape = list(self.prepared.input_shape)
        if x.ndim == len(shape) - 1:
            x = x[None]
        if x.ndim != len(shape) or x.shape[0] != 1:
            raise InputError(f"{what} has shape {x.shape}; the model takes "
                             f"{['N', *shape[1:]]} (pass one input)")
        for i, d in enumerate(shape[1:], start=1):
            if d is not None and x.shape[i] != d:
                raise InputError(f"{what} has shape {list(x.shape)}; the model takes "
                                 f"{['N', *shape[1:]]}")
        return np.ascontiguousarray(x.astype(np.dtype(self.prepared.input_dtype)))

    def own_size_of(self, image) -> tuple[tuple[int, int] | None, object]:
        """(the size of its own to explain ``image`` at, None where it is the prepared size;
        the image, loaded where it can be) for a model that takes any size: the image's size
        rounded to what the graph scales it down by (``graph.inputs.own_size``)."""
        from .graph.inputs import own_size  # (loads onnx-graphsurgeon: a model is made)

        try:
            photo = load_image(image)
        except Exception:  # refused where it is read, after what came before it is explained
            return None, image
        size = own_size(photo.size, self.prepared.size_multiple)
        same = self.preprocess is None or size == tuple(self.preprocess.size)
        return (None if same else size), photo

    def map_size(self, x: np.ndarray) -> tuple[int, int]:
        """The (height, width) of the model input ``x``: the size maps are upsampled to."""
        return (x.shape[2], x.shape[3]) if self.layout == "NCHW" else (x.shape[1], x.shape[2])

    def labels(self, spec, n_classes: int) -> list[str] | None:
        """The class names of ``spec`` (a list or a file), else the model's stored ones
        (``ort_cam.labels``), else those its exporter stored (``graph.exported``: Ultralytics'
        ``names``) when there is one per class, else None; refused when they cannot name the
        ``n_classes`` classes."""
        meta = self.prepared.metadata_model()
        labels = read_labels(spec, meta)
        if labels is None and spec is None:
            names = exported(meta).names
            labels = names if names is not None and len(names) == n_classes else None
        return check_labels(labels, n_classes, spec)


def class_count(shape: tuple | list) -> int:
    """C of a class-score output's declared shape [N, C]."""
    width = shape[1] if len(shape) > 1 else None
    if not isinstance(width, int):
        raise OrtCamError("cannot tell the number of classes of the model output")
    return width

