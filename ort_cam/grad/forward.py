"""Forward-only models for the methods that run the model or its head instead of reading the
gradient pass (Ablation-CAM, Score-CAM): the score on top of the output as ``split_models`` and
``fused_model`` attach it, without the gradient graph.

- ``forward_split``: prefix (model inputs -> the layer and the tensors crossing the cut) and
  forward head (those tensors -> ``scores``);
- ``score_model``: model inputs -> ``scores``.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from ..graph.layers import view_layer
from ..graph.load import LoadedModel
from ..graph.split import find_cut, head_graph, prefix_graph
from .builder import Builder
from .heads import SCORES, _export, _output, _rename_clashes, attach_score
from .table import VjpContext
from .transforms import Head


def _scores_output(model: LoadedModel, graph: gs.Graph, score: str | Head,
                   output: str) -> gs.Tensor:
    """``scores`` of ``graph`` in the ``score`` mode ([N, C] for a class reading)."""
    b = Builder(graph, opset=model.opset, dtypes=model.dtypes, shapes=model.shapes)
    _rename_clashes(graph, b)
    ctx = VjpContext(b)
    score_t = attach_score(graph, ctx, score, output)
    out = b.op("Identity", score_t, out_names=[SCORES])
    out.dtype, out.shape = ctx.dtype(score_t), ["N", *ctx.shape(score_t)[1:]]
    return out


def forward_split(model: LoadedModel, layer: str, score: str | Head = "probability",
                  output: str | None = None) -> tuple[onnx.ModelProto, onnx.ModelProto, list[str]]:
    """(prefix, forward head, the head's inputs: the layer first, then the crossing tensors).

    The cut is ``split_models``'s: the head reads the layer and every tensor that crosses from
    the prefix (skip connections, shape tensors)."""
    model, view = view_layer(model, layer)  # a token layer: cut at its grid, as split_models
    layer, output = view.tensor, _output(model, output, Head.of(score))
    cut = find_cut(model.graph, layer, output)
    prefix = _export(prefix_graph(model, cut), model)
    head = head_graph(model, cut)
    head.outputs = [_scores_output(model, head, score, output)]
    return prefix, _export(head, model), list(cut.head_inputs)


def score_model(model: LoadedModel, score: str | Head = "probability",
                output: str | None = None) -> onnx.ModelProto:
    """Model inputs -> ``scores`` ([N, C] for a class reading), no gradient."""
    output = _output(model, output, Head.of(score))
    graph = model.graph.copy()
    graph.outputs = [_scores_output(model, graph, score, output)]
    return _export(graph, model)
