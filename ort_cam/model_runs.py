"""The model and head runs that the explainer hands to the methods computed from runs
(``ort_cam.methods.run_based.ModelRuns``: Ablation-CAM, Score-CAM, Finer-CAM, Layer IG).

``HeadSessions`` builds the sessions on first use and keeps them for the explainer's life:
the prefix (model inputs -> the layer and the tensors crossing the cut), the forward head (those
-> scores), the gradient head of ``split_models`` (-> scores, grad) and the whole model's
scores. ``ExplainerRuns`` is one input's and one target's view of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from .engine import FusedModel, SplitModel, TargetFeed
from .errors import OrtCamError
from .grad import Head, split_models
from .grad.forward import forward_split, score_model
from .grad.spec import TARGET_WEIGHTS
from .graph import LoadedModel
from .prepared import RowRunner
from .runtime import Runner, make_session
from .target_choice import ClassFeed

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
       "tensor(double)": np.float64}


class HeadSessions:
    """Sessions for one (model, layer, score), each built when first asked for; ``score`` is
    a class reading or the target's ``Head``."""

    def __init__(self, model: Callable[[], LoadedModel], layer: str, score: str | Head,
                 providers: list[str], threads: int | None):
        self._model, self.layer, self.score = model, layer, score
        self._providers, self._threads = providers, threads
        self._runners: dict[str, Runner] = {}
        self._split: tuple[onnx.ModelProto, onnx.ModelProto, list[str]] | None = None

    def _runner(self, key: str, build: Callable[[], onnx.ModelProto]) -> Runner:
        if key not in self._runners:
            session = make_session(build(), self._providers, self._threads)
            rows = self._model().batch_rows  # a model that runs at batch 1 only
            self._runners[key] = RowRunner(session) if rows else Runner(session)
        return self._runners[key]

    def built(self, *keys: str) -> bool:
        """Whether the sessions ``keys`` (prefix, head, gradient_head, scores) are built."""
        return all(key in self._runners for key in keys)

    def _forward(self) -> tuple[onnx.ModelProto, onnx.ModelProto, list[str]]:
        if self._split is None:
            self._split = forward_split(self._model(), self.layer, self.score)
        return self._split

    def head_inputs(self) -> list[str]:
        """The layer, then the tensors crossing the cut."""
        return self._forward()[2]

    def prefix(self) -> Runner:
        return self._runner("prefix", lambda: self._forward()[0])

    def head(self) -> Runner:
        return self._runner("head", lambda: self._forward()[1])

    def gradient_head(self) -> Runner:
        return self._runner("gradient_head",
                            lambda: split_models(self._model(), self.layer, self.score).head)

    def scores(self) -> Runner:
        return self._runner("scores", lambda: score_model(self._model(), self.score))

    def split(self, input_name: str) -> SplitModel | None:
        """The prefix and the gradient head as ``engine.walk_shared`` runs them (built now, and
        kept), or None where the model cannot be cut at the layer."""
        try:
            return SplitModel(self.prefix(), self.gradient_head(), input_name,
                              tuple(self.head_inputs()))
        except OrtCamError:
            return None


class ExplainerRuns:
    """``ModelRuns`` for one model-space input x (batch 1), its baseline x0 and class c; or,
    for a target of another kind, its ``feed`` (the target's W and its y = Σ W ⊙ S), which
    the head's runs are fed and read through (``target`` is then its class, or -1)."""

    def __init__(self, heads: HeadSessions, fused: FusedModel, input_name: str, x: np.ndarray,
                 x0: np.ndarray, target: int, scores: np.ndarray, channel_axis: int,
                 input_layout: str, batch: int, score_mode: str,
                 feed: TargetFeed | None = None):
        self.heads, self.fused, self.input_name = heads, fused, input_name
        self.x, self.x0, self.target, self._scores = x, x0, target, scores
        self.feed: TargetFeed = feed if feed is not None else ClassFeed(target, len(scores))
        self.channel_axis, self.input_layout = channel_axis, input_layout
        self.batch, self.score_mode = batch, score_mode
        self._at_x: dict[str, np.ndarray] | None = None

    # --- layout ---------------------------------------------------------------------------
    def _first(self, a: np.ndarray) -> np.ndarray:
        """Model layout -> channels first, float64."""
        a = np.asarray(a, np.float64)
        return a.transpose(0, 3, 1, 2) if self.channel_axis == 3 else a

    def _model_layout(self, acts: np.ndarray, runner: Runner) -> np.ndarray:
        a = acts.transpose(0, 2, 3, 1) if self.channel_axis == 3 else acts
        kind = runner.session.get_inputs()[0].type
        return np.ascontiguousarray(a.astype(_NP.get(kind, np.float32)))

    # --- what the methods read ------------------------------------------------------------
    def scores(self) -> np.ndarray:
        return np.asarray(self._scores, np.float64)

    def _prefix_at(self, x: np.ndarray) -> dict[str, np.ndarray]:
        runner = self.heads.prefix()
        return dict(zip(runner.output_names, runner.run({self.input_name: x})))

    def activation(self) -> np.ndarray:
        if self._at_x is None:
            self._at_x = self._prefix_at(self.x)
        return self._first(self._at_x[self.heads.layer])[0]

    def baseline_activation(self) -> np.ndarray:
        return self._first(self._prefix_at(self.x0)[self.heads.layer])[0]

    def _head_feeds(self, acts: np.ndarray, runner: Runner) -> dict[str, np.ndarray]:
        """The head's inputs for the layer values ``acts`` [b, K, h, w]: the crossing tensors
        at x, repeated along the batch where the head takes a batch axis."""
        self.activation()
        assert self._at_x is not None
        feeds = {self.heads.layer: self._model_layout(acts, runner)}
        declared = {i.name: i.shape for i in runner.session.get_inputs()}
        for name in self.heads.head_inputs()[1:]:
            value = self._at_x[name]
            batched = isinstance(declared[name][0], str) if declared[name] else False
            feeds[name] = np.repeat(value, len(acts), axis=0) if batched else value
        return feeds

    def _run_rows(self, runner: Runner, acts: np.ndarray,
                  extra: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """One run over the rows of ``acts``; row by row when the head's shape tensors (taken
        at x, batch 1) do not let it run a batch."""
        feeds = {**self._head_feeds(acts, runner), **(extra or {})}
        try:
            out = runner.run(feeds)
            if all(len(o) == len(acts) for o in out):
                return out
        except Exception:
            if len(acts) == 1:
                raise
        rows = [self._run_rows(runner, acts[i:i + 1],
                               {k: v[i:i + 1] for k, v in (extra or {}).items()})
                for i in range(len(acts))]
        return [np.concatenate(parts) for parts in zip(*rows)]

    def head_scores(self, acts: np.ndarray) -> np.ndarray:
        out = []
        for lo in range(0, len(acts), self.batch):
            (s,) = self._run_rows(self.heads.head(), acts[lo:lo + self.batch])
            out.append(self.feed.score(s))
        return np.concatenate(out).astype(np.float64)

    def head_gradients(self, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        runner = self.heads.gradient_head()
        ys, gs = [], []
        for lo in range(0, len(acts), self.batch):
            part = acts[lo:lo + self.batch]
            s, g = self._run_rows(runner, part, self.feed.inputs(len(part)))
            ys.append(self.feed.score(s))
            gs.append(self._first(g))
        return np.concatenate(ys).astype(np.float64), np.concatenate(gs)

    def input_size(self) -> tuple[int, int]:
        h, w = (1, 2) if self.input_layout == "NHWC" else (2, 3)
        return int(self.x.shape[h]), int(self.x.shape[w])

    def masked_scores(self, masks: np.ndarray) -> np.ndarray:
        m = masks[..., None] if self.input_layout == "NHWC" else masks[:, None]
        xs = (self.x.astype(np.float64) * m).astype(self.x.dtype)
        (s,) = self.heads.scores().run({self.input_name: xs})
        return np.asarray(self.feed.score(s), np.float64)

    def gradient_at_x(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.asarray(weights, np.float32)[None]
        out = self.fused.run(self.x, {TARGET_WEIGHTS: w}, scores=False)
        a, g = out[0], out[2]
        return self._first(a)[0], self._first(g)[0]
