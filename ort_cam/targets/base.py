"""What every target kind shares: the output it reads (``OutputInfo``), what the user asked
for (``TargetOptions``), the target chosen at x (``Target``) and the kind itself
(``TargetKind``: the head it puts on the output, and how it picks its weights at x).

A target is ``y = Σ W ⊙ S``, ``S = head.transform(output)`` built once into the fused gradient
model, ``W`` chosen once, at the input x, on the host, and fed at every point of the path
(``../shared/METHODS.md``, "Targets").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, OrtCamError
from ..grad import Head
from ..grad.spec import TARGET_WEIGHTS


@dataclass(frozen=True)
class OutputInfo:
    """The output a target reads, as kind detection and the kinds see it.

    Attributes:
        name: the output tensor.
        shape: its shape per image (the batch axis left out).
        final_op: the Softmax, LogSoftmax or Sigmoid it ends in (through shape-only ops).
        softmax_axis: the per-image axis of that Softmax/LogSoftmax, else None.
        last_op: the op that computes it, past shape-only ops (Gemm, GlobalAveragePool, ...).
        concat_sizes: where ``last_op`` is a Concat: its inputs' sizes along its axis, and
            that axis (per image); detection heads concatenate box rows (4) and scores.
        recurrent: whether an LSTM, GRU or RNN lies between the input and the output.
        task: the model's task as its metadata says (``ort_cam.target_kind``, or the
            exporter's ``task``: ultralytics writes detect, segment, classify, pose, obb).
        n_names: how many class names the metadata lists (ultralytics' ``names``), else None.
        boxes: a detector's box output read beside this one (its scores), else None.
    """

    name: str
    shape: tuple[int, ...]
    final_op: str | None = None
    softmax_axis: int | None = None
    last_op: str | None = None
    concat_sizes: tuple[tuple[int, ...], int] | None = None
    recurrent: bool = False
    task: str | None = None
    n_names: int | None = None
    boxes: str | None = None

    @property
    def shown(self) -> str:
        """The shape as messages write it: ``[N, 21, 64, 64]``."""
        return "[" + ", ".join(["N", *(str(d) for d in self.shape)]) + "]"

    def record(self) -> dict[str, Any]:
        """The JSON form (the prepared-model cache keeps it)."""
        return {"name": self.name, "shape": list(self.shape), "final_op": self.final_op,
                "softmax_axis": self.softmax_axis, "last_op": self.last_op,
                "concat_sizes": None if self.concat_sizes is None else
                [list(self.concat_sizes[0]), self.concat_sizes[1]],
                "recurrent": self.recurrent, "task": self.task, "n_names": self.n_names,
                **({"boxes": self.boxes} if self.boxes else {})}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> OutputInfo:
        concat = data.get("concat_sizes")
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), data["final_op"],
                   data["softmax_axis"], data["last_op"],
                   None if concat is None else (tuple(int(v) for v in concat[0]),
                                                int(concat[1])),
                   bool(data["recurrent"]), data["task"], data["n_names"], data.get("boxes"))

    @property
    def box_concat(self) -> tuple[tuple[int, ...], int] | None:
        """Where the output is a Concat whose first pieces hold 4 rows (a detection head's box:
        (4, C), (4, 1, C), or (2, 2, C) as centre and size): the pieces after the box and the
        axis; else None."""
        if self.concat_sizes is None:
            return None
        pieces, axis = self.concat_sizes
        total = 0
        for i, size in enumerate(pieces):
            total += size
            if total == 4 and i + 1 < len(pieces):
                return tuple(pieces[i + 1:]), axis
            if total > 4:
                return None
        return None

    @property
    def squeezed(self) -> tuple[int, ...]:
        """The shape with trailing 1-axes dropped (a classifier's [C, 1, 1] is [C])."""
        shape = list(self.shape)
        while len(shape) > 1 and shape[-1] == 1:
            shape.pop()
        return tuple(shape)


@dataclass(frozen=True)
class TargetOptions:
    """Everything a user may say about the target; each kind reads the fields it knows and
    refuses those that make no sense for it (``TargetKind.accepts``).

    Attributes:
        kind: the target kind (``TARGET_KINDS``), None: detected.
        score: how the output is read (class: probability, logit, sigmoid, rest; segment:
            logit or probability), None: the kind's default.
        target: the class: an index, a label, top1, top:K (None: the kind's default).
        mask: a segment mask [H, W] (bool or 0/1) on the output's grid.
        box: (x0, y0, x1, y1): for segment, the mask's box on the output's grid; for
            detection, a box in the input's pixels whose best-matching anchor is explained.
        threshold: a one-channel map's mask is ``p > threshold`` (default 0.5).
        anchors: detection anchors by index.
        top_k, conf, iou: detection: the k best boxes left by NMS at IoU ``iou`` among
            those scoring at least ``conf`` (the common detector defaults 1, 0.25, 0.45).
        box_iou: detection: add the IoU of the chosen anchor's box with ``box`` (pytorch-grad-
            cam's FasterRCNNBoxScoreTarget: IoU + score), differentiated too.
        boxes_output: detection: a box output [N, A, 4] beside the output explained, its
            scores [N, A, C] (models that output boxes and scores before NMS); box_format:
            how it holds boxes, xyxy (default) or cxcywh.
        objectness: detection: whether the head has an objectness row (None: from the layout).
        layout: detection: ``channels`` ([N, 4+C, A]) or ``anchors`` ([N, A, 4+C]).
        concept: embedding: the concept vector [D].
        step: sequence: explain this one step (None: every kept step of the decoding).
        blank: sequence: the CTC blank index.
        weights: any: W, of the output's shape per image.
    """

    kind: str | None = None
    score: str | None = None
    target: object = None
    mask: np.ndarray | None = field(default=None, compare=False)
    box: tuple[float, float, float, float] | None = None
    threshold: float = 0.5
    anchors: tuple[int, ...] | None = None
    top_k: int = 1
    conf: float = 0.25
    iou: float = 0.45
    objectness: bool | None = None
    layout: str | None = None
    box_iou: bool = False
    boxes_output: str | None = None
    box_format: str = "xyxy"
    concept: np.ndarray | None = field(default=None, compare=False)
    step: int | None = None
    blank: int = 0
    weights: np.ndarray | None = field(default=None, compare=False)

    def given(self) -> list[str]:
        """The kind-specific options set away from their defaults (for refusals)."""
        defaults = TargetOptions()
        out = []
        for name in _SPECIFIC:
            value, default = getattr(self, name), getattr(defaults, name)
            if isinstance(value, np.ndarray) or value != default:
                out.append(name)
        return out


#: The options that belong to one kind or another (``kind``, ``score``, ``target`` are common).
_SPECIFIC = ("mask", "box", "threshold", "anchors", "top_k", "conf", "iou", "objectness",
             "layout", "box_iou", "boxes_output", "box_format", "concept", "step", "blank",
             "weights")


@dataclass(frozen=True, eq=False)
class Target:
    """A target chosen at x: the weights ``W`` of ``y = Σ W ⊙ S`` (S's shape per image,
    float32) and what was chosen, for the record and the panels. It is what the engine feeds
    for every point of the path (its ``TargetFeed``): ``inputs(n)`` and ``score(out)``.

    Attributes:
        kind: the kind's name.
        weights: W.
        index: the class explained, where there is one (class, binary, segment).
        value: the target's value at x, ``Σ W ⊙ S(x)``.
        mask: a segment target's mask on the output's grid.
        boxes: the chosen detections' boxes (x0, y0, x1, y1) in the input's pixels, or the
            given box.
        anchors: the chosen detection anchors.
        steps: a sequence target's kept steps, with ``tokens`` their decoded indices.
        note: what was chosen, in words (printed with the result).
    """

    kind: str
    weights: np.ndarray
    index: int | None = None
    value: float = float("nan")
    mask: np.ndarray | None = None
    boxes: np.ndarray | None = None
    anchors: tuple[int, ...] = ()
    steps: tuple[int, ...] = ()
    tokens: tuple[int, ...] = ()
    note: str = ""
    _rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: what the kind worked out at x besides W, for its own later checks (``seeded``)
    found: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def record(self) -> dict[str, Any]:
        """The JSON form (results.jsonl and the audit's records): kind, class, and what the
        kind chose (mask area, boxes, anchors, steps)."""
        rec: dict[str, Any] = {"kind": self.kind, "class": self.index,
                               "value": None if np.isnan(self.value) else float(self.value)}
        if self.mask is not None:
            rec["mask_area"] = int(np.count_nonzero(self.mask))
        if self.boxes is not None:
            rec["boxes"] = [[round(float(v), 2) for v in b] for b in self.boxes]
        if self.anchors:
            rec["anchors"] = list(self.anchors)
        if self.steps:
            rec["steps"], rec["tokens"] = list(self.steps), list(self.tokens)
        return rec

    def inputs(self, n: int) -> dict[str, np.ndarray]:
        """The fused model's target input for ``n`` path points: W on every row (the rows of
        the last ``n`` asked for are kept: a walk asks for the same ``n`` chunk after chunk)."""
        if n == 1:  # W itself (a fused model that takes one row for all its inputs)
            return {TARGET_WEIGHTS: self.weights[None]}
        rows = self._rows.get(n)
        if rows is None:  # zeros (pages the OS hands out zeroed), then W's span of nonzeros
            rows = np.zeros((n, *self.weights.shape), self.weights.dtype)
            support = self._support
            if len(support):  # the span between W's first and last nonzero, row by row (a
                # mask or a few anchors: a small part of W; copied as one slice, not scattered)
                lo, hi = int(support[0]), int(support[-1]) + 1
                rows.reshape(n, -1)[:, lo:hi] = self.weights.reshape(-1)[lo:hi]
            self._rows.clear()
            self._rows[n] = rows
        return {TARGET_WEIGHTS: rows}

    def score(self, out: np.ndarray) -> np.ndarray:
        """y = Σ W ⊙ S of each row of the score output S ([n, ...] -> [n], float64), summed
        over W's nonzero entries only (a mask, a few anchors: a small part of S). By einsum, not
        a BLAS product: OpenBLAS would run it on its own threads, which then spin and take a
        core from onnxruntime's next run (11 ms of CPU more per chunk of 17 segment points)."""
        flat = self.weights.reshape(-1)
        support = self._support
        s = np.asarray(out).reshape(len(out), -1)
        return np.einsum("ij,j->i", np.take(s, support, axis=1).astype(np.float64),
                         flat[support].astype(np.float64))

    @property
    def _support(self) -> np.ndarray:
        found = self._cache.get("support")
        if found is None:
            found = self._cache["support"] = np.flatnonzero(self.weights)
        return found


class TargetKind:
    """One kind of target: the outputs it reads, the head it puts on them and how it picks
    W at x. A kind is a class of class methods; ``TARGET_KINDS`` registers it by ``name``."""

    name: ClassVar[str]
    title: ClassVar[str]
    #: the readings of the output this kind takes (``--score``); the first is the default
    scores: ClassVar[tuple[str, ...]] = ()
    #: the kind-specific options (``TargetOptions``) it reads
    options: ClassVar[tuple[str, ...]] = ()
    #: how the user picks it and its values, for refusals (``--target-kind NAME ...``)
    usage: ClassVar[str] = ""

    @classmethod
    def fits(cls, out: OutputInfo) -> str | None:
        """None when this kind can read ``out``, else why not (a clause)."""
        raise NotImplementedError

    @classmethod
    def head(cls, out: OutputInfo, opts: TargetOptions) -> Head:
        """The transform S of ``out`` that this kind's W weighs."""
        raise NotImplementedError

    @classmethod
    def choose(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions,
               labels: list[str] | None = None) -> Target:
        """The target at x, from S at x (``s``, per image: the batch axis left out)."""
        raise NotImplementedError

    @classmethod
    def fixed(cls, out: OutputInfo, opts: TargetOptions) -> bool:
        """Whether ``opts`` fix W without S at x (a concept vector, given weights, a given
        class over a given mask): then the run of x is fed W at once and is the path's point
        l = m, as a class target's run of x is. Where this says so wrongly, the explainer
        sees W change between S = 0 and S(x) and runs x again."""
        return False

    @classmethod
    def seeded(cls, s: np.ndarray, out: OutputInfo, opts: TargetOptions, target: Target,
               built: TargetOptions, on_demand: bool = False) -> bool:
        """Whether the fused model (built with the options ``built``; ``on_demand``: it
        computes its map on demand, ``grad.tail``), fed a row of zero weights at x (S(x) =
        ``s``), took the gradient of ``target`` (the one ``choose`` picked from ``s`` with
        ``opts``): it seeds such a row with the kind's default (``grad.heads``), and this
        checks that default on the host, so that the run is the path's point l = m. False: x
        is run again, fed W."""
        return False

    @classmethod
    def n_labels(cls, out: OutputInfo, opts: TargetOptions) -> int | None:
        """How many names a labels file gives (classes, tokens), None where none apply."""
        return None

    @classmethod
    def accepts(cls, opts: TargetOptions) -> None:
        """Refuse options this kind does not read, and a reading it does not take."""
        foreign = [name for name in opts.given() if name not in cls.options]
        if foreign:
            raise OrtCamError(f"{_flag(foreign[0])} does not apply to a {cls.name} target; it "
                              f"takes {', '.join(_flag(o) for o in cls.options) or 'no values'}")
        if opts.score is not None and opts.score not in cls.scores:
            takes = f"--score {'|'.join(cls.scores)}" if cls.scores else "no --score"
            raise OrtCamError(f"--score {opts.score} does not apply to a {cls.name} target; "
                              f"it takes {takes}")

    @classmethod
    def score(cls, opts: TargetOptions) -> str | None:
        """The reading asked for, else this kind's default."""
        return opts.score or (cls.scores[0] if cls.scores else None)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def finished(kind: str, w: np.ndarray, s: np.ndarray, **values: Any) -> Target:
    """The ``Target`` of weights ``w`` on S at x ``s``: W as float32, its value at x."""
    weights = np.ascontiguousarray(w, dtype=np.float32)
    # Σ in float64 without float64 copies of W and S (a map's are 4 MB each at 21 × 224²)
    value = float(np.einsum("i,i->", weights.reshape(-1), np.asarray(s).reshape(-1),
                            dtype=np.float64))
    return Target(kind, weights, value=value, **values)


def finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as float64, refused in one line when it holds NaN or inf."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(f"{what}: {bad} NaN or inf value(s); give finite numbers")
    return arr


def class_index(spec: object, n: int, labels: list[str] | None, what: str = "class") -> int:
    """A class given by index or label, checked against ``n`` classes."""
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.isdigit()):
        idx = int(spec)
        if not 0 <= idx < n:
            raise OrtCamError(f"{what} {idx} is out of range; the output has {n} classes")
        return idx
    if isinstance(spec, str) and labels:
        lowered = [lab.lower() for lab in labels]
        if spec.lower() in lowered:
            return lowered.index(spec.lower())
        import difflib

        close = difflib.get_close_matches(spec, labels, n=3)
        raise OrtCamError(f"unknown label {spec!r}" + (f"; closest: {', '.join(close)}"
                                                        if close else ""))
    raise OrtCamError(f"bad {what} {spec!r}; use a class index"
                      + (" or a label name" if labels else " (or a label with a labels file)"))
