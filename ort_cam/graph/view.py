"""A token layer seen as a grid: [N, T, C] with ``extra`` leading tokens (class, distillation)
and h·w grid tokens becomes an NCHW tensor [N, C, h, w] inside the graph, so that everything
downstream (gradient models, split, the maps, export) sees an ordinary NCHW layer.

``grid_view`` rewrites a copy of the graph: the token tensor keeps flowing to its consumers
through an exact round trip (slice, reshape, transpose, and back, the extra tokens
concatenated again in front), and the grid tensor in the middle takes the layer's name. The
gradient with respect to the grid is then the gradient with respect to the grid tokens,
rearranged; the extra tokens are left out of the maps, as pytorch-grad-cam's
``reshape_transform`` for ViTs leaves out the class token.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs

from .load import LoadedModel

#: Suffixes of the tensors ``grid_view`` adds, after the layer's name.
TOKENS, EXTRA = "::tokens", "::extra_tokens"


def grid_view(model: LoadedModel, name: str, grid: tuple[int, int], extra: int
              ) -> LoadedModel:
    """``model`` with the token tensor ``name`` [N, T, C] (T = extra + h·w) replaced, under
    its own name, by its grid [N, C, h, w] (see the module docstring)."""
    g = model.graph.copy()
    tokens = g.tensors()[name]
    shape, dtype = model.shapes[name], model.dtypes[name]
    n, t, c = shape
    h, w = grid
    tokens.name = name + TOKENS
    consumers = list(tokens.outputs)
    shapes = {**model.shapes, tokens.name: shape}
    dtypes = {**model.dtypes, tokens.name: dtype}

    def add(op: str, ins: list, out: str, out_shape: tuple[int, ...], **attrs) -> gs.Variable:
        y = gs.Variable(out, dtype=dtype)
        g.nodes.append(gs.Node(op, name=f"{out}/{op}", inputs=ins, outputs=[y], attrs=attrs))
        shapes[out], dtypes[out] = out_shape, dtype
        return y

    def ints(values: list[int], suffix: str) -> gs.Constant:
        return gs.Constant(f"{name}::{suffix}", np.asarray(values, dtype=np.int64))

    cols = add("Slice", [tokens, ints([extra], "grid_start"), ints([t], "grid_end"),
                         ints([1], "token_axis")], f"{name}::grid_tokens", (n, h * w, c))
    nhwc = add("Reshape", [cols, ints([0, h, w, c], "nhwc")], f"{name}::grid_nhwc",
               (n, h, w, c))
    layer = add("Transpose", [nhwc], name, (n, c, h, w), perm=[0, 3, 1, 2])
    back = add("Transpose", [layer], f"{name}::back_nhwc", (n, h, w, c), perm=[0, 2, 3, 1])
    flat = add("Reshape", [back, ints([0, h * w, c], "flat")], f"{name}::back_tokens",
               (n, h * w, c))
    if extra:
        lead = add("Slice", [tokens, ints([0], "extra_start"), ints([extra], "extra_end"),
                             ints([1], "extra_axis")], name + EXTRA, (n, extra, c))
        flat = add("Concat", [lead, flat], f"{name}::rebuilt", (n, t, c), axis=1)
    for node in consumers:
        for i, x in enumerate(node.inputs):
            if x is tokens:
                node.inputs[i] = flat
    g.outputs = [flat if x is tokens else x for x in g.outputs]
    g.toposort()
    return replace(model, graph=g, shapes=shapes, dtypes=dtypes,
                   viewed={**model.viewed, name: (grid, extra)})
