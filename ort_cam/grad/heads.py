"""Gradient models: the score on top of the output, and d score / d layer below it, as a
fused model (one session run) or as prefix.onnx + head.onnx."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from .._version import __version__
from ..errors import NoGradientRuleError, OrtCamError
from ..graph.layers import resolve_layer, view_layer
from ..graph.load import LoadedModel, is_float
from ..graph.split import Cut, find_cut, head_graph, prefix_graph
from ..graph.view import TOKENS
from .backprop import add_gradient
from .builder import Builder
from .layers import suggest_layer_after
from .spec import (
    GRAD,
    ON_DEMAND_ROWS,
    SCORES,
    TARGET_VALUE,
    TARGET_WEIGHTS,
    WANT_SCORES,
    WEIGHT_ROWS,
    map_seeded,
)
from .table import VjpContext
from .tail import Tail, find_tail, scores_on_demand
from .transforms import SCORE_MODES, Head, attach_target

__all__ = ["GRAD", "SCORES", "SCORE_MODES", "TARGET_WEIGHTS", "GradientModels", "Head",
           "attach_score", "check_output", "fused_model", "split_models"]



@dataclass
class GradientModels:
    """What ``ort-cam split`` writes, plus the fused model the engine runs."""

    prefix: onnx.ModelProto
    head: onnx.ModelProto
    manifest: dict


def _rename_clashes(graph: gs.Graph, b: Builder) -> dict[str, str]:
    """Move the model's own tensors off the names the head contract takes (types follow);
    returns the names moved (old -> new)."""
    tensors, moved = graph.tensors(), {}
    for name in (SCORES, GRAD, TARGET_WEIGHTS):
        if name in tensors:
            t = tensors[name]
            dtype, shape = b.dtype(t), b.shape(t)
            t.name = moved[name] = f"{name}__model"
            b.declare(t, dtype, shape)
    return moved


def attach_score(graph: gs.Graph, ctx: VjpContext, mode: str | Head, output: str) -> gs.Tensor:
    """The score tensor S on top of ``output``: [N, C] for a class reading (softmax
    probabilities, pre-softmax logits, sigmoid, ReST, ±logit), else the transform's shape
    (``transforms.Head``; METHODS.md, "Targets")."""
    return attach_target(graph, ctx, Head.of(mode), output)


def _top1_seed(b: Builder, score: gs.Tensor, weights: gs.Tensor) -> gs.Tensor:
    """``weights``, except that a row of zeros becomes the one-hot row of that row's top score
    (the first on ties, as ``np.argmax``): so one run with zero weights gives the scores, the
    top-1 class and its gradient. A non-zero row is kept exactly (it gets ``+ 0``)."""
    shape, dtype = b.shape(score), b.dtype(score)
    assert shape is not None and dtype is not None  # attach_score typed it
    top = b.declare(b.op("ArgMax", score, axis=1, keepdims=1), np.int64, (shape[0], 1))
    classes = b.const(np.arange(shape[1], dtype=np.int64).reshape(1, -1), hint="classes")
    to = helper.np_dtype_to_tensor_dtype(dtype)
    onehot = b.op("Cast", b.op("Equal", top, classes), to=to)
    size = b.reduce("ReduceSum", b.op("Abs", weights), [1])
    empty = b.op("Cast", b.op("Equal", size, b.const(np.zeros((1, 1), dtype))), to=to)
    return b.op("Add", weights, b.op("Mul", empty, onehot))


def _detection_seed(b: Builder, score: gs.Tensor, weights: gs.Tensor,
                    rows: tuple[int, int]) -> gs.Tensor:
    """``weights``, except that a row of zeros of a detection head S [N, 4+C, A] (``rows``:
    the axis of its 4+C rows, C) becomes the default detection target's: 1 at the anchor
    with the best class score and that anchor's best class (the first on ties, as
    ``np.argmax``; the top-1 left by NMS)."""
    shape, dtype = b.shape(score), b.dtype(score)
    assert shape is not None and dtype is not None  # attach_score typed it
    axis, n_classes = rows
    other = 3 - axis
    to = helper.np_dtype_to_tensor_dtype(dtype)

    def along(values: np.ndarray, at: int) -> gs.Constant:
        where = [1, 1, 1]
        where[at] = len(values)
        return b.const(values.astype(np.int64).reshape(where), hint="index")

    cls = b.op("Gather", score, b.const(np.arange(4, 4 + n_classes, dtype=np.int64)),
               axis=axis)
    best = b.reduce("ReduceMax", cls, [axis])
    anchor = b.declare(b.op("ArgMax", best, axis=other, keepdims=1), np.int64, None)
    at = b.op("Equal", anchor, along(np.arange(shape[other]), other))
    column = b.reduce("ReduceSum", b.op("Mul", cls, b.op("Cast", at, to=to)), [other])
    top = b.declare(b.op("ArgMax", column, axis=axis, keepdims=1), np.int64, None)
    row = b.op("Equal", b.op("Add", top, b.const(np.full((1, 1, 1), 4, np.int64))),
               along(np.arange(shape[axis]), axis))
    seed = b.op("Cast", b.op("And", row, at), to=to)
    size = b.reduce("ReduceSum", b.op("Abs", weights), [1, 2])
    empty = b.op("Cast", b.op("Equal", size, b.const(np.zeros((1, 1, 1), dtype))), to=to)
    return b.op("Add", weights, b.op("Mul", empty, seed))


def _map_seed(b: Builder, score: gs.Tensor, weights: gs.Tensor, axis: int) -> gs.Tensor:
    """``weights``, except that a row of zeros of a map [N, C, ...] (class axis ``axis``)
    becomes the segment target's default: class c the one with the most argmax pixels (the
    first on ties, as ``np.argmax``), 1 where a pixel's argmax is c. Built where S is
    computed on demand (``grad.tail``), so only the run of x pays for it."""
    shape, dtype = b.shape(score), b.dtype(score)
    assert shape is not None and dtype is not None  # the tail's forward typed it
    rank, to = len(shape), helper.np_dtype_to_tensor_dtype(dtype)
    top = b.declare(b.op("ArgMax", score, axis=axis, keepdims=1), np.int64, None)
    where = [1] * rank
    where[axis] = shape[axis]
    classes = b.const(np.arange(shape[axis], dtype=np.int64).reshape(where), hint="classes")
    onehot = b.op("Equal", top, classes)
    other = [a for a in range(1, rank) if a != axis]
    counts = b.declare(b.reduce("ReduceSum", b.op("Cast", onehot, to=to), other), dtype, None)
    best = b.declare(b.op("ArgMax", counts, axis=axis, keepdims=1), np.int64, None)
    mask = b.op("Cast", b.op("And", onehot, b.op("Equal", classes, best)), to=to)
    l1 = b.declare(b.reduce("ReduceL1", weights, range(1, rank)), dtype, None)
    empty = b.op("Cast", b.op("Equal", l1, b.const(np.zeros([1] * rank, dtype))), to=to)
    return b.op("Add", weights, b.op("Mul", empty, mask))


def _gradient_graph(model: LoadedModel, graph: gs.Graph, layer: str, head: Head,
                    output: str, top1_seed: bool = False, rows: tuple[int, int] | None = None,
                    on_demand: bool = False) -> tuple[gs.Graph, list[gs.Tensor]]:
    """Append S (``head`` on ``output``), the input ``target_weights`` W of S's shape and
    d(Σ W ⊙ S)/d layer; returns the graph and its ``scores`` (S) and ``grad`` outputs. With
    ``on_demand``, a map that ends in a linear tail (``grad.tail``) gets the input
    ``want_scores`` and the output ``target_value`` too, and S only where asked."""
    b = Builder(graph, opset=model.opset, dtypes=model.dtypes, shapes=model.shapes)
    moved = _rename_clashes(graph, b)  # (a detector's output named scores, say)
    output = moved.get(output, output)
    ctx = VjpContext(b)
    weights = gs.Variable(TARGET_WEIGHTS)  # (an IoU head reads its box from it)
    score = attach_target(graph, ctx, head, output, weights)
    shape, dtype = ctx.shape(score), ctx.dtype(score)
    per_image = ["N", *shape[1:]]
    tail = find_tail(score, layer) if on_demand and not head.iou else None
    weights.dtype = dtype
    weights.shape = [WEIGHT_ROWS, *shape[1:]] if tail is not None else per_image
    graph.inputs.append(b.declare(weights, dtype, shape))
    if tail is not None:
        return graph, _on_demand(model, graph, b, ctx, tail, layer, head,
                                 top1_seed and map_seeded(head, len(shape) - 1))
    seed = weights
    if top1_seed and len(shape) == 2:
        seed = _top1_seed(b, score, weights)
    elif top1_seed and rows is not None and not head.iou and len(shape) == 3:
        seed = _detection_seed(b, score, weights, rows)
    grad = _add_gradient(model, graph, layer, score, seed, ctx)
    return graph, _outputs(model, b, layer, score, grad)


def _add_gradient(model: LoadedModel, graph: gs.Graph, layer: str, score: gs.Tensor,
                  seed: gs.Tensor, ctx: VjpContext) -> gs.Tensor:
    try:
        return add_gradient(graph, layer, score, seed, ctx)
    except NoGradientRuleError as exc:
        raise NoGradientRuleError(exc.op_type, exc.node_name,
                                  suggest_layer_after(model, exc.node_name), exc.detail) from None


def _outputs(model: LoadedModel, b: Builder, layer: str, score: gs.Tensor,
             grad: gs.Tensor) -> list[gs.Tensor]:
    """The ``scores`` and ``grad`` outputs, typed and shaped as the engine reads them."""
    shape, dtype = b.shape(score), b.dtype(score)
    assert shape is not None and dtype is not None
    outs = [b.op("Identity", score, out_names=[SCORES]), b.op("Identity", grad, out_names=[GRAD])]
    outs[0].dtype, outs[0].shape = dtype, ["N", *shape[1:]]
    outs[1].dtype = model.dtypes.get(layer, dtype)
    outs[1].shape = b.graph.tensors()[layer].shape
    return outs


def _on_demand(model: LoadedModel, graph: gs.Graph, b: Builder, ctx: VjpContext, tail: Tail,
               layer: str, head: Head, seeded: bool) -> list[gs.Tensor]:
    """The outputs of a map computed on demand: ``scores`` (S where ``want_scores``, else an
    empty map), ``grad`` from Z's gradient Tᵀ(W), and ``target_value``; with ``seeded``, a
    zero row of W asks for the segment target's default (``_map_seed``) where S is computed."""
    want = gs.Variable(WANT_SCORES, dtype=np.bool_, shape=[])
    graph.inputs.append(b.declare(want, np.bool_, ()))
    weights = graph.tensors()[TARGET_WEIGHTS]
    seed = (lambda sub, s, w: _map_seed(sub, s, w, head.axis)) if seeded else None
    scores, g_z, value = scores_on_demand(b, tail, weights, want, seed)
    grad = _add_gradient(model, graph, layer, tail.start, g_z, ctx)
    outs = _outputs(model, b, layer, scores, grad)
    outs[0].shape = [ON_DEMAND_ROWS, *outs[0].shape[1:]]  # empty where not asked for
    out = b.op("Identity", value, out_names=[TARGET_VALUE])
    out.dtype, out.shape = np.float64, ["N"]
    return [*outs, out]


def _export(graph: gs.Graph, model: LoadedModel) -> onnx.ModelProto:
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    proto = gs.export_onnx(graph, do_type_check=False)
    proto.ir_version = model.proto.ir_version
    proto.producer_name = "ort_cam"
    proto.producer_version = __version__
    return proto


_CLASS = Head()


def _output(model: LoadedModel, output: str | None, head: Head | None = _CLASS) -> str:
    """The output to explain (default: ``model.output``), checked to suit ``head`` (None:
    not checked): class scores [N, C] (trailing 1-axes allowed) for a class reading, one
    logit per image for ``binary``, a float tensor with the batch first for the others."""
    if output is None:
        output = model.output
    if output not in model.output_names:
        raise OrtCamError(f"unknown output {output!r}; the model has {model.output_names}")
    if head is not None:
        check_output(model, output, head)
    return output


def _is_scores(model: LoadedModel, name: str) -> bool:
    shape = model.shapes.get(name, ())
    return (is_float(model.dtypes.get(name)) and len(shape) >= 2 and shape[0] == model.probe_batch
            and all(d == 1 for d in shape[2:]))


def _shown(model: LoadedModel, name: str) -> list:
    shape = model.shapes.get(name, ())
    return ["N", *shape[1:]] if shape and shape[0] == model.probe_batch else list(shape)


def check_output(model: LoadedModel, output: str, head: Head) -> None:
    """Refuse an output that ``head`` cannot read: anything but float scores [N, C] for a
    class reading (a map or detections are no class scores, and reading them as one is
    wrong), an integer output for any."""
    if head.flatten and head.transform in (*SCORE_MODES, "output"):
        check_scores_output(model, output)
        return
    shape, dtype = model.shapes.get(output, ()), model.dtypes.get(output)
    if not is_float(dtype):
        raise OrtCamError(f"output {output!r} is {np.dtype(dtype).name}, not scores; "
                          "ort_cam differentiates float outputs")
    if not shape or shape[0] != model.probe_batch:
        raise OrtCamError(f"output {output!r} has shape {_shown(model, output)}, whose first "
                          "axis is not the batch; ort_cam needs one output row per image")


def check_scores_output(model: LoadedModel, output: str) -> None:
    """Refuse an output that is not class scores [N, C]: a segmentation map, detections,
    integer labels are not one score per class, and explaining them as one is wrong."""
    if _is_scores(model, output):
        return
    dtype = model.dtypes.get(output)
    what = (f"is {np.dtype(dtype).name}" if not is_float(dtype)
            else f"has shape {_shown(model, output)}")
    others = [f"{n} {['N', *model.shapes[n][1:]]}" for n in model.output_names
              if n != output and _is_scores(model, n)]
    hint = (f"pick one with --output: {', '.join(others)}" if others else
            "ort_cam explains classifiers, not segmentation or detection outputs")
    raise OrtCamError(f"output {output!r} {what}, not class scores [N, C]; {hint}")


def fused_model(model: LoadedModel, layer: str, score: str | Head = "probability",
                output: str | None = None, require_spatial: bool = True,
                top1_seed: bool = False, rows: tuple[int, int] | None = None,
                on_demand: bool = False) -> onnx.ModelProto:
    """Model inputs + ``target_weights`` -> (layer tensor, ``scores``, ``grad``), one session.

    ``score``: a class reading (``SCORE_MODES``) or a ``Head``; ``scores`` is S, the head's
    transform of the output, ``target_weights`` W has S's shape, ``grad`` = d(Σ W ⊙ S)/d layer.
    With ``require_spatial=False`` any float tensor (or graph input) may be the layer, and an
    output of rank != 2 is flattened to [N, K] for the score: the rule tests use this. With
    ``top1_seed``, a row of zero ``target_weights`` asks for the gradient of that row's top-1
    class (one run gives the target and its gradient); other rows are used as given; so is,
    given ``rows`` (the axis of a detection head's 4+C rows in S, and C), a zero row of a
    detection head (the top-1 anchor). With ``on_demand``, a map that ends in a linear
    tail (a segmenter's upsampling, ``grad.tail``) is computed only where the input
    ``want_scores`` asks, and the output ``target_value`` gives y = Σ W ⊙ S per row.
    """
    if require_spatial:
        model, view = view_layer(model, layer)
        layer = view.tensor
    else:
        layer = resolve_layer(model, layer)
    head = Head.of(score)
    output = _output(model, output, head if require_spatial else None)
    graph = model.graph.copy()
    graph, outs = _gradient_graph(model, graph, layer, head, output, top1_seed, rows,
                                  on_demand)
    layer_t = graph.tensors()[layer]
    layer_t.dtype = model.dtypes[layer]
    layer_t.shape = ["N", *model.shapes[layer][1:]]
    graph.outputs = [layer_t, *outs]
    return _export(graph, model)


def split_models(model: LoadedModel, layer: str, score: str | Head = "probability",
                 output: str | None = None) -> GradientModels:
    """prefix.onnx, head.onnx (with ``scores`` and ``grad``) and the manifest. A token layer
    is cut at its NCHW grid (``graph.view_layer``): the prefix gives the grid under the
    layer's name, and its extra tokens as a crossing tensor."""
    model, view = view_layer(model, layer)
    layer, axis = view.tensor, view.channel_axis
    reading = Head.of(score)
    output = _output(model, output, reading)
    cut: Cut = find_cut(model.graph, layer, output)
    prefix = _export(prefix_graph(model, cut), model)
    head = head_graph(model, cut)
    head, (scores, grad) = _gradient_graph(model, head, layer, reading, output)
    head.outputs = [scores, grad]
    manifest = {
        "ort_cam_version": __version__,
        "layer": layer,
        "layer_shape": ["N", *model.shapes[layer][1:]],
        "crossing": cut.crossing,
        "score": reading.transform,
        "channel_axis": axis,
        "layout": "NCHW" if axis == 1 else "NHWC",
        "opset": model.opset,
        "model_inputs": model.input_names,
        "model_output": output,
        "head_inputs": [*cut.head_inputs, TARGET_WEIGHTS],
        "head_outputs": [SCORES, GRAD],
    }
    if reading != Head(reading.transform):  # a map or detection head: how S is read
        manifest["head"] = reading.record()
    if cut.rebuilt:  # (only then: a manifest without them reads as before)
        manifest["rebuilt"] = cut.rebuilt
    if layer in model.viewed:
        manifest["tokens"] = {"shape": ["N", *model.shapes[layer + TOKENS][1:]],
                              "grid": list(view.grid), "extra_tokens": view.extra_tokens}
    return GradientModels(prefix, _export(head, model), manifest)
