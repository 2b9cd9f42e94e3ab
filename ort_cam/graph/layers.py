"""Layers: which tensors have a channel axis and a spatial grid, and where the channels are.
(Whether the head above a layer can be differentiated is ``grad.layers``'s question.)

A layer is NCHW [N,K,h,w], NHWC [N,h,w,K] (channels last: Swin's LayerNorm outputs, tf2onnx
exports) or tokens [N,T,K] (ViT/DeiT: T = extra tokens + h·w), told by ``trace`` where the
graph says so, or by the caller (``LayerHint``: a layout, a grid, a number of extra tokens).
A token layer is explained on its grid: ``view_layer`` returns the model rewritten so that
the layer's name holds the NCHW grid (``view.grid_view``)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import onnx_graphsurgeon as gs

from ..errors import NotSpatialError, UnknownLayerError
from ..preprocess import input_geometry
from .inputs import image_input
from .load import LoadedModel, is_float
from .spec import LAYER_LAYOUTS  # (what ``--layer-layout`` takes)
from .trace import Trace, square_grid, trace_graph
from .view import grid_view


@dataclass(frozen=True)
class LayerHint:
    """What the caller says about a layer where the graph does not (or to override it):
    ``layout`` (NCHW, NHWC or tokens), and for a token layer its ``grid`` (h, w) and
    ``extra_tokens`` (leading class/distillation tokens)."""

    layout: str | None = None
    grid: tuple[int, int] | None = None
    extra_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in LAYER_LAYOUTS:
            raise NotSpatialError(f"unknown layer layout {self.layout!r}; use "
                                  f"{', '.join(LAYER_LAYOUTS)}")
        if self.grid is not None:
            h, w = (int(v) for v in self.grid)
            if h < 1 or w < 1:
                raise NotSpatialError(f"grid {h}x{w} is not a positive height x width")
            object.__setattr__(self, "grid", (h, w))
        if self.extra_tokens is not None and int(self.extra_tokens) < 0:
            raise NotSpatialError(f"extra tokens must be >= 0 (got {self.extra_tokens})")

    def record(self) -> dict | None:
        """The hint as a JSON value (None when it says nothing): cache keys, manifests."""
        fields = {"layout": self.layout, "grid": list(self.grid) if self.grid else None,
                  "extra_tokens": self.extra_tokens}
        return fields if any(v is not None for v in fields.values()) else None


@dataclass(frozen=True)
class LayerView:
    """A resolved layer: its tensor, layout, channel axis, grid (h, w), and for a token layer
    its leading extra tokens. ``told``: whether the layout came from the graph ("traced"),
    from T − k being a square ("square"), or from the caller ("given")."""

    tensor: str
    layout: str
    grid: tuple[int, int]
    extra_tokens: int = 0
    told: str = "traced"

    @property
    def channel_axis(self) -> int:
        """The channel axis of the layer as the gradient models give it (a token layer is
        given as its NCHW grid)."""
        return 3 if self.layout == "NHWC" else 1


def traces(model: LoadedModel) -> dict[str, Trace]:
    return trace_graph(model.graph, model.shapes, model.probe_batch)


def layouts(model: LoadedModel) -> dict[str, str]:
    """Layout of every rank-4 tensor that can be told (NCHW or NHWC), from ``trace``."""
    return {name: tr.layout for name, tr in traces(model).items()
            if tr.layout in ("NCHW", "NHWC") and len(model.shapes.get(name, ())) == 4}


def token_grid(model: LoadedModel, name: str, found: dict[str, Trace] | None = None
               ) -> tuple[tuple[int, int], int, str] | None:
    """(grid, extra tokens, how told) of a rank-3 tensor [N, T, C] whose last axis is
    channels: traced from the patch embedding, else T − k a square (the fewest k)."""
    found = traces(model) if found is None else found
    tr, shape = found.get(name), model.shapes.get(name, ())
    if tr is None or len(shape) != 3 or tr.roles[0] != "N" or tr.roles[2] != "C" \
            or shape[0] != model.probe_batch:
        return None
    if tr.layout == "tokens":
        assert tr.grid is not None
        return tr.grid, tr.extra, "traced"
    guess = square_grid(shape[1]) if tr.roles[1] == "?" else None
    return None if guess is None else (*guess, "square")


def resolve_layer(model: LoadedModel, name: str) -> str:
    """The tensor a user means by ``name``: a tensor name, or a node name (its first output)."""
    tensors = model.graph.tensors()
    t = tensors.get(name)
    if isinstance(t, gs.Variable) and (t.inputs or t in model.graph.inputs):
        return name
    for node in model.graph.nodes:
        if node.name == name and node.outputs:
            return node.outputs[0].name
    choices = [n for n, t in tensors.items() if isinstance(t, gs.Variable) and t.inputs]
    choices += [n.name for n in model.graph.nodes if n.name]
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise UnknownLayerError(
        f"unknown layer {name!r}{hint} (run `ort-cam layers MODEL` to list them)"
    )


def _not_spatial(tensor: str, shape: tuple[int, ...]) -> NotSpatialError:
    return NotSpatialError(
        f"layer {tensor!r} has shape {list(shape)}, not [N,K,h,w], [N,h,w,K] or tokens "
        "[N,T,K]; pick a convolution, pooling or transformer block output (see `ort-cam "
        "layers MODEL`)")


def layer_view(model: LoadedModel, name: str, hint: LayerHint | None = None) -> LayerView:
    """Resolve ``name`` and tell its layout and grid (``hint`` overrides the graph)."""
    tensor = resolve_layer(model, name)
    kept = model.hints.get(tensor)
    hint = hint or (kept if isinstance(kept, LayerHint) else None) or LayerHint()
    shape = model.shapes.get(tensor, ())
    if not is_float(model.dtypes.get(tensor)) or len(shape) not in (3, 4):
        raise _not_spatial(tensor, shape)
    if tensor in model.viewed:  # already a grid: its NCHW view
        grid, extra = model.viewed[tensor]
        return LayerView(tensor, "NCHW", grid, extra, "viewed")
    if len(shape) == 4:
        view = _rank4_view(model, tensor, shape, hint)
    else:
        view = _token_view(model, tensor, shape, hint)
    h, w = view.grid
    if h * w <= 1:
        raise NotSpatialError(
            f"layer {tensor!r} has a {h}x{w} grid, so its map is constant; pick an earlier layer")
    return view


def _rank4_view(model: LoadedModel, tensor: str, shape: tuple[int, ...],
                hint: LayerHint) -> LayerView:
    if hint.grid is not None or hint.extra_tokens is not None or hint.layout == "tokens":
        raise NotSpatialError(f"layer {tensor!r} has shape {['N', *shape[1:]]}; a grid and "
                              "extra tokens are for token layers [N,T,K]")
    layout = hint.layout or layouts(model).get(tensor)
    if layout is None:
        raise NotSpatialError(
            f"cannot tell where the channels of {tensor!r} (shape {list(shape)}) are; pass "
            "--layer-layout NCHW or NHWC (layer_layout= in the API), or pick a tensor "
            "produced by a Conv/Pool or its activation")
    grid = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    return LayerView(tensor, layout, grid, 0, "given" if hint.layout else "traced")


def _token_view(model: LoadedModel, tensor: str, shape: tuple[int, ...],
                hint: LayerHint) -> LayerView:
    if hint.layout not in (None, "tokens"):
        raise NotSpatialError(f"layer {tensor!r} has shape {['N', *shape[1:]]}: rank 3, so "
                              "its layout can only be tokens")
    t = shape[1]
    told = token_grid(model, tensor)
    if hint.grid is None and hint.extra_tokens is not None:
        guess = square_grid(t - hint.extra_tokens, max_extra=0)
        told = (guess[0], hint.extra_tokens, "given") if guess else None
    elif hint.grid is not None:
        h, w = hint.grid
        extra = hint.extra_tokens if hint.extra_tokens is not None else t - h * w
        told = (hint.grid, extra, "given")
    elif told is None and hint.layout == "tokens":
        guess = square_grid(t)
        told = (*guess, "square") if guess else None
    if told is None:
        raise NotSpatialError(
            f"cannot tell the token grid of {tensor!r} (shape {['N', *shape[1:]]}); pass "
            "--grid HxW and --extra-tokens K (grid=, extra_tokens= in the API)")
    grid, extra, how = told
    if extra < 0 or extra + grid[0] * grid[1] != t:
        raise NotSpatialError(
            f"layer {tensor!r} has {t} tokens, but a {grid[0]}x{grid[1]} grid and {extra} "
            f"extra tokens make {extra + grid[0] * grid[1]}; pass a --grid HxW and "
            "--extra-tokens K that add up")
    return LayerView(tensor, "tokens", grid, extra, how)


def view_layer(model: LoadedModel, name: str, hint: LayerHint | None = None
               ) -> tuple[LoadedModel, LayerView]:
    """The model to differentiate at layer ``name`` and the layer as it is there: for a token
    layer, the model rewritten so that ``name`` holds its NCHW grid; else ``model`` itself."""
    view = layer_view(model, name, hint)
    if hint is not None and hint.record() is not None:
        model = replace(model, hints={**model.hints, view.tensor: hint})
    if view.layout != "tokens":
        return model, view
    viewed = grid_view(model, view.tensor, view.grid, view.extra_tokens)
    return viewed, LayerView(view.tensor, "NCHW", view.grid, view.extra_tokens, view.told)


def spatial_layer(model: LoadedModel, name: str) -> tuple[str, int]:
    """Resolve ``name`` and check it has a channel axis and a grid; (tensor, channel axis).
    A token layer must be viewed first (``view_layer``): its grid is the NCHW tensor."""
    view = layer_view(model, name)
    if view.layout == "tokens":
        raise NotSpatialError(f"layer {view.tensor!r} is a token layer; view it as its grid "
                              "first (ort_cam.graph.view_layer)")
    return view.tensor, view.channel_axis


def size_multiple(model: LoadedModel) -> int:
    """The largest factor by which the graph scales its image input down to a rank-4 layer
    (input height over the layer's, the same for the width, both whole; 1x1 grids left out):
    input sizes that are multiples of it keep every grid whole. 1 without an image input."""
    inp = image_input(model.graph)
    if inp is None or inp.name not in model.shapes:
        return 1
    _, hw = input_geometry(model.shapes[inp.name])
    if hw is None:
        return 1
    best = 1
    for name, layout in layouts(model).items():
        t = model.shapes[name]
        h, w = (t[2], t[3]) if layout == "NCHW" else (t[1], t[2])
        if h * w > 1 and hw[0] % h == 0 and hw[1] % w == 0 and hw[0] // h == hw[1] // w:
            best = max(best, hw[0] // h)
    return best
