"""Which target kind applies to an output: the flag, else the model's metadata (its task),
else the output's pattern (a Sigmoid at the end, one value per image, rank and layout, what
computes it), else a one-line refusal that lists the kinds and how to pick one.

Where the pattern cannot tell (class logits and an embedding from a projection layer look
alike), the reading taken is said, with how to pick another (``Reading.note``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OrtCamError
from ..grad import Head
from ..grad.transforms import final_op
from ..graph import LoadedModel
from ..graph.load import is_float
from .base import OutputInfo, TargetKind, TargetOptions
from .kinds import TARGET_KINDS, kind_named

#: metadata keys naming the task: ort_cam's own, then the exporters' (ultralytics: task)
KIND_KEY, TASK_KEY, NAMES_KEY = "ort_cam.target_kind", "task", "names"
#: exporters' task names -> kind (ultralytics' segment, pose and obb heads are detection
#: heads with extra rows, their masks or keypoints after the class scores)
TASKS = {"classify": "class", "detect": "detection", "segment": "detection",
         "pose": "detection", "obb": "detection"}
#: ops after which a vector is an embedding, not class scores: pooling, normalisation
EMBEDDING_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
                 "AveragePool", "MaxPool", "LpNormalization", "BatchNormalization",
                 "LayerNormalization", "ReduceL2")
_SHAPE_ONLY = ("Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze")
_RECURRENT = ("LSTM", "GRU", "RNN")


def _producer(t: gs.Tensor) -> gs.Node | None:
    while t.inputs:
        node = t.inputs[0]
        if node.op not in _SHAPE_ONLY:
            return node
        t = node.inputs[0]
    return None


def _per_image_axis(model: LoadedModel, t: gs.Tensor, axis: int, rank: int) -> int | None:
    """``axis`` of tensor ``t`` as an axis of the output per image (None if ranks differ)."""
    shape = model.shapes.get(t.name)
    if shape is None or len(shape) != rank + 1:
        return None
    return axis % len(shape) - 1


def _concat(model: LoadedModel, node: gs.Node | None, rank: int
            ) -> tuple[tuple[int, ...], int] | None:
    if node is None or node.op != "Concat":
        return None
    axis = _per_image_axis(model, node.outputs[0], int(node.attrs.get("axis", 0)), rank)
    shapes = [model.shapes.get(t.name) for t in node.inputs]
    if axis is None or axis < 0 or any(s is None for s in shapes):
        return None
    return tuple(int(s[axis + 1]) for s in shapes if s is not None), axis


def _metadata(model: LoadedModel) -> tuple[str | None, int | None]:
    props = {p.key: p.value for p in model.proto.metadata_props}
    task = props.get(KIND_KEY) or props.get(TASK_KEY)
    n_names = None
    if NAMES_KEY in props:
        try:
            n_names = len(ast.literal_eval(props[NAMES_KEY]))
        except (ValueError, SyntaxError, TypeError):
            n_names = None
    return (task.strip().lower() if task else None), n_names


def _softmax_axis(model: LoadedModel, final: gs.Node, shape: tuple[int, ...]) -> int | None:
    """The axis of the output per image that ``final`` (a Softmax) runs over. Behind a
    reshape that keeps the last axis (onnx's version converter writes an opset-12 Softmax
    over the last axis of [N, T, V] as Reshape [N*T, V], Softmax, Reshape back), a softmax
    over its input's last axis runs over the output's last axis."""
    axis = int(final.attrs.get("axis", -1))
    found = _per_image_axis(model, final.inputs[0], axis, len(shape))
    given = model.shapes.get(final.inputs[0].name)
    if found is None and given and shape and axis % len(given) == len(given) - 1 \
            and int(given[-1]) == shape[-1]:
        return len(shape) - 1
    return found


def output_info(model: LoadedModel, output: str) -> OutputInfo:
    """What kind detection reads of ``output``."""
    t = model.graph.tensors()[output]
    shape = tuple(int(d) for d in model.shapes.get(output, ())[1:])
    final = final_op(t)
    axis = None
    if final is not None and final.op != "Sigmoid":
        axis = _softmax_axis(model, final, shape)
    last = _producer(t)
    task, n_names = _metadata(model)
    return OutputInfo(
        name=output, shape=shape, final_op=None if final is None else final.op,
        softmax_axis=axis, last_op=None if last is None else last.op,
        concat_sizes=_concat(model, last, len(shape)),
        recurrent=any(n.op in _RECURRENT for n in model.graph.nodes),
        task=task, n_names=n_names)


@dataclass(frozen=True)
class Reading:
    """How an output is read: the kind, the head it puts on the output, and the note that
    says why (and how to pick another reading) where the choice was not the user's."""

    kind: str
    head: Head
    output: OutputInfo
    note: str = ""

    def line(self) -> str:
        """One line for ``layers`` and ``explain``: the output, the kind, the reading."""
        score = f", score {self.head.transform}" if self.kind in ("class", "segment") else ""
        return (f"output {self.output.name!r} {self.output.shown}: target {self.kind}{score}"
                + (f" ({self.note})" if self.note else ""))


def _conv_classifier(model: LoadedModel, pool: gs.Node) -> bool:
    """Whether a pooling node averages a 1x1 convolution's maps (through a Relu): a
    convolutional classifier (SqueezeNet, network-in-network), not pooled features."""
    src = pool.inputs[0].inputs[0] if pool.inputs and pool.inputs[0].inputs else None
    if src is not None and src.op == "Relu" and src.inputs[0].inputs:
        src = src.inputs[0].inputs[0]
    if src is None or src.op != "Conv" or len(src.inputs) < 2:
        return False
    shape = model.shapes.get(src.inputs[1].name) or getattr(src.inputs[1], "shape", None)
    return shape is not None and len(shape) == 4 and tuple(shape[2:]) == (1, 1)


def _is_embedding(model: LoadedModel, output: str) -> bool:
    """Whether ``output`` [N, D] comes from a pooling or normalisation layer (not from a
    classifier layer): pooled features, a normalised embedding."""
    node = _producer(model.graph.tensors()[output])
    if node is None:
        return False
    if node.op in EMBEDDING_OPS:
        return not _conv_classifier(model, node)
    return (node.op == "Div" and len(node.inputs) == 2
            and not isinstance(node.inputs[1], gs.Constant))  # x / its norm


def guess(model: LoadedModel, out: OutputInfo) -> tuple[str | None, str]:
    """(kind, note) from the output's pattern; kind None when it cannot be told."""
    shape = out.squeezed
    if int(np.prod(out.shape, dtype=np.int64)) == 1:
        return "binary", "one logit per image: a binary classifier, +logit for class 1"
    if len(shape) == 1:
        if out.final_op == "Sigmoid":
            return "class", "it ends in a Sigmoid: a multi-label head"
        if out.final_op in ("Softmax", "LogSoftmax"):
            return "class", ""
        if _is_embedding(model, out.name):
            return "embedding", (f"it comes from {out.last_op or 'a normalisation'}, not a "
                                 "classifier layer; --target-kind class reads it as classes")
        return "class", ("read as class logits, as it ends in no Softmax; if it is an "
                         "embedding, pass --target-kind embedding --concept FILE.npy")
    if len(out.shape) == 3:
        return "segment", ""
    if len(out.shape) == 2:
        if out.box_concat is not None:
            return "detection", "box rows and class scores concatenated: a YOLO-style head"
        if out.recurrent or (out.final_op in ("Softmax", "LogSoftmax")
                             and out.softmax_axis == 1):
            return "sequence", "per-step scores: read by greedy CTC decoding"
    return None, ""


def _checked(kind: type[TargetKind], out: OutputInfo, why: str) -> type[TargetKind]:
    reason = kind.fits(out)
    if reason is not None:
        takes = [name for name, k in TARGET_KINDS.items() if k.fits(out) is None]
        raise OrtCamError(f"a {kind.name} target ({why}) does not fit output {out.name!r} "
                          f"{out.shown}: {reason}; this output takes --target-kind "
                          f"{'|'.join(takes)}")
    return kind


def _beside_boxes(model: LoadedModel, out: OutputInfo, opts: TargetOptions) -> OutputInfo:
    """The scores ``out`` read with the box output ``opts.boxes_output`` beside them."""
    name = opts.boxes_output
    if opts.kind not in (None, "detection"):
        raise OrtCamError(f"--boxes-output belongs to a detection target, not a {opts.kind} one")
    if name not in model.output_names or name == out.name:
        others = [n for n in model.output_names if n != out.name]
        raise OrtCamError(f"--boxes-output {name!r} is not another output of the model; it has "
                          f"{', '.join(others) or 'no other'}")
    shape = tuple(model.shapes.get(name, ())[1:])
    if len(out.shape) != 2 or 4 not in shape or len(shape) != 2 or not (
            set(shape) - {4} <= set(out.shape) or shape == (4, 4)):
        raise OrtCamError(f"box output {name!r} [N, {', '.join(map(str, shape))}] and scores "
                          f"{out.name!r} {out.shown} are not boxes [N, A, 4] and scores "
                          "[N, A, C] of the same anchors")
    return replace(out, boxes=name)


def read_output(model: LoadedModel, output: str, opts: TargetOptions) -> Reading:
    """The kind and head for ``output``: the flag, the metadata's task, the pattern."""
    out = output_info(model, output)
    note = ""
    if opts.boxes_output is not None:
        out = _beside_boxes(model, out, opts)
        opts = replace(opts, kind="detection")
    if opts.kind is not None:
        kind = _checked(kind_named(opts.kind), out, "--target-kind")
    elif out.task in TARGET_KINDS or out.task in TASKS:
        name = TASKS.get(out.task, out.task)
        kind = _checked(TARGET_KINDS[name], out, f"the model's metadata says {out.task}")
        note = f"the model's metadata says {out.task}"
    else:
        guessed, note = guess(model, out)
        if guessed is None:
            others = [f"{n} {output_info(model, n).shown}" for n in model.output_names
                      if n != output and is_float(model.dtypes.get(n))
                      and guess(model, output_info(model, n))[0] is not None]
            raise OrtCamError(f"cannot tell what output {output!r} {out.shown} holds; pick its "
                              f"target with --target-kind {'|'.join(TARGET_KINDS)} "
                              "(`ort-cam targets` describes them)"
                              + (f", or another output with --output: {', '.join(others)}"
                                 if others else ""))
        if guessed == "class" and opts.concept is not None and out.final_op is None:
            guessed, note = "embedding", "a concept vector was given"
        kind = TARGET_KINDS[guessed]
    kind.accepts(opts)
    return Reading(kind.name, kind.head(out, opts), out, note)
