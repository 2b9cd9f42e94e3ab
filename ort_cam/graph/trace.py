"""What each axis of a tensor is, traced through the graph from where it is certain.

A ``Trace`` gives every axis a role: ``N`` (the batch), ``C`` (channels, or a part of them
after a reshape splits them), ``H`` and ``W`` (the spatial grid), ``G`` (the grid flattened,
row-major: h·w tokens), ``T`` (tokens: ``extra`` leading tokens, a class token say, then the
h·w grid tokens), ``1`` (a unit axis) or ``?`` (unknown). Roles start at the ops whose layout
the ONNX spec fixes (Conv, pooling, normalisation: NCHW) and at a LayerNormalization or a
MatMul with a weight over the last axis (channels last), and follow the tensors through
Transpose (axes permuted), Reshape and its kin (axes grouped by their sizes: a split channel
axis stays channels, H and W merged make a grid axis G, G split back makes H and W), Concat
(a grid concatenated with class or distillation tokens makes T), Slice (T cut back to its
grid), and element-wise ops (an input of the output's shape lends its roles; a BatchNorm of
any rank is one). Axes merged by a reshape into one whose role has no name (the batch and the
tokens, flattened for a BatchNorm over [N·T, C] as LeViT's ``x.flatten(0, 1)`` does) are
remembered with their sizes, so that a reshape splitting that axis back into the same sizes
(``reshape_as(x)``) gives their roles back. Anything else is unknown: only what can be traced
is told.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

Shape = tuple[int, ...]

#: Ops whose rank-4 outputs are NCHW by the ONNX spec.
NCHW_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "InstanceNormalization", "LpPool", "LRN", "GlobalLpPool",
    "FusedConv", "NhwcConv",
}
_RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
#: Normalisations over axis 1 whose output is element-wise in their input, at any rank.
_PER_CHANNEL = {"BatchNormalization", "InstanceNormalization"}
#: An axis merged from several: (its index, their roles, their sizes).
Merged = tuple[int, tuple[str, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Trace:
    """The role of every axis, and for a G or T axis the grid (h, w) and the leading extra
    tokens; ``merged``: the axes that hold several merged ones (``Merged``)."""

    roles: tuple[str, ...]
    grid: tuple[int, int] | None = None
    extra: int = 0
    merged: tuple[Merged, ...] = ()

    @property
    def layout(self) -> str | None:
        """NCHW, NHWC or tokens ([N, T, C] or [N, h·w, C]), else None."""
        if self.roles == ("N", "C", "H", "W"):
            return "NCHW"
        if self.roles == ("N", "H", "W", "C"):
            return "NHWC"
        if len(self.roles) == 3 and self.roles[0] == "N" and self.roles[1] in "GT" \
                and self.roles[2] == "C" and self.grid is not None:
            return "tokens"
        return None


def trace_graph(graph: gs.Graph, shapes: dict[str, Shape], batch: int) -> dict[str, Trace]:
    """The trace of every tensor whose roles can be told (``shapes``: the probe run's, whose
    batch was ``batch``: a channels-last guess needs the batch on axis 0)."""
    found: dict[str, Trace] = {}
    for inp in graph.inputs:
        s = shapes.get(inp.name, ())
        if len(s) == 4:
            nhwc = s[3] in (1, 3, 4) and s[1] not in (1, 3, 4)
            found[inp.name] = Trace(("N", "H", "W", "C") if nhwc else ("N", "C", "H", "W"))
    for node in graph.nodes:
        out = node.outputs[0] if node.outputs else None
        if out is None or not out.name or out.name not in shapes:
            continue
        t = _trace(node, found, shapes)
        if t is not None and t.roles[0] == "N" and shapes[out.name][0] != batch:
            t = None  # the batch is not where a guess put it (windows merged into it)
        if t is not None and len(t.roles) == len(shapes[out.name]):
            found[out.name] = t
    return found


def _trace(node: gs.Node, found: dict[str, Trace], shapes: dict[str, Shape]) -> Trace | None:
    out_shape = shapes[node.outputs[0].name]
    src = found.get(node.inputs[0].name) if node.inputs else None
    if node.op in NCHW_OPS:
        if len(out_shape) == 4:
            return Trace(("N", "C", "H", "W"))
        same = src is not None and shapes.get(node.inputs[0].name) == out_shape
        return src if same and node.op in _PER_CHANNEL else None
    if node.op == "Transpose":
        if src is None:
            return None
        perm = [int(p) for p in node.attrs.get("perm", list(range(len(src.roles)))[::-1])]
        merged = tuple((perm.index(i), r, s) for i, r, s in src.merged)
        return replace(src, roles=tuple(src.roles[p] for p in perm), merged=merged)
    if node.op in _RESHAPES:
        return _reshape(src, shapes.get(node.inputs[0].name), out_shape)
    if node.op == "Concat":
        return _concat(node, found, shapes)
    if node.op == "Slice":
        return _slice(node, src, shapes)
    if node.op in ("Pad", "Resize") and src is not None:
        return _resized(node, src, shapes)
    if node.op in ("LayerNormalization", "MatMul"):
        return _last_axis(node, src, out_shape, shapes)
    return _elementwise(node, found, shapes, out_shape)


def _elementwise(node: gs.Node, found: dict[str, Trace], shapes: dict[str, Shape],
                 out_shape: Shape) -> Trace | None:
    """An input of the output's shape lends its roles (the first one that has them); else,
    for a rank-4 output, any rank-4 input that has them (broadcasting both ways)."""
    for inp in node.inputs:
        if inp.name in found and shapes.get(inp.name) == out_shape:
            return found[inp.name]
    for inp in node.inputs:
        tr = found.get(inp.name)
        if len(out_shape) == 4 and tr is not None and tr.layout in ("NCHW", "NHWC"):
            return tr
    return None


def _last_axis(node: gs.Node, src: Trace | None, out_shape: Shape,
               shapes: dict[str, Shape]) -> Trace | None:
    """LayerNormalization over the last axis, or MatMul by a constant weight: the last axis is
    channels; the other roles are the input's (a rank-4 input of unknown roles is NHWC)."""
    if node.op == "LayerNormalization" and int(node.attrs.get("axis", -1)) not in (
            -1, len(out_shape) - 1):
        return None
    if node.op == "MatMul":
        w = node.inputs[1]
        if isinstance(node.inputs[0], gs.Constant) or not isinstance(w, gs.Constant) \
                or len(w.values.shape) != 2:
            return None  # not activations times a weight over their last axis
    if src is not None and src.roles[-1] in ("C", "?"):
        return replace(src, roles=(*src.roles[:-1], "C"))
    if src is None and len(out_shape) == 4:
        return Trace(("N", "H", "W", "C"))
    if src is None and len(out_shape) == 3:
        return Trace(("N", "?", "C"))
    return None


def _groups(a: Shape, b: Shape) -> list[tuple[list[int], list[int]]] | None:
    """Axes of ``a`` and ``b`` grouped so that each group holds the same number of elements
    (size-1 axes in groups of their own); None when the sizes do not line up."""
    ia = [i for i, d in enumerate(a) if d != 1]
    ib = [j for j, d in enumerate(b) if d != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(ia) and j < len(ib):
        ga, gb = [ia[i]], [ib[j]]
        pa, pb = a[ia[i]], b[ib[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(ia):
                ga.append(ia[i])
                pa *= a[ia[i]]
                i += 1
            elif pb < pa and j < len(ib):
                gb.append(ib[j])
                pb *= b[ib[j]]
                j += 1
            else:
                return None
        groups.append((ga, gb))
    return groups if i == len(ia) and j == len(ib) else None


def _reshape(src: Trace | None, a: Shape | None, b: Shape) -> Trace | None:
    if src is None or a is None or int(np.prod(a)) != int(np.prod(b)):
        return None
    groups = _groups(a, b)
    if groups is None:
        return None
    roles = ["1" if d == 1 else "?" for d in b]
    grid = src.grid
    merged: list[Merged] = []
    for ga, gb in groups:
        got = [src.roles[i] for i in ga]
        if len(gb) == 1:
            if len(got) == 1:
                roles[gb[0]] = got[0]
            elif all(r == "C" for r in got):
                roles[gb[0]] = "C"
            elif got == ["H", "W"]:
                roles[gb[0]], grid = "G", (a[ga[0]], a[ga[1]])
            else:  # remembered, to be split back
                merged.append((gb[0], tuple(got), tuple(a[i] for i in ga)))
        elif len(ga) == 1 and got[0] == "C":
            for j in gb:
                roles[j] = "C"
        elif len(ga) == 1 and got[0] == "G" and src.grid == (b[gb[0]], b[gb[1]]) \
                and len(gb) == 2:
            roles[gb[0]], roles[gb[1]] = "H", "W"
        elif len(ga) == 1:
            _split_back(src, ga[0], [b[j] for j in gb], gb, roles)
    kept = "G" in roles or "T" in roles or any(r in "GT" for m in merged for r in m[1])
    return Trace(tuple(roles), grid if kept else None, src.extra if "T" in roles else 0,
                 tuple(merged))


def _split_back(src: Trace, axis: int, sizes: list[int], to: list[int], roles: list[str]
                ) -> None:
    """An axis merged from several (``Trace.merged``) split back into the same sizes: their
    roles again."""
    for i, got, was in src.merged:
        if i == axis and list(was) == sizes:
            for j, r in zip(to, got, strict=True):
                roles[j] = r


def _concat(node: gs.Node, found: dict[str, Trace], shapes: dict[str, Shape]) -> Trace | None:
    """Along C/H/W: the inputs' common roles. Along a grid axis G (or T) with other tokens in
    front (class, distillation): a T axis with those as extra tokens."""
    rank = len(shapes[node.outputs[0].name])
    axis = int(node.attrs["axis"]) % rank
    known = [(k, found[t.name]) for k, t in enumerate(node.inputs) if t.name in found]
    if not known:
        return None
    roles = {tr.roles for _, tr in known}
    first = known[0][1]
    role = first.roles[axis]
    if role in ("C", "H", "W", "N") and len(roles) == 1 and len(known) == len(node.inputs):
        return first
    if role not in ("G", "T") or len(known) != 1:
        return None
    k, tr = known[0]
    if k != len(node.inputs) - 1:
        return None  # tokens after the grid: not told
    lead = sum(shapes[t.name][axis] for t in node.inputs[:k])
    roles_out = tuple("T" if i == axis else r for i, r in enumerate(tr.roles))
    return Trace(roles_out, tr.grid, tr.extra + lead)


def _slice(node: gs.Node, src: Trace | None, shapes: dict[str, Shape]) -> Trace | None:
    """Slicing keeps the roles (a crop of H or W, a part of C); a T axis cut to exactly its
    grid tokens becomes G."""
    if src is None:
        return None
    out = shapes[node.outputs[0].name]
    x = shapes[node.inputs[0].name]
    changed = [i for i, (p, q) in enumerate(zip(x, out)) if p != q]
    if any(src.roles[i] == "G" for i in changed):
        return None
    t_axes = [i for i in changed if src.roles[i] == "T"]
    if not t_axes:
        return src
    (axis,) = t_axes
    assert src.grid is not None
    if out[axis] == src.grid[0] * src.grid[1] and _slice_start(node, axis, len(x)) == src.extra:
        return Trace(tuple("G" if i == axis else r for i, r in enumerate(src.roles)), src.grid)
    return None


def _slice_start(node: gs.Node, axis: int, rank: int) -> int | None:
    """The constant start of ``node`` (a Slice) along ``axis``, if it is one."""
    values = [t.values if isinstance(t, gs.Constant) else None for t in node.inputs[1:5]]
    starts, axes = values[0], values[2] if len(values) > 2 else None
    if starts is None or (len(node.inputs) > 3 and node.inputs[3].name and axes is None):
        return None
    axes_list = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    return int(starts[axes_list.index(axis)]) if axis in axes_list else 0


def _resized(node: gs.Node, src: Trace, shapes: dict[str, Shape]) -> Trace | None:
    """Pad and Resize keep the roles, unless they change a grid axis (G or T)."""
    out, x = shapes[node.outputs[0].name], shapes[node.inputs[0].name]
    if len(out) != len(x) or any(src.roles[i] in "GT" and p != q
                                 for i, (p, q) in enumerate(zip(x, out))):
        return None
    return src


def square_grid(tokens: int, max_extra: int = 8) -> tuple[tuple[int, int], int] | None:
    """(grid, extra) for ``tokens`` = extra + h·h with the fewest extra tokens (at most
    ``max_extra``, h > 1); None when no count fits."""
    for extra in range(min(max_extra, tokens - 4) + 1):
        h = int(round(np.sqrt(tokens - extra)))
        if h > 1 and h * h == tokens - extra:
            return (h, h), extra
    return None
