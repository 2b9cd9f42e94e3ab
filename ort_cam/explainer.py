"""The public entry point: ``Explainer(model, layer).explain(image)``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from .baselines import make_baseline
from .engine import PathResult, ReducerFactory, check_finite, chunk_size, walk_path
from .errors import InputError, OrtCamError
from .grad import fused_model
from .graph import load_model, spatial_layer
from .graph.load import PROBE_BATCH
from .maps import is_dark, normalize, upsample
from .methods import METHODS, MethodOptions, default_methods, reporting
from .preprocess import Preprocess, load_image, resolve_preprocess
from .result import COMPLETENESS_GAP, DEFAULT_STEPS, Explanation, MethodResult
from .runtime import Runner, make_session, select_providers

LABELS_KEY = "ort_cam.labels"
LAYER_KEY = "ort_cam.layer"
DEFAULT_BUDGET = 1 << 30


def _metadata(model: onnx.ModelProto, key: str) -> str | None:
    return next((p.value for p in model.metadata_props if p.key == key), None)


def read_labels(source, model: onnx.ModelProto | None = None) -> list[str] | None:
    """Labels from a list, a text file (one per line) or a JSON list file; else the model's
    metadata (``ort_cam.labels``); else None."""
    if source is None:
        stored = _metadata(model, LABELS_KEY) if model is not None else None
        return list(json.loads(stored)) if stored else None
    if isinstance(source, (list, tuple)):
        return [str(s) for s in source]
    path = Path(source)
    if not path.is_file():
        raise OrtCamError(f"labels file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [str(s) for s in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def resolve_target(spec, scores: np.ndarray, labels: Sequence[str] | None) -> int:
    """Class index for ``spec``: None/"top1" (default), an index, "top:K" (K-th ranked, 1-based)
    or a label name."""
    n = scores.shape[-1]
    if spec is None or spec == "top1":
        return int(np.argmax(scores))
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.isdigit()):
        idx = int(spec)
        if not 0 <= idx < n:
            raise OrtCamError(f"target {idx} is out of range; the model has {n} classes")
        return idx
    if isinstance(spec, str) and spec.startswith("top:"):
        k = spec[4:]
        if not k.isdigit() or not 1 <= int(k) <= n:
            raise OrtCamError(f"bad target {spec!r}; use top:K with 1 <= K <= {n}")
        return int(np.argsort(-scores, kind="stable")[int(k) - 1])
    if isinstance(spec, str) and labels:
        lowered = [lab.lower() for lab in labels]
        if spec.lower() in lowered:
            return lowered.index(spec.lower())
        import difflib

        close = difflib.get_close_matches(spec, labels, n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise OrtCamError(f"unknown label {spec!r}{hint}")
    raise OrtCamError(f"bad target {spec!r}; use top1, a class index, top:K or a label name"
                      + ("" if labels else " (with a labels file)"))


class Explainer:
    """The CAM methods registered in ``METHODS`` for one (model, layer, score).

    The fused gradient model and its onnxruntime session are built once here and reused for
    every image.

    Args:
        model: path to an .onnx file, or a ModelProto.
        layer: tensor or node name inside the model (``ort-cam layers MODEL`` lists them);
            None takes the layer stored in the model's metadata (``ort_cam.layer``).
        preprocess: a ``Preprocess``, a preset name (imagenet, caffe, inception, raw), None
            (the model's stored preprocessing, else ``imagenet``), or a dict
            ``{"preset": name or None, <Preprocess field>: value, ...}`` of overrides.
        score: ``probability`` (softmax, default) or ``logit``.
        providers: None/"auto" (CUDA when usable, else CPU), "cpu", "cuda" or provider names.
        threads: intra-op threads (default: onnxruntime's choice).
        labels: class names (list or file); default: the model's metadata if present.
        memory_budget: bytes of activations per session run, which sets the chunk size.
        chunk_size: path points per run (overrides ``memory_budget``).
        quiet: do not print the provider line on stderr.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, layer: str | None = None, *,
                 preprocess: Preprocess | str | dict | None = None, score: str = "probability",
                 providers=None, threads: int | None = None, labels=None,
                 memory_budget: int = DEFAULT_BUDGET, chunk_size: int | None = None,
                 quiet: bool = False):
        t0 = time.perf_counter()
        self.model = load_model(model)
        if len(self.model.input_names) != 1:
            raise OrtCamError(f"the model has {len(self.model.input_names)} inputs; "
                              "ort_cam explains single-input image classifiers")
        layer = layer or _metadata(self.model.proto, LAYER_KEY)
        if not layer:
            raise OrtCamError("no layer given and none stored in the model; pass a layer "
                              "(`ort-cam layers MODEL` lists them)")
        self.layer, self.channel_axis = spatial_layer(self.model, layer)
        self.score_mode = score
        self.input_name = self.model.input_names[0]
        self.fused = fused_model(self.model, self.layer, score)
        self.providers, self.provider_line = select_providers(providers)
        if not quiet:
            print(self.provider_line, file=sys.stderr)
        self.session = make_session(self.fused, self.providers, threads)
        self.runner = Runner(self.session)
        width = self.session.get_outputs()[1].shape[1]
        if not isinstance(width, int):
            raise OrtCamError("cannot tell the number of classes of the model output")
        self.n_classes: int = width
        input_shape = [d if isinstance(d, int) else None
                       for d in self.model.graph.inputs[0].shape or []]
        self._input_shape = input_shape
        self.preprocess: Preprocess | None = None
        if len(input_shape) == 4:
            overrides = {}
            if isinstance(preprocess, dict):
                overrides = {k: v for k, v in preprocess.items() if k != "preset"}
                preprocess = preprocess.get("preset")
            self.preprocess = resolve_preprocess(self.model.proto, input_shape, preprocess,
                                                 **overrides)
        self.labels = read_labels(labels, self.model.proto)
        self.memory_budget = memory_budget
        self.fixed_chunk = chunk_size
        self._sample_bytes = self._activation_bytes()
        self.setup_seconds = time.perf_counter() - t0

    # --- sizes --------------------------------------------------------------------------
    def per_sample_bytes(self) -> int:
        """Upper bound of activation bytes per path point: every forward tensor once, plus the
        layer's gradient (onnxruntime reuses buffers, so real use is lower)."""
        return self._sample_bytes

    def _activation_bytes(self) -> int:
        total = 0
        for name, shape in self.model.shapes.items():
            itemsize = np.dtype(self.model.dtypes[name]).itemsize
            total += int(np.prod(shape)) * itemsize // PROBE_BATCH
        layer = int(np.prod(self.model.shapes[self.layer])) * 4 // PROBE_BATCH
        return total + 2 * layer

    def chunk_for(self, m: int) -> int:
        if self.fixed_chunk:
            return int(max(1, min(self.fixed_chunk, m + 1)))
        return chunk_size(self.per_sample_bytes(), m, self.memory_budget)

    # --- scores -------------------------------------------------------------------------
    def scores_at(self, x: np.ndarray) -> np.ndarray:
        """Class scores (the chosen score mode) for a batch of model inputs."""
        zeros = np.zeros((len(x), self.n_classes), np.float32)
        _, scores, _ = self.runner.run({self.input_name: x, "target_weights": zeros})
        return scores

    # --- explanation --------------------------------------------------------------------
    def explain(self, image, *, target=None, steps: int | str = DEFAULT_STEPS, baseline="black",
                methods: Sequence[str] | None = None, baseline_seed: int = 0,
                blur_radius: float | None = None, **options) -> Explanation:
        """Explain one image (path, PIL image or H×W×3 uint8 array) for one target with
        ``methods`` (default: the registry's default set)."""
        pre = self._need_preprocess()
        t0 = time.perf_counter()
        pixels = pre.resize_image(load_image(image))
        x = pre.normalize(pixels)
        check_finite(x, "the preprocessed image")
        x0 = make_baseline(baseline, pixels, x, pre, blur_radius=blur_radius, seed=baseline_seed)
        prep = time.perf_counter() - t0
        result = self.explain_array(x, baseline_array=x0, target=target, steps=steps,
                                    methods=methods, **options)
        result.pixels = pixels
        result.timings["preprocess"] = prep
        return result

    def explain_many(self, images: Iterable, *, targets=None, **kwargs) -> list[Explanation]:
        """Explain every image for every target in ``targets`` (one spec or a list of them;
        default top-1); results in image order, then target order."""
        specs = targets if isinstance(targets, (list, tuple)) else [targets]
        out = []
        for image in images:
            for spec in specs:
                out.append(self.explain(image, target=spec, **kwargs))
        return out

    def explain_array(self, x: np.ndarray, *, baseline_array, target=None,
                      steps: int | str = DEFAULT_STEPS, methods: Sequence[str] | None = None,
                      on_chunk=None, **options) -> Explanation:
        """Explain a model-space input ``x`` ([1, ...] or without the batch axis) against a
        model-space baseline (an array, or "zeros")."""
        t0 = time.perf_counter()
        x = self._batch1(x, "x")
        check_finite(x, "the input array")
        if isinstance(baseline_array, str) and baseline_array == "zeros":
            x0 = np.zeros_like(x)
        else:
            x0 = self._batch1(baseline_array, "baseline_array")
            if x0.shape != x.shape:
                raise InputError(f"baseline has shape {x0.shape[1:]} but the input has "
                                 f"{x.shape[1:]}; pass a baseline of the input's shape")
            check_finite(x0, "the baseline array")
        opts = MethodOptions.from_kwargs(**options)
        methods = _known_methods(methods)
        scores = self.scores_at(x)[0].astype(np.float64)
        c = resolve_target(target, scores, self.labels)
        path = self._walk(x, x0, c, scores.size, steps, methods, opts, on_chunk)
        size = self._spatial_size(x)
        results = {}
        for name in methods:
            up = upsample(path.raw[name], size)
            results[name] = MethodResult(name, path.raw[name], normalize(up, opts.eps),
                                         is_dark(up, opts.eps), path.extras[name])
        timings = dict(path.timings, total=time.perf_counter() - t0)
        return Explanation(
            target=c, label=self.labels[c] if self.labels and c < len(self.labels) else None,
            score=float(scores[c]), scores=scores, scores_path=path.scores_path,
            steps=path.m, methods=results, score_mode=self.score_mode, layer=self.layer,
            timings=timings,
        )

    def _walk(self, x, x0, c, n, steps, methods, opts, on_chunk) -> PathResult:
        run = lambda m, ms: _checked(walk_path(  # noqa: E731
            self.runner, self.input_name, x, x0, c, n, m, self.chunk_for(m),
            {name: _factory(name, opts) for name in ms}, self.channel_axis, on_chunk))
        if steps != "auto":
            if isinstance(steps, str) and not steps.isdigit():
                raise OrtCamError(f"steps must be a positive integer or 'auto' (got {steps!r})")
            return run(int(steps), methods)
        # the gap of a method asked for, else of the first registered one that reports it
        judge = next((name for name in methods if COMPLETENESS_GAP in METHODS[name].extras),
                     reporting(COMPLETENESS_GAP))
        if judge is None:
            raise OrtCamError("steps='auto' needs a method that reports a completeness gap; "
                              "none is registered, so pass an integer number of steps")
        inner = methods if judge in methods else [*methods, judge]
        m = opts.auto_start
        while True:
            path = run(m, inner)
            if path.extras[judge][COMPLETENESS_GAP] <= opts.auto_tolerance or m * 2 > opts.auto_max:
                break
            m *= 2
        if judge not in methods:
            path.raw.pop(judge)
            path.extras.pop(judge)
        return path

    # --- helpers ------------------------------------------------------------------------
    def _need_preprocess(self) -> Preprocess:
        if self.preprocess is None:
            raise OrtCamError("the model input is not an image batch [N,C,H,W]/[N,H,W,C]; "
                              "use explain_array with your own preprocessing")
        return self.preprocess

    def _batch1(self, x, what) -> np.ndarray:
        x = np.asarray(x)
        want = len(self._input_shape)
        if x.ndim == want - 1:
            x = x[None]
        if x.ndim != want or x.shape[0] != 1:
            raise InputError(f"{what} has shape {x.shape}; the model takes "
                             f"{['N', *self._input_shape[1:]]} (pass one input)")
        for i, d in enumerate(self._input_shape[1:], start=1):
            if d is not None and x.shape[i] != d:
                raise InputError(f"{what} has shape {list(x.shape)}; the model takes "
                                 f"{['N', *self._input_shape[1:]]}")
        dtype = np.dtype(self.model.dtypes.get(self.input_name, np.float32))
        return np.ascontiguousarray(x.astype(dtype))

    def _spatial_size(self, x: np.ndarray) -> tuple[int, int]:
        if self.preprocess is not None:
            layout = self.preprocess.layout
        else:
            layout = "NCHW"
        return (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])


def _known_methods(methods: Sequence[str] | None) -> list[str]:
    """``methods`` as a list (None: the registry's default set); unknown names refused."""
    names = list(default_methods() if methods is None else methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise OrtCamError(f"unknown method(s) {', '.join(unknown) or '(none)'}; "
                          f"use {', '.join(METHODS)}")
    return names


def _factory(name: str, opts: MethodOptions) -> ReducerFactory:
    """What the engine calls to build method ``name`` on its path state."""
    return partial(METHODS[name], options=opts)


def _checked(path: PathResult) -> PathResult:
    """``path``, after checking that every method reported exactly the extras it declares."""
    for name, values in path.extras.items():
        declared = METHODS[name].extras
        if sorted(values) != sorted(declared):
            raise OrtCamError(f"method {name!r} reported extras {sorted(values)} but declares "
                              f"{list(declared)}; make its finish() fill exactly those")
    return path
