"""The exported explainer in engines other than onnxruntime-python: one function per engine
that loads an explainer file, runs it once on named feeds and returns every output by name.
Used by tests/test_export_runtimes.py and tools/bench_runtimes.py.

- OpenVINO (its own ONNX frontend and CPU plugin), with ``INFERENCE_PRECISION_HINT`` f32: on a
  CPU with bf16 (AVX512-BF16, AMX) its default is bf16, which moves the maps by ~7e-2.
- tract (Sonos's Rust engine): it has no ``Loop``, so it runs the explainer exported with
  ``unroll=True``.
- the ONNX reference evaluator (``onnx.reference``): the specification in NumPy, slow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

Feeds = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]


def with_sentinels(proto: onnx.ModelProto, feeds: Feeds) -> Feeds:
    """``feeds`` with ``target_index`` and ``baseline``, where the explainer has them and they
    are not given, fed their sentinels: −1 (the top-1 class) and a baseline with no rows (the
    default one)."""
    out = dict(feeds)
    for inp in proto.graph.input:
        t = inp.type.tensor_type
        if inp.name == "target_index":
            out.setdefault(inp.name, np.array(-1, np.int64))
        elif inp.name == "baseline":
            dims = [d.dim_value for d in t.shape.dim[1:]]
            out.setdefault(inp.name, np.zeros(
                (0, *dims), onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return out


def default_feeds(path: Path | str, image: np.ndarray, target: int = -1) -> Feeds:
    """``image`` (or the model tensor) and ``target_index``, the default baseline."""
    proto = onnx.load(str(path), load_external_data=False)
    return with_sentinels(proto, {proto.graph.input[0].name: image,
                                  "target_index": np.array(target, np.int64)})


def onnxruntime_runner(path: Path | str, threads: int = 2) -> Callable[[Feeds], Outputs]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds), strict=True))


def openvino_runner(path: Path | str, threads: int = 2,
                    precision: str | None = "f32") -> Callable[[Feeds], Outputs]:
    """``precision`` None: OpenVINO's default (bf16 on a bf16-capable CPU)."""
    import openvino as ov

    config: dict[str, str] = {"INFERENCE_NUM_THREADS": str(threads)}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    inputs = [i.get_any_name() for i in compiled.inputs]

    def run(feeds: Feeds) -> Outputs:
        res = compiled({k: feeds[k] for k in inputs})
        return {o.get_any_name(): np.asarray(res[o]) for o in compiled.outputs}

    return run


def openvino_inputs(path: Path | str) -> list[str]:
    """The inputs of OpenVINO's compiled model (those it did not fold into constants)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [i.get_any_name() for i in compiled.inputs]


def tract_runner(path: Path | str) -> Callable[[Feeds], Outputs]:
    """The model typed and optimised for the feeds' shapes at the first run (tract fixes the
    input shapes when it optimises)."""
    import tract

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    outs = [o.name for o in graph.output]  # tract names them after the nodes that give them
    cache: dict[tuple, object] = {}

    def run(feeds: Feeds) -> Outputs:
        key = tuple((feeds[n].dtype.str, feeds[n].shape) for n in names)
        if key not in cache:
            typed = tract.onnx().load(str(path))
            for i, n in enumerate(names):
                typed.set_input_fact(i, _tract_fact(feeds[n]))
            cache[key] = typed.into_model().into_runnable()
        runnable = cache[key]
        res = runnable.run([feeds[n] for n in names])  # type: ignore[attr-defined]
        return {n: r.to_numpy() for n, r in zip(outs, res, strict=True)}

    return run


_TRACT_TYPES = {"uint8": "u8", "int64": "i64", "float32": "f32", "float64": "f64"}


def _tract_fact(value: np.ndarray) -> str:
    """tract's fact syntax, e.g. ``96,96,3,u8`` (a scalar: ``i64``)."""
    return ",".join([*(str(d) for d in value.shape), _TRACT_TYPES[value.dtype.name]])


def reference_runner(path: Path | str) -> Callable[[Feeds], Outputs]:
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(path))
    ev = ReferenceEvaluator(proto)
    names = [o.name for o in proto.graph.output]
    return lambda feeds: dict(zip(names, ev.run(None, feeds), strict=True))


RUNNERS: dict[str, Callable[..., Callable[[Feeds], Outputs]]] = {
    "onnxruntime": onnxruntime_runner, "openvino": openvino_runner, "tract": tract_runner,
    "onnx.reference": reference_runner}


def max_map_difference(out: Outputs, ref: Outputs) -> float:
    """The largest difference between the two runs' normalised maps (all methods)."""
    return max(float(np.abs(np.asarray(out[k]) - ref[k]).max()) for k in ref
               if k.endswith("_map"))
