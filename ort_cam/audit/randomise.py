"""The model-parameter randomisation of Adebayo et al. 2018, done on the ONNX model itself, as
Quantus 0.6.0 does it on a torch model (``quantus.MPRT``: ``PyTorchModel.
get_random_layer_generator``).

The layers are the weight-bearing nodes in graph order: ``Conv``, ``Gemm`` and ``MatMul``
whose weight is a constant (an initializer, possibly through ``Identity``, or a ``Constant``),
and ``BatchNormalization`` where the export kept it (where it was folded into a Conv, that
Conv's weight and bias carry it). Quantus calls each torch module's own ``reset_parameters``
after ``torch.manual_seed(seed + 1)``; this module draws the same numbers:

- ``Conv`` (torch ``Conv2d``) and ``Gemm``/``MatMul`` (torch ``Linear``): the weight from
  U(−b, b) with b = √3 · gain / √fan_in, gain = √(2 / (1 + 5)) (``kaiming_uniform_`` with
  a = √5), i.e. b = 1/√fan_in; the bias (where the node has one) from U(−1/√fan_in,
  1/√fan_in). fan_in = in_channels/groups · kernel size (Conv), the input features
  (Gemm, MatMul). The numbers are torch's: its CPU generator is the standard MT19937 seeded
  with seed + 1, and ``uniform_`` maps each 32-bit draw r to (r mod 2²⁴)·2⁻²⁴·(hi − lo) + lo
  in float32, computed here with one rounding as torch's FMA does; a torch Linear's weight
  [out, in] is drawn in that order and transposed where the ONNX weight is [in, out].
- ``BatchNormalization`` (torch ``BatchNorm2d``): scale 1, bias 0, mean 0, variance 1.

Each randomised tensor becomes a new initializer that only its node reads (an initializer
shared with other nodes, or deduplicated by the exporter, stays as it was for them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OrtCamError

#: Quantus's default seed (``MPRT(seed=42)``); each layer is drawn after seeding seed + 1.
DEFAULT_SEED = 42
MODES = ("cascade", "independent")
WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "BatchNormalization")
PREFIX = "ort_cam.sanity/"


@dataclass(frozen=True)
class WeightLayer:
    """A weight-bearing node: its position in the graph, name, op and the constant inputs
    that are redrawn (by input slot)."""

    index: int
    name: str
    op: str
    slots: tuple[int, ...]


class _Constants:
    """Tensor name -> value, for initializers, Constant nodes and Identity of either; values
    converted when first asked for."""

    def __init__(self, graph: onnx.GraphProto):
        self._protos = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self._protos[node.output[0]] = attr.t
            elif node.op_type == "Identity" and node.input[0] in self._protos:
                self._protos[node.output[0]] = self._protos[node.input[0]]
        self._values: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._protos

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            self._values[name] = numpy_helper.to_array(self._protos[name])
        return self._values[name]


def _slots(node: onnx.NodeProto, const: _Constants) -> tuple[int, ...]:
    """The input slots of ``node`` to redraw; () when it bears no constant weight."""
    have = [i for i, name in enumerate(node.input) if name and name in const]
    if node.op_type == "Conv":
        return tuple(i for i in have if i in (1, 2)) if 1 in have else ()
    if node.op_type == "Gemm":
        return tuple(i for i in have if i in (1, 2)) if 1 in have else ()
    if node.op_type == "MatMul":
        return (1,) if 1 in have and const[node.input[1]].ndim == 2 else ()
    if node.op_type == "BatchNormalization":
        return (1, 2, 3, 4) if all(i in have for i in (1, 2, 3, 4)) else ()
    return ()


def weight_layers(model: onnx.ModelProto) -> list[WeightLayer]:
    """The weight-bearing nodes of ``model``'s main graph, in graph order."""
    const = _Constants(model.graph)
    out = []
    for k, node in enumerate(model.graph.node):
        if node.op_type in WEIGHT_OPS:
            slots = _slots(node, const)
            if slots:
                out.append(WeightLayer(k, node.name or node.output[0], node.op_type, slots))
    return out


def torch_uniform(gen: np.random.MT19937, shape: Sequence[int], bound: float) -> np.ndarray:
    """What ``tensor.uniform_(-bound, bound)`` gives on torch's CPU generator ``gen``."""
    n = int(np.prod(shape))
    raw = gen.random_raw(n)
    x = (raw & 0xFFFFFF).astype(np.float64) * 2.0 ** -24
    lo, hi = np.float32(-bound), np.float32(bound)
    span = np.float64(np.float32(hi - lo))
    return (x * span + np.float64(lo)).astype(np.float32).reshape(tuple(shape))


def torch_generator(seed: int) -> np.random.MT19937:
    """MT19937 seeded as ``torch.manual_seed(seed)`` seeds torch's CPU generator."""
    state = np.random.RandomState(seed).get_state(legacy=False)  # the standard init_genrand
    gen = np.random.MT19937()
    gen.state = {"bit_generator": "MT19937", "state": state["state"]}
    return gen


def _linear_bounds(fan_in: int) -> tuple[float, float]:
    """torch's (weight, bias) bounds: ``kaiming_uniform_(a=√5)`` and 1/√fan_in, computed as
    torch computes them (Python floats)."""
    a = math.sqrt(5)
    gain = math.sqrt(2.0 / (1 + a ** 2))
    weight = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
    return weight, (1 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def redrawn(node: onnx.NodeProto, layer: WeightLayer, const: _Constants,
            seed: int) -> dict[int, np.ndarray]:
    """Input slot -> its new value, as Quantus's reset of the matching torch module."""
    values = {i: const[node.input[i]] for i in layer.slots}
    if layer.op == "BatchNormalization":
        fill = {1: 1.0, 2: 0.0, 3: 0.0, 4: 1.0}
        return {i: np.full(v.shape, fill[i], v.dtype) for i, v in values.items()}
    w = values[1]
    transposed = (layer.op == "MatMul" or layer.op == "Gemm" and not _attr(node, "transB"))
    torch_shape = tuple(reversed(w.shape)) if transposed else w.shape  # [out, in, ...]
    fan_in = int(np.prod(torch_shape[1:]))
    wb, bb = _linear_bounds(fan_in)
    gen = torch_generator(seed + 1)
    new_w = torch_uniform(gen, torch_shape, wb)
    out = {1: (new_w.T if transposed else new_w).astype(w.dtype)}
    if 2 in values:
        b = values[2]
        out[2] = torch_uniform(gen, (int(b.size),), bb).reshape(b.shape).astype(b.dtype)
    return out


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def randomise_layers(model: onnx.ModelProto, layers: Sequence[WeightLayer], seed: int) -> None:
    """Redraw ``layers`` of ``model`` in place (each as ``redrawn`` gives it); an initializer
    that no node reads any more is dropped."""
    graph = model.graph
    const = _Constants(graph)
    replaced = set()
    for layer in layers:
        node = graph.node[layer.index]
        for slot, value in redrawn(node, layer, const, seed).items():
            name = f"{PREFIX}{layer.index}/{slot}"
            graph.initializer.append(numpy_helper.from_array(value, name))
            replaced.add(node.input[slot])
            node.input[slot] = name
    used = _read(graph) | {o.name for o in graph.output}
    if replaced - used:
        keep = [i for i in graph.initializer if i.name in used or i.name not in replaced]
        del graph.initializer[:]
        graph.initializer.extend(keep)


def _read(graph: onnx.GraphProto) -> set[str]:
    """Every name the nodes of ``graph`` read, also inside their subgraphs."""
    names = {i for node in graph.node for i in node.input}
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                names |= _read(sub)
    return names


def randomised_models(model: onnx.ModelProto, mode: str, seed: int = DEFAULT_SEED,
                      every: int = 1) -> Iterator[tuple[int, WeightLayer, onnx.ModelProto]]:
    """The models of the randomisation test: ``cascade`` randomises the layers from the
    output down, one more at each step (Quantus's ``top_down``); ``independent`` one layer at
    a time, the others as trained, in graph order (Quantus's ``independent``). With
    ``every`` K, only every K-th step is yielded (and always the last): the cascade then
    randomises K more layers per model. Yields (how many layers were randomised in that
    order, the last one, the model: a new copy)."""
    if mode not in MODES:
        raise OrtCamError(f"unknown sanity check {mode!r}; use {' or '.join(MODES)}")
    if every < 1:
        raise OrtCamError(f"--sanity-every must be at least 1 (got {every})")
    layers = weight_layers(model)
    if not layers:
        raise OrtCamError("the model has no weight-bearing node (Conv, Gemm, MatMul or "
                          "BatchNormalization with constant weights) to randomise")
    order = layers[::-1] if mode == "cascade" else layers
    work = onnx.ModelProto()
    work.CopyFrom(model)
    for i, layer in enumerate(order):
        shown = (i + 1) % every == 0 or i == len(order) - 1
        if mode == "independent":
            if not shown:
                continue
            work.CopyFrom(model)
        randomise_layers(work, [layer], seed)
        if shown:
            step = onnx.ModelProto()
            step.CopyFrom(work)
            yield i + 1, layer, step


def step_count(n_layers: int, every: int) -> int:
    """How many models ``randomised_models`` yields for ``n_layers`` layers."""
    return -(-n_layers // every)
