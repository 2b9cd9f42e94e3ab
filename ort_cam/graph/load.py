"""Loading a model: read it (external data too), bring it to a usable opset, free its batch
axis, fold constants, and record every tensor's shape from one onnxruntime run."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import helper, version_converter

from ..errors import ModelLoadError
from ..runtime import probe_session
from .batch import agreement, fixed_batch_one, free_batch
from .inputs import (
    exporter_size,
    float16_to_float32,
    float_after_cast,
    has_dynamic_hw,
    image_input,
    size_shapes,
    stored_size,
)

#: The gradient graph needs ScatterElements(reduction="add"), which arrived in opset 16.
MIN_OPSET = 16
#: Batch size of the shape probe: 2, so that a broadcast dim (1) never looks like the batch.
PROBE_BATCH = 2
#: Largest difference between the outputs of a batch of two different inputs and those of
#: the two inputs run one at a time (relative to each output's largest magnitude) for a
#: model exported with a fixed batch of 1 to count as taking any batch once rewritten. What
#: separates them when the rewrite is right is float32 rounding in kernels that sum in another
#: order at another batch: 0 to 2.5e-7 over the models of tests/test_shipped_models.py (the
#: most: levit_128s), so this is a margin of 400x; a wrong rewrite mixes samples or drops one,
#: off by O(1).
BATCH_TOLERANCE = 1e-4
#: What the size of an input whose height and width nothing names is said to be.
DEFAULT_SIZE = "the default for a dynamic size"
#: Size given to a dynamic height/width of a rank-4 input when the caller names none.
DEFAULT_SPATIAL = 224
#: The start of the note of a model that runs at batch 1 only, and what that costs.
BATCH_ONE_NOTE = "the batch of this model cannot be made dynamic"
BATCH_ONE_COST = ("every path point is a session run of its own (batch 1): 1.2x to 1.5x the "
                  "time of batched runs on the CPU (tools/bench_batch.py)")
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error text without its C++ source location, on one line."""
    text = " ".join(str(exc).split())
    text = re.sub(r"/onnxruntime_src/.*\) ", "", text)
    return text[:300]


def read_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Read an ONNX file (with its external data) or copy a ModelProto. External data is read
    only from files inside the model's folder, reached without a symbolic link; a ModelProto
    must hold its tensors in memory. The result refers to no external data, so a model ort_cam
    saves writes its tensors only where ort_cam names them."""
    if isinstance(source, onnx.ModelProto):
        model = copy.deepcopy(source)
        refs = external_data_files(model)
        if refs:
            name, location = refs[0]
            raise ModelLoadError(
                f"the ModelProto keeps tensor {name!r} in an external file ({location!r}), which "
                "an in-memory model cannot locate; pass the model's path, or onnx.load(path) it"
            )
        return model
    path = Path(source)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf errors come in many types
        raise ModelLoadError(
            f"cannot read {path} as ONNX ({_first_line(exc)}); check that it is a complete "
            ".onnx file"
        ) from exc
    if external_data_files(model, path):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # a missing, short or unreadable data file
            raise ModelLoadError(
                f"cannot read the external data of {path} ({_first_line(exc)}); keep each "
                "data file beside the model, as it was saved"
            ) from exc
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def external_data_files(model: onnx.ModelProto,
                        path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor ``model`` keeps in an external file. With the
    ``path`` the model was read from, each location is checked to name a file inside the
    model's folder, reached without a symbolic link (``../secret.bin``, an absolute path or a
    link pointing out would let a model file read any file): ModelLoadError otherwise."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    found = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            found.append((tensor.name, location))
            if path is not None:
                _check_inside(Path(path), tensor.name, location)
    return found


def _check_inside(path: Path, tensor: str, location: str) -> None:
    folder = path.parent
    where = f"{path}: tensor {tensor!r} keeps its data in {location!r}"
    parts = Path(location).parts
    if Path(location).is_absolute() or ".." in parts:
        raise ModelLoadError(
            f"{where}, outside the model's folder {folder}; ort_cam reads external data only "
            "from the model's folder: put the data file beside the model and give its location "
            "as the bare file name"
        )
    for i in range(1, len(parts) + 1):
        if (folder.joinpath(*parts[:i])).is_symlink():
            raise ModelLoadError(
                f"{where}, a symbolic link ({folder.joinpath(*parts[:i])}); ort_cam does not "
                f"follow links to external data (one could point anywhere): copy the data file "
                f"into {folder} in place of the link"
            )
    if not (folder / location).resolve().is_relative_to(folder.resolve()):
        raise ModelLoadError(f"{where}, outside the model's folder {folder}; put the data "
                             "file beside the model")


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ('' / ai.onnx) domain."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelLoadError("the model imports no default ONNX opset; it is not a standard model")


def upgrade_opset(model: onnx.ModelProto, target: int = MIN_OPSET) -> tuple[onnx.ModelProto, str]:
    """Convert the model to ``target`` when its opset is older; returns (model, what was done)."""
    version = default_opset(model)
    if version >= target:
        return model, f"opset {version}"
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot convert the model from opset {version} to {target} ({exc}); "
            f"re-export it with opset >= {target}"
        ) from exc
    return converted, f"opset {version} converted to {target}"


def _free_batch_axis(graph: gs.Graph) -> None:
    """Make axis 0 of inputs/outputs symbolic (a model with a fixed batch of 1 then needs
    ``_batch_of_one``)."""
    for t in list(graph.inputs) + list(graph.outputs):
        if t.shape and len(t.shape) >= 1 and isinstance(t.shape[0], int):
            t.shape = ["N", *t.shape[1:]]
    # Stale intermediate shapes would fight the new batch axis; ORT re-infers them.
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t not in graph.inputs and t not in graph.outputs:
            t.shape = None


def _pin_input_dims(graph: gs.Graph, input_shapes: dict | None) -> list[str]:
    """Give every dynamic non-batch input dim a concrete size, fixed in the graph inputs: the
    probed shapes are baked into the gradient graphs, so the models we write must declare them.
    ``input_shapes`` maps an input name to its per-sample shape (without the batch axis);
    otherwise a dynamic dim of a rank-4 input gets ``DEFAULT_SPATIAL``."""
    input_shapes = dict(input_shapes or {})
    unknown = set(input_shapes) - {t.name for t in graph.inputs}
    if unknown:
        raise ModelLoadError(
            f"input_shapes names {sorted(unknown)}, but the model's inputs are "
            f"{[t.name for t in graph.inputs]}"
        )
    notes = []
    for inp in graph.inputs:
        if not inp.shape:
            continue
        rest = list(inp.shape[1:])
        given = input_shapes.get(inp.name)
        if given is not None:
            given = [int(d) for d in given]
            fits = len(given) == len(rest) and all(
                not (isinstance(d, int) and d > 0) or d == g for d, g in zip(rest, given))
            if not fits:
                raise ModelLoadError(
                    f"input_shapes[{inp.name!r}] = {given} does not fit the input's shape "
                    f"{list(inp.shape)} (give the shape without the batch axis)"
                )
            new = given
        elif len(inp.shape) == 4:
            new = [d if isinstance(d, int) and d > 0 else DEFAULT_SPATIAL for d in rest]
        else:
            continue
        if new != rest:
            inp.shape = [inp.shape[0], *new]
            notes.append(f"input {inp.name!r} has dynamic dims; fixed to {['N', *new]}"
                         + ("" if given is not None else
                            " (pass --size HxW, or size= or input_shapes= in the API)"))
    return notes


def probe_inputs(graph: gs.Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the graph's input shapes, with ``batch`` on symbolic dims."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in graph.inputs:
        shape = [d if isinstance(d, int) and d > 0 else batch for d in (inp.shape or [])]
        if shape:
            shape[0] = batch
        dtype = np.dtype(inp.dtype) if inp.dtype is not None else np.dtype(np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


@dataclass
class LoadedModel:
    """A model ready for splitting and differentiation.

    Attributes:
        proto: the model with a free batch axis and folded constants.
        graph: the same as an onnx-graphsurgeon graph (do not mutate; copy first).
        shapes: every tensor's shape as seen in one run with batch ``PROBE_BATCH``.
        dtypes: every tensor's NumPy dtype from that run.
        opset: the default-domain opset after any conversion.
        notes: what loading did (conversion, batch freeing), for the user.
        cast_inputs: integer inputs replaced by the float output of their Cast, with their
            integer dtype (``inputs.float_after_cast``).
        chosen_output: the output to explain, when one was chosen (``output``).
        batch_axes: the axes of each tensor whose size is the batch's, where the model
            computes shapes at run time (from two probe runs; empty when it does not).
        viewed: token layers this model shows as grids (``view.grid_view``): name -> (grid,
            extra tokens); ``proto`` is then the model before that rewrite.
        hints: what callers said about layers (``layers.LayerHint`` by tensor), kept so that
            later steps on this model resolve the layer the same way.
        probe_batch: the batch of the probe run that gave ``shapes``: ``PROBE_BATCH``, or 1
            for a model that runs at batch 1 only (``batch_rows``).
        free_size: the image input's height and width are dynamic and nothing named them
            (no size given, none in the metadata): they are ``DEFAULT_SPATIAL``.
    """

    proto: onnx.ModelProto
    graph: gs.Graph
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    opset: int
    notes: list[str] = field(default_factory=list)
    cast_inputs: dict[str, np.dtype] = field(default_factory=dict)
    chosen_output: str | None = None
    batch_axes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    viewed: dict[str, tuple[tuple[int, int], int]] = field(default_factory=dict)
    hints: dict[str, object] = field(default_factory=dict)
    probe_batch: int = PROBE_BATCH
    free_size: bool = False

    @property
    def batch_rows(self) -> bool:
        """Whether the model runs at batch 1 only: its batched runs must go row by row."""
        return self.probe_batch == 1

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.graph.outputs]

    @property
    def output(self) -> str:
        """The output explained: the one chosen when loading, else the first."""
        return self.chosen_output or self.output_names[0]


def probe_shapes(model: onnx.ModelProto, graph: gs.Graph, batch: int = PROBE_BATCH
                 ) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    """Run the model once on random input with every tensor exposed; shapes and dtypes."""
    try:
        values = probe_values(model, probe_inputs(graph, batch))
    except Exception as exc:
        raise ModelLoadError(
            f"onnxruntime cannot run the model with batch {batch} ({ort_message(exc)})"
        ) from exc
    shapes = {name: tuple(int(d) for d in v.shape) for name, v in values.items()}
    return shapes, {name: v.dtype for name, v in values.items()}


def probe_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray], every: bool = True
                 ) -> dict[str, np.ndarray]:
    """One run of ``model`` on ``feeds``: the value of every tensor a node computes (of the
    outputs alone when not ``every``), by name."""
    names = []
    if every:
        have = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for out in node.output:
                if out and out not in have:
                    names.append(out)
                    have.add(out)
    sess = _probe_session(model, names)
    outs = sess.run(None, feeds)
    return {meta.name: np.asarray(value)
            for meta, value in zip(sess.get_outputs(), outs, strict=True)}


def _probe_session(model: onnx.ModelProto, outputs: list[str]) -> ort.InferenceSession:
    """A session of ``model`` with ``outputs`` added. Serialised once, without a copy: protobuf
    merges concatenated messages, so the model's bytes followed by those of a model holding
    only the extra graph outputs parse as the model with those outputs appended."""
    extra = onnx.ModelProto()
    extra.graph.output.extend([onnx.ValueInfoProto(name=n) for n in outputs])
    try:
        data = model.SerializeToString()
    except Exception:  # past protobuf's 2 GB: a copy, spilled to a file with external data
        probe = copy.deepcopy(model)
        probe.graph.output.extend(extra.graph.output)
        return probe_session(probe)
    return probe_session(data + extra.SerializeToString())


def min_ir_version(opsets: Sequence[onnx.OperatorSetIdProto]) -> int:
    """The least IR version the standard domains among ``opsets`` need; custom domains
    (com.microsoft, a vendor's own) say nothing about it and are left out."""
    return int(helper.find_min_ir_version_for(list(opsets), ignore_unknown=True))


def _export(graph: gs.Graph, ir_version: int) -> onnx.ModelProto:
    proto = gs.export_onnx(graph, do_type_check=False)
    # onnx may stamp an IR version newer than onnxruntime reads; the opset decides what we need.
    proto.ir_version = min(ir_version, min_ir_version(proto.opset_import))
    return proto


def _fold_static_shapes(graph: gs.Graph, ir_version: int) -> dict[str, tuple[int, ...]]:
    """Fold shape arithmetic on dims that do not depend on the batch.

    Freeing the batch axis leaves intermediate shapes unknown, and ONNX shape inference cannot
    recover them past a Reshape to -1 with a symbolic batch (ShuffleNet's channel shuffle), so
    e.g. ``Shape -> Gather(channels) -> Div -> Slice`` (``x.chunk(2, dim=1)``) stays a run-time
    computation and the Slice cannot be differentiated. Two probe runs with different batch
    sizes tell which dims are static; with those shapes set, graphsurgeon folds such chains.
    Returns the axes that changed with the batch, per tensor (what ``split`` needs to rebuild
    a shape tensor for another batch).
    """
    if not any(node.op in ("Shape", "Size") for node in graph.nodes):
        return {}
    proto = _export(graph, ir_version)
    try:
        one, _ = probe_shapes(proto, graph, PROBE_BATCH)
        two, _ = probe_shapes(proto, graph, PROBE_BATCH + 1)
    except ModelLoadError:
        return {}  # load_model's own probe reports why the model does not run
    batch_axes = {name: tuple(i for i, (x, y) in enumerate(zip(a, two[name])) if x != y)
                  for name, a in one.items() if name in two and len(a) == len(two[name])}
    inner = [t for t in graph.tensors().values()
             if isinstance(t, gs.Variable) and t not in graph.inputs and t not in graph.outputs]
    for t in inner:
        a, b = one.get(t.name), two.get(t.name)
        if a is not None and b is not None and len(a) == len(b):
            t.shape = [x if x == y else f"{t.name}:{i}" for i, (x, y) in enumerate(zip(a, b))]
    graph.fold_constants(error_ok=True).cleanup().toposort()
    for t in graph.tensors().values():  # as after _free_batch_axis: ORT re-infers them
        if isinstance(t, gs.Variable) and t not in graph.inputs and t not in graph.outputs:
            t.shape = None
    return batch_axes


def _batch_of_one(graph: gs.Graph, ir_version: int, chosen: str | None
                  ) -> tuple[gs.Graph, int, str]:
    """A model exported with a fixed batch of 1 (its axis 0 already symbolic): the graph
    rewritten to take any batch (``batch.free_batch``) when a batch of two different inputs
    then gives what the two give one at a time (``BATCH_TOLERANCE``); else ``graph`` as it
    is, to be run at batch 1. Returns (graph, probe batch, a note for the user)."""
    reference = _export(graph, ir_version)
    feeds = probe_inputs(graph, PROBE_BATCH)
    rows = [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(PROBE_BATCH)]
    try:
        values = [probe_values(reference, rows[0])]
        values += [probe_values(reference, row, every=False) for row in rows[1:]]
    except Exception as exc:
        raise _refused(exc, graph, chosen) from exc
    shapes = {name: tuple(v.shape) for name, v in values[0].items()}
    shapes.update({name: tuple(v.shape) for name, v in rows[0].items()})
    outputs = [o.name for o in reference.graph.output]
    work = graph.copy()
    done = free_batch(work, shapes)
    try:
        batched = probe_values(_export(work, ir_version), feeds, every=False)
        diff, why = agreement([batched[n] for n in outputs],
                              [[v[n] for n in outputs] for v in values])
        if why is None and diff > BATCH_TOLERANCE:
            why = f"a batch of two inputs is off by {diff:.2g} (relative) from the two alone"
        elif why is not None:
            why = f"at batch 2, {why}"
    except Exception as exc:
        why = f"at batch 2: {ort_message(exc)}"
    if why is None:
        what = f"{len(done.rewritten)} batch-1 operands rewritten" if done.rewritten else \
            "no operand to rewrite"
        return work, PROBE_BATCH, (f"fixed batch of 1 made dynamic ({what}; verified: a batch "
                                   f"of 2 gives the batch-1 outputs to {diff:.1e})")
    lost = f"; the batch is lost at {done.lost}" if done.lost else ""
    return graph, 1, (f"{BATCH_ONE_NOTE} ({why[:160]}{lost}); {BATCH_ONE_COST}")


def _given_shapes(graph: gs.Graph, model: onnx.ModelProto, input_shapes: dict | None,
                  size: Sequence[int] | None) -> tuple[dict | None, list[str], str | None]:
    """``input_shapes``, else those that give the image input ``size``, else, when its height
    or width is dynamic, those of the size stored in the model's metadata (by ``ort-cam
    metadata``, else by its exporter: ``exported``). Also notes, and where the image input's
    size comes from (for an error that names it), None when from nowhere."""
    if input_shapes is not None:
        if size is not None:
            raise ModelLoadError("pass input_shapes or size, not both")
        return input_shapes, [], "input_shapes"
    if size is not None:
        h, w = (int(v) for v in size)
        return size_shapes(graph, size), [], f"--size {h}x{w}"
    if not has_dynamic_hw(graph):
        return None, [], None
    stored = stored_size(model)
    where = "the size stored in the model's metadata"
    found = exporter_size(model) if stored is None else None
    if found is not None:
        stored, key = found
        where = f"the input size its exporter stored in the model's metadata ({key})"
    if stored is None:
        return None, [], f"{DEFAULT_SPATIAL}x{DEFAULT_SPATIAL}, {DEFAULT_SIZE}"
    size_note = f"dynamic height and width set to {stored[0]}x{stored[1]}, {where}"
    return size_shapes(graph, stored, "the stored size"), [size_note], \
        f"{stored[0]}x{stored[1]}, {where}"


def _refused(exc: BaseException, graph: gs.Graph, chosen: str | None) -> ModelLoadError:
    """Why onnxruntime cannot run the model, in one line: the node that refuses it and, where
    the image input's size was chosen (by default, from metadata or by the caller), that size
    and ``--size``."""
    text = ort_message(exc)
    found = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
    op, name = found.groups() if found else (None, None)
    if found is None and (found := re.search(r"Node \(([^)]*)\) Op \((\w+)\)", text)):
        name, op = found.groups()
    node = f"node {name!r} ({op})" if name is not None else "a node"
    inp = image_input(graph)
    if chosen is None or inp is None:
        return ModelLoadError(f"onnxruntime cannot run the model on inputs of its own shapes: "
                              f"{node} refuses them ({text})")
    shape = ["N", *(inp.shape or [])[1:]]
    return ModelLoadError(
        f"onnxruntime cannot run the model with input {inp.name!r} at {shape} ({chosen}): "
        f"{node} refuses it ({text}); pass --size HxW (size= in the API) with a size the model "
        "takes")


def _probe_any_batch(proto: onnx.ModelProto, graph: gs.Graph, batch: int, chosen: str | None
                     ) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype], int, str | None]:
    """``probe_shapes`` at ``batch``; a model that declares a free batch but runs at batch 1
    only is probed at 1 (then the note that says so). Else ``_refused``."""
    try:
        return (*probe_shapes(proto, graph, batch), batch, None)
    except ModelLoadError as exc:
        cause = exc.__cause__ or exc
    if batch > 1:
        try:
            shapes, dtypes = probe_shapes(proto, graph, 1)
        except ModelLoadError:
            pass
        else:
            why = f"it declares a free batch, but at batch {batch}: {ort_message(cause)[:160]}"
            return shapes, dtypes, 1, f"{BATCH_ONE_NOTE} ({why}); {BATCH_ONE_COST}"
    raise _refused(cause, graph, chosen) from cause


def load_model(source: str | os.PathLike | onnx.ModelProto,
               input_shapes: dict[str, list[int]] | None = None, *,
               size: Sequence[int] | None = None, output: str | None = None) -> LoadedModel:
    """Read, upgrade, free the batch axis, fix dynamic non-batch dims (``input_shapes``: input
    name -> shape without the batch axis; or ``size`` = (height, width) of the image input;
    else the size stored in the model's metadata; else ``DEFAULT_SPATIAL``, with a note), fold
    constants and probe shapes. An integer input that the model casts to float is replaced by
    the Cast's output (``float_after_cast``). ``output``: the output to explain (default: the
    first; ``LoadedModel.output``)."""
    model = read_model(source)
    if not model.graph.node:
        raise ModelLoadError("the model has no nodes; check that it is a complete .onnx file")
    model, opset_note = upgrade_opset(model)
    model, precision_notes = float16_to_float32(model)
    notes = [opset_note, *precision_notes]
    try:
        graph = gs.import_onnx(model)
    except Exception as exc:
        raise ModelLoadError(f"cannot import the model's graph ({exc})") from exc
    cast_inputs, cast_notes = float_after_cast(graph)
    notes += cast_notes
    fixed_one = fixed_batch_one(graph)
    _free_batch_axis(graph)
    given, size_notes, chosen = _given_shapes(graph, model, input_shapes, size)
    notes += size_notes + _pin_input_dims(graph, given)
    graph.fold_constants(error_ok=True).cleanup().toposort()
    batch = PROBE_BATCH
    if fixed_one:
        graph, batch, batch_note = _batch_of_one(graph, model.ir_version, chosen)
        notes.append(batch_note)
    batch_axes = _fold_static_shapes(graph, model.ir_version) if batch > 1 else {}
    proto = _export(graph, model.ir_version)
    del proto.metadata_props[:]
    proto.metadata_props.extend(model.metadata_props)
    proto.doc_string = model.doc_string
    shapes, dtypes, batch, one_note = _probe_any_batch(proto, graph, batch, chosen)
    notes += [one_note] if one_note else []
    for inp in graph.inputs:
        shapes.setdefault(inp.name, tuple(probe_inputs(graph, batch)[inp.name].shape))
        dtypes.setdefault(inp.name, np.dtype(inp.dtype or np.float32))
    loaded = LoadedModel(proto, gs.import_onnx(proto), shapes, dtypes, default_opset(proto),
                         notes, cast_inputs, batch_axes=batch_axes, probe_batch=batch,
                         free_size=bool(chosen and chosen.endswith(DEFAULT_SIZE)))
    if output is not None and output not in loaded.output_names:
        raise ModelLoadError(f"unknown output {output!r}; the model's outputs are "
                             f"{', '.join(loaded.output_names)}")
    loaded.chosen_output = output
    return loaded


def is_float(dtype: np.dtype | None) -> bool:
    return dtype is not None and np.issubdtype(np.dtype(dtype), np.floating)
