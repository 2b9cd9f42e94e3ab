"""``export_explainer``: what can be exported is checked here, by name, before anything is built;
the model, layer and preprocessing are resolved by ``Explainer`` exactly as ``explain`` does."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields

import numpy as np
import onnx
from onnx import helper

from .._version import __version__
from ..baselines import make_baseline
from ..errors import OrtCamError
from ..explainer import DEFAULT_BUDGET, Explainer
from ..graph.digest import model_digest
from ..metadata_keys import LABELS_KEY, PREPROCESS_KEY
from ..methods import METHODS, MethodOptions, needs_path, resolve
from ..methods.ablation import AblationCam
from ..methods.eigencam import EigenCam, EigenGradCam
from ..methods.finercam import FinerCam
from ..methods.kpca import KpcaCam
from ..methods.layerig import LayerIntegratedGradients
from ..methods.scorecam import ScoreCam
from ..preprocess import Preprocess, load_image
from ..result import DEFAULT_STEPS, parse_steps
from .graph import Plan, build_graph
from .reductions import ONNX_REDUCTIONS, LayerDims, OnnxReduction

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


def _dims(ex: Explainer) -> LayerDims:
    shape = ex.model.shapes[ex.layer]
    k, h, w = (shape[1], shape[2], shape[3]) if ex.channel_axis == 1 else (
        shape[3], shape[1], shape[2])
    return LayerDims(int(k), int(h), int(w))


def _geometry(ex: Explainer, input_kind: str) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Model input shape (batch 1) and the maps' size; pixel input must be at model size."""
    shape = list(ex.model.graph.inputs[0].shape or [])
    if not all(isinstance(d, int) for d in shape[1:]):
        raise OrtCamError(f"the model input has dynamic dims {shape}; the explainer needs them "
                          "fixed")
    x_shape = (1, *(int(d) for d in shape[1:]))
    pre = ex.preprocess
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


def _plan(ex: Explainer, m: int, names: list[str], opts: MethodOptions, input_kind: str,
          baseline, seed: int, optional_inputs: bool) -> Plan:
    if input_kind not in INPUT_KINDS:
        raise OrtCamError(f"unknown input kind {input_kind!r}; use {', '.join(INPUT_KINDS)}")
    x_shape, size = _geometry(ex, input_kind)
    x_dtype = np.dtype(ex.model.dtypes.get(ex.input_name, np.float32))
    scores_type = ex.fused.graph.output[1].type.tensor_type.elem_type
    dims = _dims(ex)
    reductions: dict[str, OnnxReduction] = {n: ONNX_REDUCTIONS[n](opts, m, dims) for n in names}
    return Plan(
        fused=ex.fused, input_name=ex.input_name, channel_axis=ex.channel_axis,
        n_classes=ex.n_classes, m=m, chunk=ex.chunk_for(m), x_shape=x_shape, x_dtype=x_dtype,
        score_dtype=np.dtype(helper.tensor_dtype_to_np_dtype(scores_type)), dims=dims,
        out_size=size, input_kind=input_kind,
        pre=ex.preprocess if input_kind == "pixels" else None,
        baseline=_baseline(baseline, input_kind, ex.preprocess, x_shape, x_dtype, seed),
        reductions=reductions, eps=opts.eps, optional_inputs=optional_inputs)


def _stamp(proto: onnx.ModelProto, ex: Explainer, plan: Plan, sha: str, names: list[str],
           opts: MethodOptions, baseline) -> None:
    options = {k: v for k, v in asdict(opts).items() if k not in _AUTO_OPTIONS}
    meta = {
        "version": __version__, "source_sha256": sha, "layer": ex.layer, "steps": str(plan.m),
        "chunk": str(plan.chunk), "methods": json.dumps(names), "options": json.dumps(options),
        "score": ex.score_mode, "input": plan.input_kind,
        "baseline": baseline if isinstance(baseline, str) else "image",
        "optional_inputs": json.dumps(plan.optional_inputs),
    }
    props = [(META + k, v) for k, v in meta.items()]
    if ex.preprocess is not None:
        props.append((PREPROCESS_KEY, ex.preprocess.to_json()))
    if ex.labels:
        props.append((LABELS_KEY, json.dumps(ex.labels)))
    helper.set_model_props(proto, dict(props))


def export_explainer(model: str | os.PathLike | onnx.ModelProto, layer: str | None = None,
                     out: str | os.PathLike | None = None, *, steps: int | str = DEFAULT_STEPS,
                     methods=None, options: dict | None = None, preprocess=None,
                     score: str | None = None, input_kind: str = "pixels", baseline="black",
                     baseline_seed: int = 0, chunk_size: int | None = None,
                     memory_budget: int = DEFAULT_BUDGET,
                     optional_inputs: bool = True, cache: bool = True,
                     output: str | None = None, **layer_view) -> onnx.ModelProto:
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
        optional_inputs: ``target_index`` and ``baseline`` as inputs with defaults
            (onnxruntime's Python, C, C++, C# and Java APIs may omit or feed them; its
            JavaScript APIs can only omit them), else as required inputs.
        cache: use the prepared-model cache, as ``Explainer``'s.
        output: the model output to explain, as ``Explainer``'s.
        layer_view: ``layer_layout``, ``grid``, ``extra_tokens``, as ``Explainer`` takes them.
    """
    names, opts = _methods(methods), _options(options)
    m = _path_steps(_steps(steps), names)
    ex = Explainer(model, layer, preprocess=preprocess, score=score, providers="cpu",
                   quiet=True, chunk_size=chunk_size, memory_budget=memory_budget, cache=cache,
                   output=output, **layer_view)
    plan = _plan(ex, m, names, opts, input_kind, baseline, baseline_seed, optional_inputs)
    proto = build_graph(plan)
    _stamp(proto, ex, plan, model_digest(model, strict=True), names, opts, baseline)
    if out is not None:
        onnx.save(proto, os.fspath(out))
    return proto
