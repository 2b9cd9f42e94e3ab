"""The public entry point: ``Explainer(model, layer).explain(image)``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np

from . import optimized
from .augment import AUGMENTATIONS, combine
from .engine import (
    DEFAULT_BUDGET,
    FusedModel,
    PathResult,
    RunSizes,
    SplitModel,
)
from .errors import OrtCamError
from .explain_items import (
    Item,
    Reading,
    Start,
    add_run_maps,
    class_index,
    class_starts,
    explanation,
    group_size,
    path_jobs,
    walk_paths,
)
from .grad.spec import TARGET_WEIGHTS
from .labels import refuse_labels
from .methods import (
    METHODS,
    MethodOptions,
    resolve,
)
from .methods.finercam import FinerCam
from .methods.run_based import uses_runs
from .model_setup import ModelSetup, class_count
from .preprocess import Preprocess
from .result import DEFAULT_STEPS, Explanation, fixed_steps
from .runtime import select_providers
from .target_choice import CLASS_KINDS, choose_at_x, options_for, target_options
from .targets import OutputInfo, Target, TargetOptions, kind_named

if TYPE_CHECKING:  # (loading a model, and the head's runs, are imported where first used)
    import onnx

    from .graph import LoadedModel
    from .model_runs import ExplainerRuns, HeadSessions

#: Path points whose prefix runs walking several targets' paths together must have saved
#: before the prefix and gradient head sessions are built for it: building them cost as much
#: as 14-15 points' runs (resnet18, resnet50, one thread), and loading the model to cut it
#: (a cached explainer has not loaded it) about twice that again.
SPLIT_AFTER = 48


class Explainer:
    """The CAM methods registered in ``METHODS`` for one (model, layer, score).

    The fused gradient model and its onnxruntime session are built once here and reused for
    every image; the prepared model is cached on disk (``ort_cam.cache``), so a later
    explainer of the same model, layer and score starts without loading or differentiating it.

    Args:
        model: path to an .onnx file, or a ModelProto.
        layer: tensor or node name inside the model (``ort-cam layers MODEL`` lists them);
            None takes the layer stored in the model's metadata (``ort_cam.layer``).
        preprocess: a ``Preprocess``, a preset name (imagenet, caffe, inception, raw), None
            (the model's stored preprocessing, else ``imagenet``), or a dict
            ``{"preset": name or None, <Preprocess field>: value, ...}`` of overrides.
        score: how the output is read: ``probability`` (softmax), ``logit``, ``sigmoid`` (a
            multi-label head) or ``rest`` (logit + log softmax); None (default): the target
            kind's default (probability, sigmoid where the output ends in a Sigmoid).
        providers: None/"auto" (CUDA when usable, else CPU), "cpu", "cuda" or provider names.
        threads: intra-op threads (default: onnxruntime's choice).
        labels: class names (list or file); default: the model's metadata if present.
        memory_budget: bytes of activations per session run, which sets the chunk size.
        chunk_size: path points per run (overrides ``memory_budget``).
        quiet: do not print the provider line on stderr.
        cache: read and write the prepared-model cache (``$ORT_CAM_CACHE``, else the user
            cache directory); False builds the model here and stores nothing.
        output: the model output to explain (default: the first); it must be class scores
            [N, C] or one logit per image.
        target_kind: what the output is read as (``ort_cam.targets.TARGET_KINDS``): class,
            binary, segment, detection, embedding, sequence, any; None (default): from the
            model's metadata, else the output's pattern (``explainer.reading`` says which was
            taken, and why).
        target: the target's values for every image (a ``targets.TargetOptions`` or a dict of
            its fields: mask, box, threshold, anchors, top_k, conf, iou, objectness, layout,
            concept, step, blank, weights); each call's ``target`` may add to them.
        size: (height, width) of a model input whose height and width are dynamic (default:
            the preprocessing's size, else the size stored in the model's metadata by
            ``ort-cam metadata`` or by its exporter, else each image's own size rounded to a
            multiple of what the graph scales it down by, one prepared model per size, with a
            note on stderr; ``own_sizes`` False keeps the 224x224 the model is prepared at).
        layer_layout, grid, extra_tokens: where the graph does not tell (or to override it):
            the layer's layout (NCHW, NHWC or tokens) and, for a token layer [N, T, C], its
            grid (h, w) and leading extra tokens (class, distillation); a token layer is
            explained on its grid, the extra tokens left out.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, layer: str | None = None, *,
                 preprocess: Preprocess | str | dict | None = None, score: str | None = None,
                 providers=None, threads: int | None = None, labels=None,
                 memory_budget: int = DEFAULT_BUDGET, chunk_size: int | None = None,
                 quiet: bool = False, cache: bool = True, output: str | None = None,
                 size: tuple[int, int] | None = None, layer_layout: str | None = None,
                 grid: tuple[int, int] | None = None, extra_tokens: int | None = None,
                 target_kind: str | None = None,
                 target: TargetOptions | Mapping | None = None):
        self._args = {k: v for k, v in locals().items() if k != "self"}  # for other sizes
        t0 = time.perf_counter()
        opts = target_options(target, target_kind)
        self.target_options = replace(opts, score=score if score is not None else opts.score)
        self.providers, self.provider_line = select_providers(providers)
        ctx = optimized.context(self.providers)
        self._setup = setup = ModelSetup.resolve(
            model, layer, preprocess=preprocess, score=score, cache=cache, output=output,
            size=size, layer_layout=layer_layout, grid=grid, extra_tokens=extra_tokens,
            target=self.target_options, session=ctx)
        prep = setup.prepared
        self.output, self.size, self.layer_hint = output, setup.size, setup.layer_hint
        self.cache_hit = prep.from_cache
        self.layer, self.channel_axis = prep.layer, prep.channel_axis
        self.score_mode, self.reading = prep.score, dict(prep.reading)
        self.target_kind, self._kind = prep.kind, kind_named(prep.kind)
        self._output_info = prep.output_info
        self.input_name = prep.input_name
        if not quiet:
            print(self.provider_line, *prep.warnings, f"ort_cam: {prep.reading['line']}",
                  sep="\n", file=sys.stderr)
        self.session = optimized.open_session(setup, self.providers, threads, ctx)
        if prep.fused is not None:
            prep.fused_bytes = None  # the ModelProto is kept; the session has its own copy
        self.runner = prep.runner(self.session)  # row by row where the batch stays 1
        self._fused = FusedModel.of(self.runner, self.input_name, self.channel_axis)
        self.n_classes: int = class_count(self._fused.output_shapes[1]) if (
            self.target_kind in CLASS_KINDS) else self._kind.n_labels(
            self._output_info, self.target_options) or 0
        self._input_shape = list(prep.input_shape)
        self.preprocess: Preprocess | None = setup.preprocess
        if not self.n_classes:
            refuse_labels(labels, self.target_kind)
        self.labels = setup.labels(labels, self.n_classes) if self.n_classes else None
        self.memory_budget = memory_budget
        self.fixed_chunk = chunk_size
        self._heads: HeadSessions | None = None  # built by the first method that runs the head
        self._split_saved = 0  # prefix runs that walking paths together would have saved
        self._sizes: dict[tuple[int, int], Explainer] = {}  # other sizes (``_at_size``)
        self.own_sizes = prep.free_size  # each image at its own size (False: the audits)
        self.setup_seconds = time.perf_counter() - t0

    @property
    def model(self) -> LoadedModel:
        """The loaded model (loaded on first use when the explainer came from the cache)."""
        return self._setup.model

    @property
    def fused(self) -> onnx.ModelProto:
        """The fused gradient model (parsed on first use when it came from the cache)."""
        return self._setup.fused

    @property
    def fused_model(self) -> FusedModel:
        """The fused gradient model as the engine runs it (through ``runner``)."""
        return self._fused

    # --- sizes --------------------------------------------------------------------------
    def per_sample_bytes(self) -> int:
        """Upper bound of activation bytes per path point: every forward tensor once, plus the
        layer's gradient (onnxruntime reuses buffers, so real use is lower)."""
        return self._setup.prepared.sample_bytes

    @property
    def run_sizes(self) -> RunSizes:
        """How many inputs a session run takes (under the memory budget or ``chunk_size``)."""
        return RunSizes(self.per_sample_bytes(), self.memory_budget, self.fixed_chunk)

    def chunk_for(self, m: int) -> int:
        """Path points per session run on a path of m steps."""
        return self.run_sizes.chunk(m)

    def run_capacity(self) -> int:
        """Inputs per session run under the memory budget (or ``chunk_size``)."""
        return self.run_sizes.capacity()

    # --- scores -------------------------------------------------------------------------
    def scores_at(self, x: np.ndarray) -> np.ndarray:
        """The scores S (class scores in the chosen score mode; the target head's transform
        of the output for other kinds) for a batch of model inputs."""
        shape = tuple(d if isinstance(d, int) else 0 for d in self._fused.output_shapes[1][1:])
        zeros = np.zeros((len(x), *shape), np.float32)
        scores = self.fused_model.run(x, {TARGET_WEIGHTS: zeros})[1]
        return scores

    def concept_of(self, image) -> np.ndarray:
        """An image's embedding, normalised (S at the image): the concept vector of an
        embedding target that compares other images with this one."""
        if self.target_kind != "embedding":
            raise OrtCamError(f"a concept image applies to an embedding target, not to a "
                              f"{self.target_kind} target")
        x = self._setup.image_inputs(image, "zeros", 0, None)[0]
        return np.asarray(self.scores_at(x)[0], np.float64)

    @property
    def output_info(self) -> OutputInfo:
        """The output the target reads (its name, shape per image, how it ends)."""
        return self._output_info

    def target_at(self, x: np.ndarray, spec: object = None) -> Target:
        """The target that ``explain`` chooses at the model input ``x`` (batch 1) for the
        call's target ``spec`` (mask, box, class, ...: see ``targets.TargetOptions``), for a
        kind other than class and binary: its weights W and its value at x. Refused as
        ``explain`` refuses it (e.g. no anchor matches a given box)."""
        if self.target_kind in CLASS_KINDS:
            raise OrtCamError(f"a {self.target_kind} target is a class index; target_at "
                              "chooses the targets of the other kinds")
        return choose_at_x(self.fused_model, [x], self._kind, self._output_info,
                           [options_for(self.target_options, spec)], self.labels, 1,
                           self.target_options)[0].target

    # --- explanation --------------------------------------------------------------------
    def explain(self, image, *, target=None, steps: int | str = DEFAULT_STEPS, baseline="black",
                methods: Sequence[str] | None = None, baseline_seed: int = 0,
                blur_radius: float | None = None, on_chunk=None, **options) -> Explanation:
        """Explain one image (path, PIL image or H×W×3 uint8 array) for one target with
        ``methods`` (default: the registry's default set)."""
        ex, image = self._at_size(image)
        if ex is not self:
            return ex.explain(image, target=target, steps=steps, baseline=baseline,
                              methods=methods, baseline_seed=baseline_seed,
                              blur_radius=blur_radius, on_chunk=on_chunk, **options)
        x, x0, pixels, seconds, photo = self._setup.image_inputs(image, baseline, baseline_seed,
                                                           blur_radius)
        return self._explain_items([Item(x, x0, pixels, seconds, target, photo)], steps,
                                   methods, on_chunk, options)[0]

    def explain_many(self, images: Iterable, *, targets=None, **kwargs) -> list[Explanation]:
        """Explain every image for every target in ``targets`` (one spec or a list of them;
        default top-1); results in image order, then target order."""
        return list(self.explain_iter(images, targets=targets, **kwargs))

    def explain_iter(self, images: Iterable, *, targets=None, steps: int | str = DEFAULT_STEPS,
                     baseline="black", methods: Sequence[str] | None = None,
                     baseline_seed: int = 0, blur_radius: float | None = None, on_chunk=None,
                     **options) -> Iterator[Explanation]:
        """``explain_many`` one result at a time. Images are taken in groups whose paths
        (m+1 points each) are packed into shared session runs when they fit the memory
        budget; the maps are those ``explain`` gives image by image."""
        specs = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        return self._packed(((image, specs) for image in images), len(specs), steps, methods,
                            on_chunk, options, (baseline, baseline_seed, blur_radius))

    def explain_pairs(self, pairs: Iterable[tuple], *, steps: int | str = DEFAULT_STEPS,
                      baseline="black", methods: Sequence[str] | None = None,
                      baseline_seed: int = 0, blur_radius: float | None = None, on_chunk=None,
                      **options) -> Iterator[Explanation]:
        """One explanation per (image, target) pair, in order: ``explain_iter`` with a target
        of each image's own. Paths are packed as there; the maps are those of ``explain``."""
        return self._packed(((image, [spec]) for image, spec in pairs), 1, steps, methods,
                            on_chunk, options, (baseline, baseline_seed, blur_radius))

    def pack_size(self, steps: int | str = DEFAULT_STEPS,
                  methods: Sequence[str] | None = None) -> int:
        """Explanations (image × target) that ``explain_iter``/``explain_pairs`` make
        together, their paths packed into shared runs (1: each is explained alone)."""
        return group_size(steps, methods, 1, self.run_capacity())

    def _at_size(self, image) -> tuple[Explainer, object]:
        """(the explainer for ``image``, the image): this one, but for a model that takes any
        size where nothing names one (``Prepared.free_size``), the one at the image's own size
        rounded to what the graph shows (``own_size``): made on first use (its prepared model
        cached apart), with a note."""
        if not self.own_sizes:
            return self, image
        size, photo = self._setup.own_size_of(image)
        if size is None:
            return self, photo
        if size not in self._sizes:
            t0 = time.perf_counter()
            self._sizes[size] = Explainer(**{**self._args, "size": size, "quiet": True})
            if not self._args["quiet"]:
                print(f"note: explaining at {size[0]}x{size[1]}, a size of its own: its "
                      f"explainer took {time.perf_counter() - t0:.2f} s to make", file=sys.stderr)
        return self._sizes[size], photo

    def _packed(self, jobs: Iterable[tuple], n_specs: int, steps, methods, on_chunk,
                options: dict, base: tuple) -> Iterator[Explanation]:
        """The explanations of ``jobs`` ((image, [target spec, ...]) each), in groups of as
        many as share runs; ``base`` is (baseline, baseline_seed, blur_radius). Images of
        other sizes (``_at_size``) go to the explainer of their size, in order."""
        sized = ((*self._at_size(image), specs) for image, specs in jobs)
        for ex, group in groupby(sized, key=lambda job: job[0]):
            yield from ex._packed_here(((image, specs) for _, image, specs in group), n_specs,
                                       steps, methods, on_chunk, options, base)

    def _packed_here(self, jobs: Iterable[tuple], n_specs: int, steps, methods, on_chunk,
                     options: dict, base: tuple) -> Iterator[Explanation]:
        """``_packed`` for images of this explainer's size."""
        group = group_size(steps, methods, n_specs, self.run_capacity())
        pending: list[Item] = []
        for image, specs in jobs:
            try:
                inputs = self._setup.image_inputs(image, *base)
            except Exception:
                if pending:  # what came before the bad image is still explained
                    yield from self._explain_items(pending, steps, methods, on_chunk, options)
                raise
            x, x0, pixels, seconds, photo = inputs
            pending += [Item(x, x0, pixels, seconds, spec, photo) for spec in specs]
            if len(pending) >= group:
                yield from self._explain_items(pending, steps, methods, on_chunk, options)
                pending = []
        if pending:
            yield from self._explain_items(pending, steps, methods, on_chunk, options)

    def explain_array(self, x: np.ndarray, *, baseline_array, target=None,
                      steps: int | str = DEFAULT_STEPS, methods: Sequence[str] | None = None,
                      on_chunk=None, **options) -> Explanation:
        """Explain a model-space input ``x`` ([1, ...] or without the batch axis) against a
        model-space baseline (an array, or "zeros")."""
        x, x0 = self._setup.array_inputs(x, baseline_array)
        return self._explain_items([Item(x, x0, spec=target)], steps, methods, on_chunk,
                                   options)[0]

    # --- the work behind the explain_* calls --------------------------------------------
    def _explain_items(self, items: list[Item], steps, methods, on_chunk,
                       options: dict) -> list[Explanation]:
        t0 = time.perf_counter()
        opts = MethodOptions.from_kwargs(**options)
        names = resolve(methods)
        walked = [name for name in names if not uses_runs(METHODS[name])]
        if self.target_kind not in CLASS_KINDS and (opts.aug_smooth or FinerCam.name in names):
            what = "aug_smooth" if opts.aug_smooth else FinerCam.name
            raise OrtCamError(f"{what} explains class targets only, not a {self.target_kind} "
                              "target (it compares classes, or flips the image under a target "
                              "chosen at x); leave it out")
        if opts.aug_smooth:
            return self._aug_smoothed(items, steps, methods, on_chunk, options)
        m = fixed_steps(steps)
        starts = self._starts(items)
        jobs = path_jobs(items, starts, self.n_classes)
        paths = walk_paths(self.fused_model, self._split_model, items, jobs, m, self.run_sizes,
                           walked, opts, on_chunk)
        add_run_maps(items, starts, paths, [n for n in names if n not in walked], opts, m,
                     self.model_runs)
        share = (time.perf_counter() - t0) / len(items)
        return [self._result(it, st, path, names, opts, share)
                for it, st, path in zip(items, starts, paths)]

    def _aug_smoothed(self, items: list[Item], steps, methods, on_chunk,
                      options: dict) -> list[Explanation]:
        """``aug_smooth``: each item explained on the six augmentations of ``augment`` (for
        the class chosen on x itself), the maps averaged (``augment.combine``)."""
        plain = {**options, "aug_smooth": False}
        axis = 2 if self._setup.layout == "NHWC" else 3
        out = []
        for item in items:
            target = class_index(self._starts([item])[0].target)
            runs = [self._explain_items(
                [Item(aug.apply(item.x, axis), aug.apply(item.x0, axis), item.pixels,
                       item.prep_seconds, target)], steps, methods, on_chunk, plain)[0]
                for aug in AUGMENTATIONS]
            out.append(combine(runs, MethodOptions.from_kwargs(**plain).eps))
        return out

    # --- the methods computed from runs of the model or its head (after the walk) ------
    def model_runs(self, x: np.ndarray, x0: np.ndarray, target: int, scores: np.ndarray,
                   batch: int = 32) -> ExplainerRuns:
        """Runs of the model and of its head for input ``x`` (batch 1), baseline ``x0`` and
        class ``target`` (for a target of another kind, set the result's ``feed`` to the
        target chosen at x), as the methods that need them read them; the sessions are built
        when first used and kept."""
        from .model_runs import ExplainerRuns

        return ExplainerRuns(self._head_sessions(), self.fused_model, self.input_name, x, x0,
                             target, scores, self.channel_axis, self._setup.layout, batch,
                             self.score_mode)

    def _head_sessions(self) -> HeadSessions:
        """The prefix and head sessions (built when first asked for, kept)."""
        from .model_runs import HeadSessions

        if self._heads is None:
            threads = self.session.get_session_options().intra_op_num_threads
            self._heads = HeadSessions(lambda: self.model, self.layer, self._setup.prepared.head,
                                       self.providers, threads or None)
        return self._heads

    def _split_model(self, saved: int) -> SplitModel | None:
        """The prefix and the gradient head as ``walk_shared`` runs them, for a walk that saves
        ``saved`` prefix runs of a path point. Their sessions are built (and kept) once the
        walks asking have saved ``SPLIT_AFTER`` points in all, else None: the paths go through
        the fused model; None also where the model cannot be cut at the layer."""
        heads = self._head_sessions()
        self._split_saved += saved
        if not heads.built("prefix", "gradient_head") and self._split_saved < SPLIT_AFTER:
            return None
        return heads.split(self.input_name)

    def _starts(self, items: list[Item]) -> list[Start]:
        """One run of every x (packed): the scores, the target, and the point l = m of the
        path when the run's gradient is the target's (always, but for top:K with K > 1 when
        the K-th class is not the top one). Zero target weights ask for the top-1 class. For
        the other kinds, the run gives S(x) and the kind chooses W; where the options fix W
        without S(x), the run is fed it and is the path's point l = m."""
        if self.target_kind not in CLASS_KINDS:
            chosen = choose_at_x(self.fused_model, [it.x for it in items], self._kind,
                                 self._output_info,
                                 [options_for(self.target_options, it.spec) for it in items],
                                 self.labels, self.run_capacity(), self.target_options)
            return [Start(c.target.index, c.scores, c.end, c.run_seconds, c.target)
                    for c in chosen]
        specs = [options_for(self.target_options, it.spec).target for it in items]
        return class_starts(self.fused_model, [it.x for it in items], specs, self.n_classes,
                            self.labels, self.run_capacity())

    def _result(self, item: Item, start: Start, path: PathResult, names: list[str],
                opts: MethodOptions, seconds: float) -> Explanation:
        reading = Reading(self.labels, self.score_mode, self.layer, self.target_kind,
                          self.preprocess)
        return explanation(item, start, path, names, opts, seconds,
                           self._setup.map_size(item.x), reading)
