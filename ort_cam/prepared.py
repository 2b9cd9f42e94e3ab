"""A prepared model: the fused gradient model, serialised, and what ``Explainer`` needs to
start without loading, probing or differentiating the model again.

``prepared_model`` reads it from the cache (``ort_cam.cache``) when an entry matches the key (the
model's SHA-256, the layer, the score mode, the output, the input shapes, and the ort_cam,
onnx and onnxruntime versions), else builds it and stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from . import cache
from ._version import __version__
from .errors import OrtCamError
from .grad import rule_switches
from .grad.spec import Head
from .graph.digest import ModelSource, remembered_digest
from .metadata_keys import LAYER_KEY, MetadataOnly
from .runtime import Runner
from .targets import OutputInfo, TargetOptions

if TYPE_CHECKING:
    import onnx

    from .graph import LayerHint, LoadedModel
    from .targets import Reading

# What builds a model (onnx, onnx-graphsurgeon: the gradient graphs, the loader, the output's
# reading) is imported where a model is built, so that a model taken from the cache starts
# without loading them.

#: Bump when what an entry holds, or how the fused model is built, changes.
FORMAT = 9


@dataclass
class Prepared:
    """What ``Explainer.__init__`` needs of a model.

    Attributes:
        fused_bytes: the serialised fused gradient model (None past protobuf's 2 GB: then
            ``fused`` is set and the session is made from a file).
        layer, channel_axis: the layer tensor and its channel axis (1: NCHW, 3: NHWC).
        input_name, input_shape, input_dtype: the model's one input (None for a free dim).
        layer_shape: the layer's shape in the probe run (batch ``PROBE_BATCH``).
        sample_bytes: the activation bytes estimate per path point (sets the chunk size).
        metadata: the model's metadata properties (preprocessing, labels, layer).
        loaded, fused: the loaded model and the fused ModelProto when built in this process.
        from_cache: whether it came from the cache.
        cast_input: the integer dtype of an input that the model casts to float (replaced
            by the Cast's output: the model takes pixel values), else None.
        warnings: what loading chose that the user should hear of (a dynamic size fixed by
            default, an integer input read after its Cast, a batch that stays 1).
        reading: how the output is read (``targets.Reading``): its kind, the head's transform
            (``score``, e.g. ``sigmoid`` for a multi-label head), why (``note``) and the line
            that says it (``line``).
        session_bytes: the fused model as onnxruntime's optimiser left it for the session
            context asked for (``ort_cam.optimized``), when the cache held it; then
            ``fused_bytes`` is None (read from the cache, or rebuilt, when first needed).
        key: the fields of its cache entry (None when the cache is not used).
        batch_rows: the model runs at batch 1 only (``LoadedModel.batch_rows``): its session
            runs row by row (``runner``).
        free_size: the input's height and width are dynamic and nothing names them
            (``LoadedModel.free_size``): prepared at the default size, each image is explained
            at its own (``Explainer``), rounded to a multiple of ``size_multiple``
            (``graph.layers.size_multiple``).
    """

    fused_bytes: bytes | None
    layer: str
    channel_axis: int
    input_name: str
    input_shape: list[int | None]
    input_dtype: str
    layer_shape: list[int]
    sample_bytes: int
    metadata: dict[str, str]
    loaded: LoadedModel | None = field(default=None, repr=False)
    fused: onnx.ModelProto | None = field(default=None, repr=False)
    from_cache: bool = False
    cast_input: str | None = None
    warnings: list[str] = field(default_factory=list)
    reading: dict[str, Any] = field(default_factory=dict)
    session_bytes: bytes | None = field(default=None, repr=False)
    key: dict[str, Any] | None = None
    batch_rows: bool = False
    free_size: bool = False
    size_multiple: int = 1

    @property
    def score(self) -> str:
        """The head's transform: the score mode the fused model computes."""
        return str(self.reading.get("score", "probability"))

    @property
    def kind(self) -> str:
        """The target kind the output is read as."""
        return str(self.reading.get("kind", "class"))

    @property
    def output_info(self) -> OutputInfo:
        """The output as the target kinds read it."""
        return OutputInfo.from_record(self.reading["output"])

    @property
    def head(self) -> Head:
        """The transform of the output the fused model differentiates."""
        return Head(**self.reading["head"])

    def runner(self, session: ort.InferenceSession) -> Runner:
        """The runner of the fused session: row by row where the batch stays 1."""
        from .grad.spec import ON_DEMAND_ROWS

        free = [o.name for o in session.get_outputs() if o.shape and o.shape[0] == ON_DEMAND_ROWS]
        if self.batch_rows:
            return RowRunner(session, preallocate=True, free_rows=free)
        return Runner(session, preallocate=True, free_rows=free)  # IOBinding on CUDA

    def record(self) -> dict[str, Any]:
        """The JSON part of a cache entry (everything but the bytes and the in-memory models)."""
        return {"layer": self.layer, "channel_axis": self.channel_axis,
                "input_name": self.input_name, "input_shape": self.input_shape,
                "input_dtype": self.input_dtype, "layer_shape": self.layer_shape,
                "sample_bytes": self.sample_bytes, "metadata": self.metadata,
                "cast_input": self.cast_input, "warnings": self.warnings,
                "reading": self.reading, "batch_rows": self.batch_rows,
                "free_size": self.free_size, "size_multiple": self.size_multiple}

    @classmethod
    def from_record(cls, data: dict[str, Any], fused_bytes: bytes | None) -> Prepared:
        return cls(fused_bytes=fused_bytes, layer=str(data["layer"]),
                   channel_axis=int(data["channel_axis"]), input_name=str(data["input_name"]),
                   input_shape=[None if d is None else int(d) for d in data["input_shape"]],
                   input_dtype=str(data["input_dtype"]),
                   layer_shape=[int(d) for d in data["layer_shape"]],
                   sample_bytes=int(data["sample_bytes"]),
                   metadata={str(k): str(v) for k, v in data["metadata"].items()},
                   from_cache=True, cast_input=data.get("cast_input"),
                   warnings=[str(w) for w in data.get("warnings", [])],
                   reading=dict(data["reading"]), batch_rows=bool(data["batch_rows"]),
                   free_size=bool(data["free_size"]),
                   size_multiple=int(data["size_multiple"]))

    def metadata_model(self) -> MetadataOnly:
        """The metadata properties as a model holds them (what the readers of stored
        preprocessing and labels look at)."""
        return MetadataOnly.of(self.metadata)


class RowRunner(Runner):
    """A ``Runner`` for a model that runs at batch 1 only: a batch of inputs is run one row
    at a time (every input whose batch axis is declared free is cut into rows, but one of a
    single row; the others are fed whole) and the outputs are stacked."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        free = {i.name for i in self.session.get_inputs()
                if i.shape and not isinstance(i.shape[0], int)}
        rows = {len(v) for k, v in feeds.items() if k in free and len(v) != 1}
        if len(rows) != 1:
            return super().run(feeds)
        n = rows.pop()
        run = super().run
        # an input of one row (target weights for every input) goes whole to every run
        cut = {k for k, v in feeds.items() if k in free and len(v) == n}
        outs = [run({k: v[i:i + 1] if k in cut else v for k, v in feeds.items()})
                for i in range(n)]
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


def activation_bytes(model: LoadedModel, layer: str) -> int:
    """Upper bound of activation bytes per path point: every forward tensor once, plus the
    layer's gradient (onnxruntime reuses buffers, so real use is lower)."""
    total = 0
    for name, shape in model.shapes.items():
        itemsize = np.dtype(model.dtypes[name]).itemsize
        total += int(np.prod(shape)) * itemsize // model.probe_batch
    layer_bytes = int(np.prod(model.shapes[layer])) * 4 // model.probe_batch
    return total + 2 * layer_bytes


def read(model: LoadedModel, opts: TargetOptions) -> Reading:
    """How the explainer reads the model's output: the kind (flag, metadata, pattern) and the
    head it puts on it (``targets.read_output``); an integer output is refused first."""
    from .grad.heads import check_scores_output
    from .graph.load import is_float
    from .targets import read_output

    if not is_float(model.dtypes.get(model.output)):
        check_scores_output(model, model.output)  # says which output is class scores, if any
    return read_output(model, model.output, opts)


def seed_rows(reading: Reading, opts: TargetOptions) -> tuple[int, int] | None:
    """A detection head's rows for the fused model's top-1 seed (``seed_rows_of``)."""
    from .targets.detection import seed_rows_of

    return seed_rows_of(reading.output, opts) if reading.kind == "detection" else None


def _reading_record(reading: Reading) -> dict[str, Any]:
    return {"kind": reading.kind, "score": reading.head.transform, "note": reading.note,
            "line": reading.line(), "head": reading.head.record(),
            "output": reading.output.record()}


#: The note of a model whose input size nothing names (``Prepared.free_size``).
FREE_SIZE_NOTE = ("the model's input height and width are dynamic and nothing names them: "
                  "each image is explained at its own size rounded to a multiple of {m} (one "
                  "prepared model per size, packing only within a size; pass --size HxW for one "
                  "size)")


def _warnings(model: LoadedModel, multiple: int) -> list[str]:
    """What loading chose that the user should hear of, as note lines (a dynamic size fixed
    by default, an integer input read after its Cast, a batch that stays 1); for a model of
    free size, that each image is explained at its own size instead."""
    from .graph.load import BATCH_ONE_NOTE

    notes = [n for n in model.notes
             if "pass --size" in n or "cast to" in n or n.startswith(BATCH_ONE_NOTE)]
    if model.free_size:
        notes = [n for n in notes if "pass --size" not in n] + [FREE_SIZE_NOTE.format(m=multiple)]
    return [f"note: {n}" for n in notes]


def build(source: ModelSource, layer: str | None, score: str | None, *,
          output: str | None = None, size: tuple[int, int] | None = None,
          hint: LayerHint | None = None, target: TargetOptions | None = None,
          on_demand: bool = True) -> Prepared:
    """Load, probe and differentiate the model (what a cache miss costs); ``output`` and
    ``size`` as ``load_model`` takes them, ``hint`` as ``view_layer``; ``score`` and
    ``target`` (its kind, the detection layout) as ``targets.read_output`` takes them (None:
    detected)."""
    from .grad import fused_model
    from .graph import load_model, view_layer
    from .graph.layers import size_multiple
    from .graph.load import is_float

    model = load_model(source, size=size, output=output)
    if len(model.input_names) != 1:
        raise OrtCamError(f"the model has {len(model.input_names)} inputs; "
                          "ort_cam explains single-input image classifiers")
    name = model.input_names[0]
    if not is_float(model.dtypes.get(name)):
        raise OrtCamError(f"input {name!r} is {np.dtype(model.dtypes[name]).name} and the model "
                          "does not cast it to float first; ort_cam needs a float input to "
                          "walk a path between two images")
    metadata = {p.key: p.value for p in model.proto.metadata_props}
    layer = layer or metadata.get(LAYER_KEY)
    if not layer:
        raise OrtCamError("no layer given and none stored in the model; pass a layer "
                          "(`ort-cam layers MODEL` lists them)")
    model, view = view_layer(model, layer, hint)
    tensor, axis = view.tensor, view.channel_axis
    reading = read(model, replace(target or TargetOptions(), score=score))
    fused = fused_model(model, tensor, reading.head, output=model.output, top1_seed=True,
                        rows=seed_rows(reading, target or TargetOptions()), on_demand=on_demand)
    try:
        fused_bytes: bytes | None = fused.SerializeToString()
    except Exception:  # past protobuf's 2 GB: the session goes through a file
        fused_bytes = None
    cast = model.cast_inputs.get(name)
    multiple = size_multiple(model) if model.free_size else 1
    return Prepared(
        fused_bytes=fused_bytes, layer=tensor, channel_axis=axis, input_name=name,
        input_shape=[d if isinstance(d, int) else None for d in model.graph.inputs[0].shape or []],
        input_dtype=np.dtype(model.dtypes.get(name, np.float32)).str,
        layer_shape=[int(d) for d in model.shapes[tensor]],
        sample_bytes=activation_bytes(model, tensor), metadata=metadata, loaded=model,
        fused=fused, cast_input=None if cast is None else cast.name,
        warnings=_warnings(model, multiple), reading=_reading_record(reading),
        batch_rows=model.batch_rows, free_size=model.free_size, size_multiple=multiple)


def key_fields(digest: str, layer: str | None, score: str | None, *,
               output: str | None = None, size: tuple[int, int] | None = None,
               hint: LayerHint | None = None, target: TargetOptions | None = None,
               on_demand: bool = True) -> dict[str, Any]:
    """What a cache entry is keyed by (any change is a miss): of the target, what its head is
    built from (the kind, the detection layout and objectness)."""
    t = target or TargetOptions()
    return {"format": FORMAT, "model_sha256": digest, "layer": layer, "score": score,
            "target_kind": t.kind,
            "target_head": [t.layout, t.objectness, *(["iou"] if t.box_iou else []),
                            *([t.boxes_output, t.box_format] if t.boxes_output else [])],
            "output": output, "input_shapes": None if size is None else [int(v) for v in size],
            "on_demand": on_demand,
            "layer_view": None if hint is None else hint.record(),
            "rule_switches": rule_switches(),
            "ort_cam": __version__, "onnx": onnx_version(), "onnxruntime": ort.__version__}


def onnx_version() -> str:
    """The installed onnx's version, read without importing onnx."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnx")
    except PackageNotFoundError:  # an onnx not installed as a distribution
        import onnx

        return str(onnx.__version__)


def prepared_model(source: ModelSource, layer: str | None, score: str | None, *,
            use_cache: bool = True, output: str | None = None,
            size: tuple[int, int] | None = None, hint: LayerHint | None = None,
            target: TargetOptions | None = None,
            session: dict[str, Any] | None = None, on_demand: bool = True) -> Prepared:
    """The prepared model: from the cache when an entry matches, else built (and stored).
    With ``session`` (a session context, ``ort_cam.optimized.context``): the entry of the
    model optimised for it when the cache holds one (``Prepared.session_bytes``), read alone.
    ``on_demand`` False: a map is computed at every point (``grad.tail``; the export's Loop
    runs the fused model so)."""
    where = cache.cache_dir()
    digest = remembered_digest(source, where) if use_cache else None
    options: dict[str, Any] = {"output": output, "size": size, "hint": hint,
                               "target": target, "on_demand": on_demand}
    if digest is None:
        return build(source, layer, score, **options)
    fields = key_fields(digest, layer, score, **options)
    keys = [({**fields, "session": session}, False)] if session is not None else []
    for key, payload_is_fused in [*keys, (fields, True)]:
        entry = cache.read(where, key)
        if entry is not None:
            try:
                found = Prepared.from_record(entry.data, entry.payload if payload_is_fused
                                             else None)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # an entry from a foreign writer: rebuilt below
            found.session_bytes = None if payload_is_fused else entry.payload
            found.key = fields
            return found
    prepared = build(source, layer, score, **options)
    prepared.key = fields
    blob = prepared.fused_bytes
    if blob is not None:  # stored while the caller goes on
        cache.write_soon(where, fields, prepared.record(), lambda: blob)
    return prepared
