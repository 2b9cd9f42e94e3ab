"""``export_explainer``: what can be exported is checked here, by name, before anything is built;
the model, layer and preprocessing are resolved by ``ModelSetup`` exactly as ``Explainer`` resolves
them (no session is opened)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, fields

import numpy as np
import onnx
from onnx import helper

from .._version import __version__
from ..baselines import make_baseline
from ..engine import DEFAULT_BUDGET, RunSizes
from ..errors import OrtCamError
from ..graph.digest import model_digest
from ..metadata_keys import LABELS_KEY, PREPROCESS_KEY
from ..methods import METHODS, MethodOptions, needs_path, resolve
from ..methods.ablation import AblationCam
from ..methods.eigencam import EigenCam, EigenGradCam
from ..methods.finercam import FinerCam
from ..methods.kpca import KpcaCam
from ..methods.layerig import LayerIntegratedGradients
from ..methods.scorecam import ScoreCam
from ..model_setup import ModelSetup, class_count
from ..preprocess import Preprocess, load_image
from ..result import DEFAULT_STEPS, parse_steps
from ..target_choice import CLASS_KINDS, target_options
from ..targets import TargetOptions, kind_named
from .graph import Plan, build_graph
from .reductions import ONNX_REDUCTIONS, LayerDims, OnnxReduction
from .targets import GraphTarget

INPUT_KINDS = ("pixels", "tensor")
#: Metadata keys of the exported model all start with this.
META = "ort_cam.export."
#: MethodOptions fields that only ``steps="auto"`` reads.
_AUTO_OPTIONS = ("auto_tolerance", "auto_start", "auto_max")
_SVD = "an SVD, which standard ONNX has no op for"
#: Registered methods without an ONNX reduction -> why (each refusal names it and says this).
NOT_EXPORTABLE = {
    EigenCam.name: f"its map is the first principal component of A, which needs {_SVD}",
    EigenGradCam.name: f"its map is the first principal component of G ⊙ A, which needs {_SVD}",
    KpcaCam.name: "kernel PCA needs an eigendecomposition, which standard ONNX has no op for",
    AblationCam.name: "it runs the head once per channel (a second model in the graph)",
    ScoreCam.name: "it runs the whole model once per channel on masked inputs",
    FinerCam.name: "it needs a second gradient run at x with target weights from the scores",
    LayerIntegratedGradients.name: "it runs the head's gradient along a path in layer space "
                                   "(a second model)",
}
#: Options no ONNX reduction can express -> why.
_NOT_EXPRESSIBLE = {
    "eigen_smooth": f"the first principal component needs {_SVD}",
    "aug_smooth": "it explains six flipped and rescaled copies of the image and averages "
                  "their maps (six explainers in one graph)",
}


def exportable_methods() -> list[str]:
    """Registered methods that have an ONNX reduction."""
    return [name for name in METHODS if name in ONNX_REDUCTIONS]


def _steps(steps: int | str) -> int:
    m = parse_steps(steps)
    if isinstance(m, str):  # "auto"
        raise OrtCamError("steps='auto' cannot be exported: m is fixed in the graph; pass an "
                          "integer (the exported rsi_completeness_gap says if it is enough)")
    return m


def _path_steps(m: int, names: list[str]) -> int:
    """m, or 1 when no method asked for reads the path (each reads x alone, l = m): the graph
    then walks only x_0 and x, as the engine runs only x."""
    return m if needs_path(names) else 1


def _methods(methods) -> list[str]:
    names = resolve(methods)
    missing = [n for n in names if n not in ONNX_REDUCTIONS]
    why = [n for n in missing if n in NOT_EXPORTABLE]
    if why:
        raise OrtCamError(f"method {why[0]} cannot be exported: {NOT_EXPORTABLE[why[0]]}; "
                          f"exportable: {', '.join(exportable_methods())}")
    if missing:
        raise OrtCamError(f"method(s) {', '.join(missing)} have no ONNX reduction, so cannot be "
                          f"exported; exportable: {', '.join(exportable_methods())}")
    for n in names:
        declared = tuple(getattr(METHODS[n], "extras", ()) or ())
        if sorted(declared) != sorted(ONNX_REDUCTIONS[n].extras):
            raise OrtCamError(f"method {n!r} reports extras {list(declared)} but its ONNX "
                              f"reduction computes {list(ONNX_REDUCTIONS[n].extras)}")
    return names


def _options(options: dict | None) -> MethodOptions:
    """MethodOptions from ``options``; an option no ONNX reduction reads is refused by name
    unless it keeps its default."""
    opts = MethodOptions.from_kwargs(**(options or {}))
    expressed = {"eps"} | {k for cls in ONNX_REDUCTIONS.values()
                           for k in (*cls.options, *cls.reads)}
    default = MethodOptions()
    for f in fields(opts):
        if f.name in expressed or getattr(opts, f.name) == getattr(default, f.name):
            continue
        why = ("it belongs to steps='auto', which cannot be exported" if f.name in _AUTO_OPTIONS
               else _NOT_EXPRESSIBLE.get(f.name, "no ONNX reduction reads it"))
        raise OrtCamError(f"option {f.name} cannot be exported: {why}")
    return opts


def _baseline(kind, input_kind: str, pre: Preprocess | None, x_shape, x_dtype,
              seed: int) -> np.ndarray | None:
    """The default baseline, as the explainer's ``baseline`` input takes it (uint8 pixels or a
    model tensor); None for ``zeros`` with pixel input (x_0 = 0 in model space, no input)."""
    if isinstance(kind, str) and kind == "blur":
        raise OrtCamError("baseline blur cannot be exported (PIL's Gaussian blur is not an ONNX "
                          "op); blur the image yourself and feed it as the baseline input")
    if pre is None:
        if isinstance(kind, str) and kind == "zeros":
            return np.zeros(x_shape, x_dtype)
        raise OrtCamError("the model input is not an image, so only baseline zeros can be "
                          "exported")
    h, w = pre.size
    black = np.zeros((h, w, 3), np.uint8)
    if input_kind == "tensor":
        x = np.zeros(x_shape, x_dtype)
        return make_baseline(kind, black, x, pre, seed=seed).astype(x_dtype).reshape(x_shape)
    if isinstance(kind, str) and kind in ("black", "zeros"):
        return black if kind == "black" else None
    if isinstance(kind, str) and kind == "noise":  # as baselines.make_baseline draws it
        return np.random.default_rng(seed).integers(0, 256, size=black.shape).astype(np.uint8)
    return pre.resize_image(load_image(kind))


def _dims(setup: ModelSetup) -> LayerDims:
    shape = setup.model.shapes[setup.prepared.layer]
    k, h, w = (shape[1], shape[2], shape[3]) if setup.prepared.channel_axis == 1 else (
        shape[3], shape[1], shape[2])
    return LayerDims(int(k), int(h), int(w))


def _geometry(setup: ModelSetup, input_kind: str) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Model input shape (batch 1) and the maps' size; pixel input must be at model size."""
    shape = list(setup.model.graph.inputs[0].shape or [])
    if not all(isinstance(d, int) for d in shape[1:]):
        raise OrtCamError(f"the model input has dynamic dims {shape}; the explainer needs them "
                          "fixed")
    x_shape = (1, *(int(d) for d in shape[1:]))
    pre = setup.preprocess
    layout = pre.layout if pre is not None else "NCHW"
    if len(x_shape) != 4:
        if input_kind == "pixels":
            raise OrtCamError("the model input is not an image batch; export with --input tensor")
        raise OrtCamError(f"the model input has shape {list(shape)}; maps need [N,C,H,W]/[N,H,W,C]")
    size = (x_shape[2], x_shape[3]) if layout == "NCHW" else (x_shape[1], x_shape[2])
    if input_kind == "pixels":
        assert pre is not None
        chans = x_shape[1] if layout == "NCHW" else x_shape[3]
        if chans != 3 or tuple(pre.size) != size:
            raise OrtCamError(f"pixel input needs an RGB model input of size {pre.size} "
                              f"({layout}); the model takes {list(shape)}: fix --size/--layout "
                              "or export with --input tensor")
    return x_shape, size


def _plan(setup: ModelSetup, m: int, chunk: int, names: list[str], opts: MethodOptions,
          input_kind: str, baseline, seed: int, optional_inputs: bool,
          unroll: bool = False, target: TargetOptions | None = None) -> Plan:
    if input_kind not in INPUT_KINDS:
        raise OrtCamError(f"unknown input kind {input_kind!r}; use {', '.join(INPUT_KINDS)}")
    x_shape, size = _geometry(setup, input_kind)
    prep, pre = setup.prepared, setup.preprocess
    x_dtype = np.dtype(setup.model.dtypes.get(prep.input_name, np.float32))
    scores = setup.fused.graph.output[1].type.tensor_type
    dims = _dims(setup)
    reductions: dict[str, OnnxReduction] = {n: ONNX_REDUCTIONS[n](opts, m, dims) for n in names}
    score_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(scores.elem_type))
    in_graph = _graph_target(setup, target or TargetOptions(), score_dtype)
    return Plan(
        fused=setup.fused, input_name=prep.input_name, channel_axis=prep.channel_axis,
        n_classes=_classes(setup) if in_graph is None else 0, m=m, chunk=chunk,
        x_shape=x_shape, x_dtype=x_dtype, score_dtype=score_dtype, dims=dims,
        out_size=size, input_kind=input_kind, pre=pre if input_kind == "pixels" else None,
        baseline=_baseline(baseline, input_kind, pre, x_shape, x_dtype, seed),
        reductions=reductions, eps=opts.eps, optional_inputs=optional_inputs, unroll=unroll,
        s_shape=(_classes(setup),) if in_graph is None else in_graph.s_shape, target=in_graph)


def _dims_of(setup: ModelSetup) -> list:
    dims = setup.fused.graph.output[1].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in dims]


def _classes(setup: ModelSetup) -> int:
    """C of the fused model's class scores [N, C], as a session of it would declare them."""
    return class_count(_dims_of(setup))


#: What the exported graph takes as inputs, not as export options (kind -> option -> input).
_FED = {"target": "target_index (or step for a sequence)", "mask": "target_mask",
        "box": "target_mask (a box's mask), anchors (matched on the host), or box (with "
               "--box-iou)",
        "anchors": "anchors", "concept": "concept", "weights": "target_weights",
        "step": "step", "top_k": "anchors (the host's NMS picks them)"}
#: The target options fixed at export (the head, and how W is picked by default).
_AT_EXPORT = ("threshold", "conf", "iou", "objectness", "layout", "blank", "boxes_output",
              "box_format", "box_iou")


def _check_target_options(kind: str, opts: TargetOptions) -> None:
    """Refuse a value the explainer takes as an input at run time, and one the kind does
    not read."""
    given = [*opts.given(), *(["target"] if opts.target is not None else [])]
    later = [name for name in given if name not in _AT_EXPORT and name not in _FED]
    if later:
        raise OrtCamError(f"--{later[0].replace('_', '-')} cannot be exported yet; explain "
                          "with `ort-cam explain` (the explainer's graph reads one output)")
    fed = [name for name in given if name not in _AT_EXPORT]
    if fed:
        raise OrtCamError(f"--{fed[0].replace('_', '-')} is not fixed at export: the "
                          f"explainer takes it at run time as its input {_FED[fed[0]]}")
    kind_named(kind).accepts(opts)


def _graph_target(setup: ModelSetup, opts: TargetOptions, dtype: np.dtype
                  ) -> GraphTarget | None:
    """The in-graph target of a kind other than class and binary (None for those)."""
    prep = setup.prepared
    _check_target_options(prep.kind, opts)
    if prep.kind in CLASS_KINDS:
        return None
    dims = _dims_of(setup)[1:]
    if not all(isinstance(d, int) for d in dims):
        raise OrtCamError(f"the target's scores have dynamic dims {dims}; export a model "
                          "whose output shape is fixed past the batch axis")
    out, s_shape = prep.output_info, tuple(int(d) for d in dims)
    if prep.kind == "sequence" and not 0 <= opts.blank < s_shape[1]:
        raise OrtCamError(f"--blank {opts.blank} is out of range; the vocabulary has "
                          f"{s_shape[1]} tokens")
    n = kind_named(prep.kind).n_labels(out, opts)
    labels = setup.labels(None, n) if n else None
    return GraphTarget(prep.kind, out, s_shape, dtype, opts,
                       tuple(labels) if labels else None)


def _stamp(proto: onnx.ModelProto, setup: ModelSetup, plan: Plan, sha: str, names: list[str],
           opts: MethodOptions, baseline) -> None:
    options = {k: v for k, v in asdict(opts).items() if k not in _AUTO_OPTIONS}
    meta = {
        "version": __version__, "source_sha256": sha, "layer": setup.prepared.layer,
        "steps": str(plan.m), "chunk": str(plan.chunk), "methods": json.dumps(names),
        "options": json.dumps(options), "score": setup.prepared.score,
        "target_kind": setup.prepared.kind, "input": plan.input_kind,
        "baseline": baseline if isinstance(baseline, str) else "image",
        "optional_inputs": json.dumps(plan.optional_inputs), "unroll": json.dumps(plan.unroll),
    }
    props = [(META + k, v) for k, v in meta.items()]
    if setup.preprocess is not None:
        props.append((PREPROCESS_KEY, setup.preprocess.to_json()))
    if plan.target is not None:
        props.append((META + "target", json.dumps(plan.target.record())))
    labels = (setup.labels(None, plan.n_classes) if plan.target is None
              else list(plan.target.labels or ()))
    if labels:
        props.append((LABELS_KEY, json.dumps(labels)))
    helper.set_model_props(proto, dict(props))


def export_explainer(model: str | os.PathLike | onnx.ModelProto, layer: str | None = None,
                     out: str | os.PathLike | None = None, *, steps: int | str = DEFAULT_STEPS,
                     methods=None, options: dict | None = None, preprocess=None,
                     score: str | None = None, input_kind: str = "pixels", baseline="black",
                     baseline_seed: int = 0, chunk_size: int | None = None,
                     memory_budget: int = DEFAULT_BUDGET,
                     optional_inputs: bool = False, unroll: bool = False, cache: bool = True,
                     output: str | None = None, target_kind: str | None = None,
                     target: TargetOptions | Mapping | None = None,
                     **layer_view) -> onnx.ModelProto:
    """The whole explainer as one ONNX model: one ``run()`` of any onnxruntime gives what
    ``Explainer.explain`` gives (README "From any language" lists inputs and outputs).

    Args:
        model, layer, preprocess, score: as ``Explainer`` takes them (layer and preprocessing
            default to the model's metadata).
        out: where to save the model (optional).
        steps: m (an integer: ``auto`` cannot be exported; 1 when no method asked for reads
            the path); methods, options: as ``explain``.
        input_kind: ``pixels`` (uint8 [H, W, 3] RGB at the model's input size, preprocessing
            in the graph) or ``tensor`` (the model's own input, batch 1).
        baseline: black, zeros, noise (with ``baseline_seed``) or an image: the default of the
            ``baseline`` input (blur is refused).
        chunk_size, memory_budget: path points per Loop iteration, as ``Explainer``'s.
        optional_inputs: give ``target_index`` and ``baseline`` defaults as initializers
            under their names (onnxruntime's Python, C, C++, C# and Java APIs may then omit
            them; OpenVINO folds them into constants and onnxruntime's JavaScript APIs cannot
            feed them). By default they are plain inputs that every engine can feed:
            ``target_index`` −1 = the top-1 class, a ``baseline`` with no rows ([0, W, 3], or
            [0, ...] of the model's input) = the default baseline.
        unroll: the path's Loop unrolled into one copy of the gradient graph per chunk, for
            engines without Loop (tract).
        cache: use the prepared-model cache, as ``Explainer``'s.
        output: the model output to explain, as ``Explainer``'s.
        target_kind, target: what the output is read as, as ``Explainer`` takes them
            (default: detected); for a kind other than class and binary the explainer takes
            the target's values as inputs (``export.targets``: a mask, a concept, anchors,
            a step, weights), and ``target`` holds only what is fixed at export (detection:
            ``layout``, ``objectness``, ``conf``; a one-channel map's ``threshold``; a
            sequence's ``blank``).
        layer_view: ``layer_layout``, ``grid``, ``extra_tokens``, as ``Explainer`` takes them.
    """
    names, opts = _methods(methods), _options(options)
    m = _path_steps(_steps(steps), names)
    topts = target_options(target, target_kind)
    # a map with a linear tail is computed on demand (grad.tail): only at the Loop's first
    # iteration, the run of x (graph.Plan.on_demand)
    setup = ModelSetup.resolve(model, layer, preprocess=preprocess, score=score, cache=cache,
                               output=output, size=None, target=topts, **layer_view)
    chunk = RunSizes(setup.prepared.sample_bytes, memory_budget, chunk_size).chunk(m)
    plan = _plan(setup, m, chunk, names, opts, input_kind, baseline, baseline_seed,
                 optional_inputs, unroll, topts)
    proto = build_graph(plan)
    _stamp(proto, setup, plan, model_digest(model, strict=True), names, opts, baseline)
    if out is not None:
        onnx.save(proto, os.fspath(out))
    return proto
