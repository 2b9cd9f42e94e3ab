"""The explainer graph: preprocessing, the path walked in chunks inside one ONNX Loop around the
fused gradient graph, the reductions, upsampling and normalisation.

The Loop runs 1 + ceil((m+1)/chunk) iterations. Iteration 0 runs the fused graph on x alone
with zero target weights (what ``Explainer.scores_at`` runs): it gives ``scores`` and resolves
the target. Iteration k ≥ 1 walks chunk k−1 of the path, l = (k−1)·chunk .. min(k·chunk, m+1)−1,
exactly as ``engine.walk_path`` does; A_0, A_{l−1}, G_{l−1} (the trapezoid across chunk
boundaries), y_0, y_m and every method's accumulators are loop-carried states, so memory
depends on the chunk, never on m. The fused graph appears once, in the Loop body.

A fused model that computes its map on demand (``grad.tail``: a segmenter's upsampled logits)
gets ``want_scores`` from the body's ``first``: S (the full-size map) only at iteration 0, S
with no rows after it; y is its ``target_value``, and W is fed as one row for the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from .._version import __version__
from ..grad.builder import Builder
from ..grad.heads import TARGET_WEIGHTS
from ..grad.spec import WANT_SCORES
from ..maps import upsample
from ..preprocess import Preprocess
from .ops import F64, Ops, Tensor
from .reductions import Chunk, Ends, LayerDims, OnnxReduction
from .targets import GraphTarget, checked
from .unroll import unroll_loops

IMAGE, TARGET_IN, BASELINE = "image", "target_index", "baseline"
#: The baseline input's first dimension: its size (H, or 1 for a tensor) for a baseline, 0 for
#: the default baseline.
BASELINE_ROWS = "baseline_rows"
#: Prefix of the fused model's tensors inside the Loop body (keeps its names apart from ours).
MODEL_PREFIX = "model/"
#: The fused graph's outputs (layer, scores, grad), carried out of every iteration as the last
#: chunk's values. Nothing reads them: as outputs of the body they keep onnxruntime from
#: fusing across them (as it cannot in the engine's session, where they are graph outputs),
#: so the body computes the engine's float32 numbers bit for bit.
FUSED_STATES = ("fused/layer", "fused/scores", "fused/grad")
#: Their first dimensions: the chunk's rows; S's rows (an on-demand map: 1 at iteration 0,
#: 0 after it).
FUSED_ROWS = ("chunk", "scores_rows", "chunk")


@dataclass
class Plan:
    """Everything the graph needs, decided and checked before building (see ``build.py``)."""

    fused: onnx.ModelProto
    input_name: str  # the model's input (and, with input_kind "tensor", the explainer's)
    channel_axis: int  # of the layer: 1 (NCHW) or 3 (NHWC)
    n_classes: int
    m: int
    chunk: int
    x_shape: tuple[int, ...]  # model input, batch 1
    x_dtype: np.dtype
    score_dtype: np.dtype
    dims: LayerDims
    out_size: tuple[int, int]
    input_kind: str  # "pixels" or "tensor"
    pre: Preprocess | None  # the in-graph preprocessing (pixels)
    baseline: np.ndarray | None  # default baseline (input kind); None: zeros in model space
    reductions: dict[str, OnnxReduction]
    eps: float
    optional_inputs: bool  # defaults as initializers (omittable inputs), else plain inputs
    unroll: bool = False  # the Loop unrolled (engines without Loop)
    #: S's shape per image ((C,) for a class target), and the target of another kind (its W
    #: picked in the graph from the fed inputs; None: the class target, ``target_index``)
    s_shape: tuple[int, ...] = ()
    target: GraphTarget | None = None

    @property
    def trips(self) -> int:
        return 1 + -(-(self.m + 1) // self.chunk)

    @property
    def on_demand(self) -> bool:
        """Whether the fused model computes its map on demand (``grad.tail``): it takes
        ``want_scores`` (fed the Loop's ``first``), gives y as ``target_value``, and S has
        no rows past iteration 0."""
        return any(i.name == WANT_SCORES for i in self.fused.graph.input)


@dataclass
class Outer:
    """Outer-graph values the loop body reads: x (model dtype), x_0 and x − x_0 in float64,
    and the requested target (a class index; or the inputs of a target of another kind)."""

    x: Tensor
    x0d: Tensor
    diff: Tensor
    target: Tensor | None
    target_ins: dict[str, Tensor]


def _state_specs(plan: Plan) -> dict[str, np.ndarray]:
    """Loop-carried state name -> initial value (zeros; its dtype and shape are the state's)."""
    d = plan.dims
    grid = np.zeros((d.k, d.h, d.w))
    specs = {"target": np.array(0, np.int64), "scores": np.zeros(plan.s_shape),
             "y0": np.array(0.0), "ym": np.array(0.0), "a0": grid, "prev_a": grid,
             "prev_g": grid}
    if plan.target is not None:
        specs["weights"] = np.zeros(plan.s_shape, plan.score_dtype)
    for name, red in plan.reductions.items():
        specs.update({f"{name}/{key}": v for key, v in red.states().items()})
    layer = (1, d.k, d.h, d.w) if plan.channel_axis == 1 else (1, d.h, d.w, d.k)
    shapes = (layer, (1, *plan.s_shape), layer)
    outs = plan.fused.graph.output[:len(FUSED_STATES)]  # (an on-demand model's y: read)
    for key, out, shape in zip(FUSED_STATES, outs, shapes, strict=True):
        specs[key] = np.zeros(shape, helper.tensor_dtype_to_np_dtype(
            out.type.tensor_type.elem_type))
    return specs


def _rewire(old: Tensor, new: Tensor) -> None:
    """Every consumer of ``old`` reads ``new`` instead."""
    for node in list(old.outputs):
        for i, t in enumerate(node.inputs):
            if t is old:
                node.inputs[i] = new


def _typed(t: Tensor, value: np.ndarray) -> Tensor:
    t.dtype, t.shape = value.dtype, list(value.shape)
    return t


def _path_inputs(op: Ops, plan: Plan, outer: Outer, it: Tensor, st: dict[str, Tensor]):
    """This iteration's path indices, model inputs and target weights (zeros at iteration 0:
    the run of x)."""
    m, chunk, i64 = plan.m, plan.chunk, op.i64
    first = op.equal(it, i64(0))
    start = op.where(first, i64(m), op.b.op("Mul", op.b.op("Sub", it, i64(1)), i64(chunk)))
    end = op.where(first, i64(m + 1), op.minimum(op.b.op("Add", start, i64(chunk)), i64(m + 1)))
    ls = op.arange(start, end)
    alpha = op.reshape(op.div(op.cast(ls, F64), float(m)), [-1] + [1] * (len(plan.x_shape) - 1))
    xs = op.where(first, outer.x, op.cast(op.add(outer.x0d, op.mul(alpha, outer.diff)),
                                          plan.x_dtype))
    if plan.target is None:
        weights = op.cast(op.equal(op.arange(0, plan.n_classes), st["target"]),
                          plan.score_dtype)
    else:
        weights = st["weights"]
    row = op.unsqueeze(op.mul(weights, op.cast(op.logical_not(first), plan.score_dtype)), [0])
    if plan.on_demand:  # one row serves the chunk (as the engine feeds it)
        return first, start, ls, xs, row
    w = op.expand(row, op.concat([op.shape(ls), i64(list(plan.s_shape))], 0))
    return first, start, ls, xs, w


def _engine_safe_branches(first: Tensor, rank: int) -> None:
    """OpenVINO's CPU plugin refuses an If whose outputs have no rank ("If operation with
    dynamic rank"), so in the If that ``first`` switches (the on-demand map's: S or no rows,
    and Tᵀ(W)): the branches' outputs get their rank, S's (the tail's ops keep it), their
    dims unknown, and the empty map, an initializer of shape [0, ...] (which OpenVINO reads
    as a scalar), is made by ConstantOfShape."""
    for node in first.outputs:
        if node.op != "If":
            continue
        for key in ("then_branch", "else_branch"):
            branch: gs.Graph = node.attrs[key]
            for out in branch.outputs:
                if out.shape is None:
                    out.shape = [None] * rank
            made: dict[str, gs.Variable] = {}
            for inner in list(branch.nodes):
                for i, t in enumerate(inner.inputs):
                    if isinstance(t, gs.Constant) and t.values.size == 0:
                        if t.name not in made:
                            made[t.name] = _zeros_of_shape(branch, t)
                        inner.inputs[i] = made[t.name]


def _zeros_of_shape(graph: gs.Graph, empty: gs.Constant) -> gs.Variable:
    dims = gs.Constant(f"{empty.name}/dims", np.array(empty.values.shape, np.int64))
    out = gs.Variable(f"{empty.name}/made", empty.values.dtype, list(empty.values.shape))
    graph.nodes.append(gs.Node("ConstantOfShape", f"{empty.name}/ConstantOfShape",
                               {"value": gs.Constant(f"{empty.name}/zero",
                                                     np.zeros(1, empty.values.dtype))},
                               [dims], [out]))
    return out


def _channels_first(op: Ops, t: Tensor, d: LayerDims) -> Tensor:
    """[b, h, w, K] -> [b, K, h, w] through [b, h·w, K]: the Reshapes keep onnxruntime's
    transpose optimizer from cancelling this Transpose against the model's own and so
    changing the layout (and float32 summation order) of the model's ops above the layer."""
    flat = op.transpose(op.reshape(t, [-1, d.h * d.w, d.k]), [0, 2, 1])
    return op.reshape(flat, [-1, d.k, d.h, d.w])


def _resolve_target(op: Ops, plan: Plan, s_row: Tensor, requested: Tensor) -> Tensor:
    """−1: the top-1 class of x (np.argmax of ``s_row``, S(x)); another negative index: out
    of range, so the Gather that reads its score fails at run time instead of wrapping
    around."""
    top1 = op.argmax(s_row, 0)
    other = op.where(op.less(requested, op.i64(0)), op.i64(plan.n_classes), requested)
    return op.where(op.equal(requested, op.i64(-1)), top1, other)


def _first_row(op: Ops, plan: Plan, scores: Tensor, st: dict[str, Tensor]) -> Tensor:
    """S's row 0: S(x) at iteration 0. An on-demand map has no rows after it (and a Gather
    of row 0 fails even where a Where would not read it), so row 0 of S stacked on the
    carried S(x) (float64 of S's float32: cast back exactly)."""
    if not plan.on_demand:
        return op.take(scores, 0)
    carried = op.unsqueeze(op.cast(st["scores"], plan.score_dtype), [0])
    return op.take(op.concat([scores, carried], 0), 0)


def _target_step(op: Ops, plan: Plan, outer: Outer, st: dict[str, Tensor], first: Tensor,
                 scores: Tensor, value: Tensor | None) -> tuple[dict[str, Tensor], Tensor]:
    """The target's states after this iteration (chosen at iteration 0, from ``s_row``,
    S(x)), and y of every row of the chunk: the class's score, or Σ W ⊙ S in float64 (the
    fused model's ``value`` where it computes the map on demand)."""
    s_row = _first_row(op, plan, scores, st)
    if plan.target is None:
        assert outer.target is not None
        c = op.where(first, _resolve_target(op, plan, s_row, outer.target), st["target"])
        ys = value if value is not None else op.cast(op.take(scores, c, axis=1), F64)
        return {"target": c, "scores": s_row}, ys
    picked = plan.target.pick(op, s_row, outer.target_ins)
    w = op.where(first, checked(op, picked, first), st["weights"])
    c = op.where(first, picked.index, st["target"])
    if value is not None:
        return {"target": c, "weights": w, "scores": s_row}, value
    prod = op.mul(op.cast(scores, F64), op.unsqueeze(op.cast(w, F64), [0]))
    ys = op.sum(prod, list(range(1, 1 + len(plan.s_shape))))
    return {"target": c, "weights": w, "scores": s_row}, ys


def _body(plan: Plan, outer: Outer, specs: dict[str, np.ndarray]) -> gs.Graph:
    """The Loop body: the fused graph with our path building and reductions around it."""
    body = gs.import_onnx(plan.fused)
    for t in body.tensors().values():
        t.name = MODEL_PREFIX + t.name
    fused_in = {t.name[len(MODEL_PREFIX):]: t for t in body.inputs}
    layer_t, scores, grad = body.outputs[:3]
    value = body.outputs[3] if plan.on_demand else None
    op = Ops(Builder(body, prefix="explainer/body", opset=body.opset))
    it = gs.Variable("explainer/body/iteration", np.int64, [])
    cond = gs.Variable("explainer/body/cond", np.bool_, [])
    st = {k: _typed(gs.Variable(f"explainer/body/in/{k}"), v) for k, v in specs.items()}
    first, start, ls, xs, w = _path_inputs(op, plan, outer, it, st)
    # The engine's session sees these as inputs of shape [N, ...]; declared so here too, the
    # optimizer can prove the same shapes equal and fuses the same ops (e.g. a residual Add
    # into an NCHWc Conv), which keeps the float32 numbers identical.
    xs.dtype, xs.shape = plan.x_dtype, ["chunk", *plan.x_shape[1:]]
    w.dtype, w.shape = plan.score_dtype, [1 if plan.on_demand else "chunk", *plan.s_shape]
    _rewire(fused_in[plan.input_name], xs)
    _rewire(fused_in[TARGET_WEIGHTS], w)
    if plan.on_demand:  # S only at iteration 0 (the run of x)
        _rewire(fused_in[WANT_SCORES], first)
        _engine_safe_branches(first, 1 + len(plan.s_shape))
    a, g = op.cast(layer_t, F64), op.cast(grad, F64)
    if plan.channel_axis == 3:
        a, g = _channels_first(op, a, plan.dims), _channels_first(op, g, plan.dims)
    chosen, ys = _target_step(op, plan, outer, st, first, scores, value)
    at_zero = op.equal(start, op.i64(0))
    a_first, g_first = op.take(a, 0), op.take(g, 0)
    at_start = lambda value, key: op.where(at_zero, value, st[key])  # noqa: E731 (l = 0)
    chunk = Chunk(ls, a, g, at_start(a_first, "a0"), at_start(a_first, "prev_a"),
                  at_start(g_first, "prev_g"))
    keep = lambda key, new: op.where(first, st[key], new)  # noqa: E731 (iteration 0: no path)
    s_x = op.where(first, op.cast(chosen.pop("scores"), F64), st["scores"])
    new = {**chosen, "scores": s_x, "y0": op.where(at_zero, op.take(ys, 0), st["y0"]),
           "ym": keep("ym", op.take(ys, -1)),
           "a0": chunk.a0, "prev_a": keep("prev_a", op.take(a, -1)),
           "prev_g": keep("prev_g", op.take(g, -1))}
    new.update(zip(FUSED_STATES, (layer_t, scores, grad), strict=True))
    for name, red in plan.reductions.items():
        mine = {key: st[f"{name}/{key}"] for key in red.states()}
        for key, value in red.update(op, chunk, mine).items():
            new[f"{name}/{key}"] = keep(f"{name}/{key}", value)
    body.inputs = [it, cond, *st.values()]
    body.outputs = [_typed(op.identity(cond), np.array(True))]
    body.outputs += [_typed(new[k], specs[k]) for k in specs]
    for key, rows in zip(FUSED_STATES, FUSED_ROWS, strict=True):  # they change per iteration
        st[key].shape[0] = new[key].shape[0] = rows
    body.name = "explainer_chunk"
    return body.toposort()


def _preprocess(op: Ops, image: Tensor, plan: Plan) -> Tensor:
    """Preprocess.normalize in the graph: uint8 [H, W, 3] RGB -> model input [1, ...]."""
    pre = plan.pre
    assert pre is not None
    p = op.cast(image, F64)
    if pre.channels == "BGR":
        p = op.take_list(p, [2, 1, 0], axis=2)
    p = op.div(op.sub(op.mul(p, float(pre.scale)), op.const(np.asarray(pre.mean))),
               op.const(np.asarray(pre.std)))
    if pre.layout == "NCHW":
        p = op.transpose(p, [2, 0, 1])
    return op.cast(op.unsqueeze(p, [0]), plan.x_dtype)


def _chosen_baseline(op: Ops, base: Tensor, default: np.ndarray) -> Tensor:
    """The fed ``baseline``, or ``default`` when it has no rows (shape [0, ...]).

    The default and the fed rows stacked, [R + rows, ...], and the R rows from ``rows`` on
    taken (R: the default's rows). Any other number of rows fails the run at the node named
    ``baseline_rows_must_be_0_or_R``: an Add of Range(0, 2) and Range(0, 2 + |rows·(rows −
    R)|), whose shapes broadcast only for rows = 0 or R (a shape check every engine makes
    at run time; OpenVINO does not check a Reshape's volume).
    """
    r = int(default.shape[0])
    rows = op.take(op.shape(base), 0)
    off = op.b.op("Abs", op.b.op("Mul", rows, op.b.op("Sub", rows, op.i64(r))))
    guard = op.b.op("Add", op.arange(0, 2), op.arange(0, op.b.op("Add", off, op.i64(2))))
    guard.inputs[0].name = f"explainer/baseline_rows_must_be_0_or_{r}"
    zero = op.b.op("ReduceMin", op.concat([op.b.ints([0]), guard], 0), keepdims=0)
    default_t = (op.zeros(default.shape, default.dtype) if not default.any()
                 else op.const(default, default.dtype))
    stacked = op.concat([default_t, base], 0)
    # rows start .. start + R − 1 by a Gather of R indices: the shape is static from here on
    # (tract's symbolic analysis cannot size a Slice with a computed start)
    index = op.b.op("Add", op.arange(0, r), op.b.op("Add", rows, zero))
    return op.take(stacked, index)


def _inputs(op: Ops, plan: Plan) -> tuple[list[gs.Variable], Outer]:
    if plan.input_kind == "pixels":
        h, w = plan.out_size
        main = gs.Variable(IMAGE, np.uint8, [h, w, 3])
        to_model = lambda t: _preprocess(op, t, plan)  # noqa: E731
    else:
        main = gs.Variable(plan.input_name, plan.x_dtype, list(plan.x_shape))
        to_model = lambda t: t  # noqa: E731
    target = gs.Variable(TARGET_IN, np.int64, []) if plan.target is None else None
    given: list[gs.Variable] = [target] if target is not None else (
        plan.target.inputs() if plan.target is not None else [])
    inputs = [main, *given]
    x = to_model(main)
    if plan.baseline is None:  # zeros in model space
        x0d = op.zeros(plan.x_shape)
    else:
        base = gs.Variable(BASELINE, plan.baseline.dtype, [BASELINE_ROWS,
                                                           *plan.baseline.shape[1:]])
        inputs.append(base)
        x0d = op.cast(to_model(_chosen_baseline(op, base, plan.baseline)), F64)
    xd = op.cast(x, F64)
    return inputs, Outer(x, x0d, op.sub(xd, x0d), target,
                         {} if target is not None else {v.name: v for v in given})


def _maps(op: Ops, plan: Plan, raw: Tensor, prefix: str) -> list[Tensor]:
    """``<method>_raw`` and ``<method>_map``: maps.upsample (its own matrices) and
    maps.normalize, in float64."""
    d, (big_h, big_w) = plan.dims, plan.out_size
    rows = upsample(np.eye(d.h), (big_h, d.h))  # [H, h]: what upsample multiplies by
    cols = upsample(np.eye(d.w), (big_w, d.w)).T  # [w, W]
    up = op.matmul(op.matmul(op.const(rows), raw), op.const(cols))
    lo, hi = op.min(up, [0, 1]), op.max(up, [0, 1])
    norm = op.div(op.sub(up, lo), op.add(op.sub(hi, lo), float(plan.eps)))
    raw_out = op.identity(raw)
    return [_named(raw_out, f"{prefix}_raw", F64, [d.h, d.w]),
            _named(norm, f"{prefix}_map", F64, [big_h, big_w])]


def _named(t: Tensor, name: str, dtype, shape) -> Tensor:
    t.name, t.dtype, t.shape = name, np.dtype(dtype), list(shape)
    return t


def build_graph(plan: Plan) -> onnx.ModelProto:
    """The explainer model (without metadata)."""
    outer = gs.Graph(opset=gs.import_onnx(plan.fused).opset, name="ort_cam_explainer")
    op = Ops(Builder(outer, prefix="explainer", opset=outer.opset))
    inputs, refs = _inputs(op, plan)
    specs = _state_specs(plan)
    init = [op.const(v, v.dtype) if v.ndim == 0 else op.zeros(v.shape, v.dtype)
            for v in specs.values()]
    finals = dict(zip(specs, op.loop(plan.trips, init, _body(plan, refs, specs)), strict=True))
    ends = Ends(finals["a0"], finals["prev_a"], finals["prev_g"], finals["y0"], finals["ym"])
    outputs = [_named(op.identity(finals["target"]), "target", np.int64, []),
               _named(op.identity(finals["scores"]), "scores", F64, list(plan.s_shape)),
               _named(op.identity(ends.y0), "y0", F64, []),
               _named(op.identity(ends.ym), "ym", F64, [])]
    if plan.target is not None:
        outputs.append(_named(op.cast(finals["weights"], F64), "weights", F64,
                              list(plan.s_shape)))
    for name, red in plan.reductions.items():
        raw, extras = red.finish(op, ends, {k: finals[f"{name}/{k}"] for k in red.states()})
        outputs += _maps(op, plan, raw, name)
        outputs += [_named(op.identity(v), f"{name}_{k}", F64, []) for k, v in extras.items()]
    outer.inputs, outer.outputs = inputs, outputs
    proto = gs.export_onnx(outer, do_type_check=False)
    del proto.opset_import[:]
    proto.opset_import.extend(plan.fused.opset_import)
    proto.ir_version = plan.fused.ir_version
    proto.producer_name, proto.producer_version = "ort_cam", __version__
    if plan.optional_inputs:
        _defaults(proto, plan)
    return unroll_loops(proto) if plan.unroll else proto


def _defaults(proto: onnx.ModelProto, plan: Plan) -> None:
    """Give ``target_index`` (−1) and ``baseline`` (no rows: the default) initializers under
    their names, the values used when a run does not feed them."""
    values = ({TARGET_IN: np.array(-1, np.int64)} if plan.target is None
              else plan.target.defaults())
    if plan.baseline is not None:
        values[BASELINE] = np.zeros((0, *plan.baseline.shape[1:]), plan.baseline.dtype)
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
