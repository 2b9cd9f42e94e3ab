"""Declared preprocessing: resize, pixel scale, mean/std, channel order, layout and dtype.

Nothing is guessed silently: a preset fills the numbers, the model's input shape fills the
size and layout, and a ``Preprocess`` stored in the model's metadata wins over both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError, OrtCamError
from .metadata_keys import PREPROCESS_KEY, MetadataOnly, stored_value

if TYPE_CHECKING:
    import onnx

RESIZE_MODES = ("stretch", "crop", "letterbox")
LAYOUTS = ("NCHW", "NHWC")
#: What ``load_image`` accepts: a path, a PIL image or an H×W×3 array.
ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray

#: name -> (scale, mean, std, channel order, resize mode); x = (pixel * scale - mean) / std.
PRESETS: dict[str, dict] = {
    "imagenet": dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     channels="RGB", resize="crop"),
    "caffe": dict(scale=1.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0),
                  channels="BGR", resize="stretch"),
    "inception": dict(scale=1 / 127.5, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0),
                      channels="RGB", resize="stretch"),
    "raw": dict(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                channels="RGB", resize="stretch"),
}


@dataclass
class Preprocess:
    """How a pixel image (H×W×3, 0..255) becomes the model input ``x = P(I)``.

    Attributes:
        size: model input (height, width).
        resize: ``stretch`` (to size), ``crop`` (short side to ``size/crop_ratio``, centre crop,
            torchvision's 256→224) or ``letterbox`` (fit inside, pad with ``pad_value``).
        scale, mean, std: ``x = (pixel * scale - mean) / std`` per channel (in output order).
        channels: ``RGB`` or ``BGR``.
        layout: ``NCHW`` or ``NHWC``; dtype: the input's NumPy dtype name.
    """

    size: tuple[int, int] = (224, 224)
    resize: str = "stretch"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    crop_ratio: float = 0.875
    pad_value: int = 0
    source: str = field(default="default", compare=False)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise OrtCamError(f"unknown resize mode {self.resize!r}; use {', '.join(RESIZE_MODES)}")
        if self.layout not in LAYOUTS:
            raise OrtCamError(f"unknown layout {self.layout!r}; use NCHW or NHWC")
        if self.channels not in ("RGB", "BGR"):
            raise OrtCamError(f"unknown channel order {self.channels!r}; use RGB or BGR")
        self.size = (int(self.size[0]), int(self.size[1]))
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if any(s == 0 for s in self.std):
            raise OrtCamError("std must be non-zero for every channel")

    # --- images -------------------------------------------------------------------------
    def resize_image(self, image: Image.Image) -> np.ndarray:
        """The pixel image the model sees: H×W×3 uint8, after resize/crop/letterbox, RGB."""
        image = image.convert("RGB")
        h, w = self.size
        if self.resize == "stretch":
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR)
        elif self.resize == "crop":
            short = min(h, w) / self.crop_ratio
            s = short / min(image.size)
            new = (max(w, round(image.size[0] * s)), max(h, round(image.size[1] * s)))
            image = image.resize(new, Image.Resampling.BILINEAR)
            left, top = (new[0] - w) // 2, (new[1] - h) // 2
            image = image.crop((left, top, left + w, top + h))
        else:
            s = min(w / image.size[0], h / image.size[1])
            new = (max(1, round(image.size[0] * s)), max(1, round(image.size[1] * s)))
            canvas = Image.new("RGB", (w, h), (self.pad_value,) * 3)
            fitted = image.resize(new, Image.Resampling.BILINEAR)
            canvas.paste(fitted, ((w - new[0]) // 2, (h - new[1]) // 2))
            image = canvas
        return np.asarray(image, dtype=np.uint8)

    def geometry(self, original_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """How ``resize_image`` moves a point of an image of ``original_size`` = (width,
        height): model-grid x = x · sx + dx, y = y · sy + dy; returns (sx, sy, dx, dy).

        The same numbers ``resize_image`` uses: stretch scales each axis to the size; crop
        scales the short side to ``size/crop_ratio`` (rounded like PIL's target size) and
        shifts by the centre crop; letterbox scales to fit and shifts by the padding."""
        w0, h0 = original_size
        h, w = self.size
        if self.resize == "stretch":
            return w / w0, h / h0, 0.0, 0.0
        if self.resize == "crop":
            s = min(h, w) / self.crop_ratio / min(w0, h0)
            new = (max(w, round(w0 * s)), max(h, round(h0 * s)))
            return new[0] / w0, new[1] / h0, -float((new[0] - w) // 2), -float((new[1] - h) // 2)
        s = min(w / w0, h / h0)
        new = (max(1, round(w0 * s)), max(1, round(h0 * s)))
        return new[0] / w0, new[1] / h0, float((w - new[0]) // 2), float((h - new[1]) // 2)

    def map_box(self, box: Sequence[float] | np.ndarray,
                original_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """A box (x0, y0, x1, y1; pixel edges, x1/y1 exclusive) in an image of
        ``original_size`` = (width, height), moved onto the model's input grid the way
        ``resize_image`` moves the pixels, rounded to the nearest edge and clipped to the grid
        (a box outside a centre crop comes back empty: x0 == x1 or y0 == y1)."""
        sx, sy, dx, dy = self.geometry(original_size)
        h, w = self.size
        x0, y0, x1, y1 = (float(v) for v in box)
        edges = (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)
        bx0, by0, bx1, by1 = (int(np.floor(v + 0.5)) for v in edges)
        bx0, bx1 = (min(max(v, 0), w) for v in (bx0, bx1))
        by0, by1 = (min(max(v, 0), h) for v in (by0, by1))
        return bx0, by0, max(bx0, bx1), max(by0, by1)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel array(s) (...×H×W×3, RGB, 0..255) to model space, with a batch axis."""
        p = np.asarray(pixels, dtype=np.float64)
        if p.ndim == 3:
            p = p[None]
        if self.channels == "BGR":
            p = p[..., ::-1]
        x = (p * self.scale - np.asarray(self.mean)) / np.asarray(self.std)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x.astype(self.dtype))

    def __call__(self, image: ImageLike) -> np.ndarray:
        return self.normalize(self.resize_image(load_image(image)))

    # --- metadata -----------------------------------------------------------------------
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("source")
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> Preprocess:
        try:
            d = json.loads(text)
            d["size"] = tuple(d["size"])
            return cls(**d, source=source)
        except (ValueError, TypeError, KeyError) as exc:
            raise OrtCamError(f"bad preprocessing description in the model ({exc})") from exc


def load_image(image: ImageLike) -> Image.Image:
    """A PIL image from a path, a PIL image or an H×W×3 uint8 array."""
    if isinstance(image, Image.Image):
        return _upright_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                f"image array has shape {image.shape}; pass an H×W×3 uint8 array"
            )
        if not np.isfinite(image).all():
            raise InputError("image array contains NaN or inf; pass finite pixel values")
        return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                return _upright_rgb(im, str(path))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read image {path} ({exc}); pass a PNG or JPEG") from exc
    raise InputError(f"cannot use {type(image).__name__} as an image; pass a path, "
                     "a PIL image or an H×W×3 uint8 array")


#: PIL modes of one-channel images with more than 8 bits (16-bit PNG/TIFF greyscale; PIL reads
#: 16-bit RGB(A) PNGs as 8-bit RGB(A) itself). ``convert("RGB")`` would clip them to white.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _upright_rgb(image: Image.Image, what: str = "the image") -> Image.Image:
    """``image`` as 8-bit RGB, turned upright as its EXIF orientation says (what a photo viewer
    shows), 16-bit greyscale scaled to 8 bits (0..65535 -> 0..255)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in _WIDE_GREY:
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise InputError(f"{what} holds 32-bit integer pixels outside 0..65535; "
                             "pass an 8- or 16-bit image")
        image = Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")
    elif image.mode == "F":
        raise InputError(f"{what} holds floating-point pixels, whose range ort_cam cannot "
                         "tell; pass an 8- or 16-bit image or an H×W×3 uint8 array")
    return image.convert("RGB")


def read_metadata(model: onnx.ModelProto | MetadataOnly) -> Preprocess | None:
    text = stored_value(model, PREPROCESS_KEY)
    return None if text is None else Preprocess.from_json(text)


def write_metadata(model: onnx.ModelProto, preprocess: Preprocess) -> onnx.ModelProto:
    """Store ``preprocess`` in the model's metadata_props (replacing an earlier one)."""
    keep = [p for p in model.metadata_props if p.key != PREPROCESS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=PREPROCESS_KEY, value=preprocess.to_json())
    return model


def input_geometry(shape: Sequence[int | str | None]) -> tuple[str, tuple[int, int] | None]:
    """Layout and (H, W) read off a model input shape like [N,3,H,W] or [N,H,W,3]."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4:
        raise OrtCamError(f"the model input has shape {list(shape)}; expected an image batch")
    if dims[1] in (1, 3) and dims[3] not in (1, 3):
        layout = "NCHW"
    elif dims[3] in (1, 3):
        layout = "NHWC"
    else:
        layout = "NCHW"
    h, w = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    return layout, ((h, w) if h is not None and w is not None else None)


def requested_size(size: Sequence[int] | None, spec: Preprocess | str | dict | None
                   ) -> tuple[int, int] | None:
    """The input size a caller asks for: ``size``, else the size of the preprocessing ``spec``
    (a ``Preprocess``, or the dict form's ``size``); None when neither names one."""
    if size is None and isinstance(spec, Preprocess):
        size = spec.size
    elif size is None and isinstance(spec, dict):
        size = spec.get("size")
    if size is None:
        return None
    h, w = (int(v) for v in size)
    return h, w


#: A pixel input (integer, cast to float inside the model) takes the pixels as they are.
_PIXELS = {"scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def preprocess_from_spec(model: onnx.ModelProto | MetadataOnly,
                         input_shape: Sequence[int | str | None],
                         spec: Preprocess | str | dict | None, cast_input: str | None = None
                         ) -> Preprocess:
    """``resolve_preprocess`` for ``spec`` in any form ``Explainer`` takes (a dict: ``preset``
    and field overrides). For a model whose input was ``cast_input`` (an integer type the
    model casts to float inside, so its own graph does the normalising) the default is the
    ``raw`` preset, and one that scales or shifts the pixels is refused."""
    overrides: dict[str, Any] = {}
    if isinstance(spec, dict):
        overrides = {k: v for k, v in spec.items() if k != "preset"}
        spec = spec.get("preset")
    if cast_input is not None and spec is None and read_metadata(model) is None:
        spec = "raw"
    pre = resolve_preprocess(model, input_shape, spec, **overrides)
    if cast_input is not None and any(
            np.any(np.asarray(getattr(pre, k), dtype=np.float64) != v) for k, v in _PIXELS.items()):
        raise OrtCamError(f"the model takes {cast_input} pixels and normalises them itself; "
                          f"feed them as they are (--preprocess raw), not with scale {pre.scale:g},"
                          f" mean {list(pre.mean)}, std {list(pre.std)}")
    return pre


def resolve_preprocess(model: onnx.ModelProto | MetadataOnly,
                       input_shape: Sequence[int | str | None],
                       spec: Preprocess | str | None, **overrides: Any) -> Preprocess:
    """The preprocessing to use: an explicit ``Preprocess`` as is; otherwise the model's
    metadata, else the named preset (default ``imagenet``), with size and layout from the
    input shape and any ``overrides`` on top."""
    if isinstance(spec, Preprocess):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    stored = read_metadata(model)
    if stored is not None and spec is None:
        return dataclasses.replace(stored, **overrides) if overrides else stored
    name = spec or "imagenet"
    if name not in PRESETS:
        raise OrtCamError(f"unknown preprocessing preset {name!r}; use {', '.join(PRESETS)}")
    layout, hw = input_geometry(input_shape)
    fields = dict(PRESETS[name], layout=layout, source=f"preset {name}")
    if hw is not None:
        fields["size"] = hw
    fields.update(overrides)
    return Preprocess(**fields)
