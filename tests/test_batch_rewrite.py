"""graph.batch: operands that fold a batch of 1 into a model, rewritten to take the batch.

Each case is a small model x [1, 4, 4, 4] -> ... exported with a fixed batch of 1, sketched
next to its factory. Loading makes its batch dynamic; the loaded model run on a batch of 3
different inputs must give what the original gives on each alone (exactly: the same kernels),
and the loader's note names how many operands it rewrote. A case that cannot take a batch
stays at batch 1, with the one-line note.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ort_cam.graph import load_model
from ort_cam.graph.load import BATCH_ONE_NOTE

CPU = ["CPUExecutionProvider"]
RNG = np.random.default_rng(0)


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _floats(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes: list, inits: list, out_shape: list[int]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "case", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def flatten_allowzero() -> tuple[onnx.ModelProto, int]:
    """x -> Relu -> GlobalAveragePool [1,4,1,1] -> Reshape([1, 4], allowzero=1) -> MatMul
    (torch.flatten, torch's default exporter)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Reshape", ["p", "t"], ["f"], allowzero=1),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    return _model(nodes, [_ints("t", [1, 4]), _floats("w", (4, 3))], [1, 3]), 1


def constant_node_target() -> tuple[onnx.ModelProto, int]:
    """x -> Relu -> Reshape(Constant [1, -1]) -> MatMul (``f.view(f.size(0), -1)``, legacy)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Constant", [], ["t"], value=_ints("t_value", [1, -1])),
             helper.make_node("Reshape", ["r", "t"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    return _model(nodes, [_floats("w", (64, 3))], [1, 3]), 1


def class_token() -> tuple[onnx.ModelProto, int]:
    """x [1,4,4,4] -> Reshape([1, 4, 16]) -> Transpose [1,16,4] -> Concat(cls [1,1,4], axis 1)
    -> Add(pos [1,17,4]) -> ReduceMean(axis 1) [1,4] (a ViT's class token, folded)."""
    nodes = [helper.make_node("Reshape", ["x", "t"], ["f"]),
             helper.make_node("Transpose", ["f"], ["tok"], perm=[0, 2, 1]),
             helper.make_node("Concat", ["cls", "tok"], ["all"], axis=1),
             helper.make_node("Add", ["all", "pos"], ["a"]),
             helper.make_node("ReduceMean", ["a"], ["y"], axes=[1], keepdims=0)]
    inits = [_ints("t", [1, 4, 16]), _floats("cls", (1, 1, 4)), _floats("pos", (1, 17, 4))]
    return _model(nodes, inits, [1, 4]), 2


def heads_merged() -> tuple[onnx.ModelProto, int]:
    """x -> Reshape [1,4,16] -> Transpose [16,1,4] (sequence first) -> Reshape([16, 2, 2]):
    the batch merged with 2 heads (nn.MultiheadAttention's ``bsz * num_heads``) -> Softmax
    -> Reshape([16, 1, 4]) -> Transpose back [1,16,4] -> ReduceMean(axis 1)."""
    nodes = [helper.make_node("Reshape", ["x", "t1"], ["f"]),
             helper.make_node("Transpose", ["f"], ["s"], perm=[2, 0, 1]),
             helper.make_node("Reshape", ["s", "t2"], ["h"]),
             helper.make_node("Softmax", ["h"], ["sm"], axis=-1),
             helper.make_node("Reshape", ["sm", "t3"], ["b"]),
             helper.make_node("Transpose", ["b"], ["bt"], perm=[1, 0, 2]),
             helper.make_node("ReduceMean", ["bt"], ["y"], axes=[1], keepdims=0)]
    inits = [_ints("t1", [1, 4, 16]), _ints("t2", [16, 2, 2]), _ints("t3", [16, 1, 4])]
    return _model(nodes, inits, [1, 4]), 3


def slice_and_resize() -> tuple[onnx.ModelProto, int]:
    """x -> Slice(starts [0, 0], ends [1, 2], axes [0, 1]) [1,2,4,4] (a StridedSlice that
    names every axis) -> Resize(sizes [1, 2, 8, 8]) -> ReduceMean(axes 2, 3) [1,2]."""
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),
             helper.make_node("Resize", ["s", "", "", "sizes"], ["r"], mode="linear"),
             helper.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0)]
    inits = [_ints("st", [0, 0]), _ints("en", [1, 2]), _ints("ax", [0, 1]),
             _ints("sizes", [1, 2, 8, 8])]
    return _model(nodes, inits, [1, 2]), 2


def batch_concat() -> tuple[onnx.ModelProto, None]:
    """x -> Relu -> Concat(memory [1,4,4,4], axis 0) [2,4,4,4] -> ReduceMean(axis 0,
    keepdims) -> ReduceMean(axes 2, 3): the batch mixed with a constant, no batch to give."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Concat", ["r", "memory"], ["c"], axis=0),
             helper.make_node("ReduceMean", ["c"], ["m"], axes=[0], keepdims=1),
             helper.make_node("ReduceMean", ["m"], ["y"], axes=[2, 3], keepdims=0)]
    return _model(nodes, [_floats("memory", (1, 4, 4, 4))], [1, 4]), None


CASES: dict[str, Callable[[], tuple[onnx.ModelProto, int | None]]] = {
    f.__name__: f for f in (flatten_allowzero, constant_node_target, class_token,
                            heads_merged, slice_and_resize)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_one_operands_take_the_batch(case):
    model, rewritten = CASES[case]()
    lm = load_model(model)
    (note,) = [n for n in lm.notes if "batch" in n]
    assert note.startswith(f"fixed batch of 1 made dynamic ({rewritten} batch-1 operands")
    assert not lm.batch_rows
    x = RNG.standard_normal((3, 4, 4, 4)).astype(np.float32)
    original = ort.InferenceSession(model.SerializeToString(), providers=CPU)
    rows = np.concatenate([original.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
    loaded = ort.InferenceSession(lm.proto.SerializeToString(), providers=CPU)
    (got,) = loaded.run(None, {"x": x})
    assert got.shape == rows.shape
    # the same kernels on the same rows: equal to float32 rounding (measured: exactly)
    np.testing.assert_allclose(got, rows, rtol=1e-6, atol=1e-7)
    assert np.ptp(rows, axis=0).max() > 1e-3  # the three inputs give different outputs


def test_allowzero_target_is_never_a_bare_zero():
    """Under allowzero=1 a 0 in a Reshape target is a zero-sized axis: the batch comes from
    Shape(x)[0:1]."""
    lm = load_model(flatten_allowzero()[0])
    reshape = next(n for n in lm.graph.nodes if n.op == "Reshape")
    assert int(reshape.attrs.get("allowzero", 0)) == 1
    assert not hasattr(reshape.inputs[1], "values")  # computed, not a constant
    shape = [n for n in lm.graph.nodes if n.op == "Shape"]
    assert [(n.inputs[0].name, n.attrs.get("start"), n.attrs.get("end")) for n in shape] == \
        [("x", 0, 1)]


def test_batch_mixed_with_a_constant_stays_at_batch_one():
    lm = load_model(batch_concat()[0])
    assert lm.batch_rows and lm.probe_batch == 1
    (note,) = [n for n in lm.notes if n.startswith(BATCH_ONE_NOTE)]
    assert "the batch is lost at Concat" in note
    assert lm.shapes["y"] == (1, 4)


def test_a_free_batch_that_does_not_run_stays_at_batch_one():
    """A model that declares a free batch but bakes 1 into a Reshape target (an export with
    ``dynamic_axes`` whose ``view(1, -1)`` was written by hand): run at batch 1, said so."""
    model, _ = constant_node_target()
    model.graph.node[1].attribute[0].t.CopyFrom(_ints("t_value", [1, 64]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    lm = load_model(model)
    assert lm.batch_rows and lm.shapes["y"] == (1, 3)
    (note,) = [n for n in lm.notes if n.startswith(BATCH_ONE_NOTE)]
    assert "it declares a free batch, but at batch 2" in note and "tools/bench_batch.py" in note
