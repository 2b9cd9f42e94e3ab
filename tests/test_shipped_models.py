"""Models as they are shipped: exported with a fixed batch of 1 by torch's default command (the
torch.export-based exporter, ``allowzero=1`` Reshapes) and by the legacy exporter without
``dynamic_axes`` (the batch folded into ``Constant`` targets and a ``[1, 1, D]`` class token).

Each is explained, and its maps equal those of the same weights exported with a dynamic batch
axis (to float32 rounding); its batch is made dynamic and verified (``load.BATCH_TOLERANCE``),
so the path runs batched. A model whose batch cannot be made dynamic runs at batch 1, row by
row, says so in one line, and its Grad-CAM equals torch autograd's. The models are built in
``shipped_models`` from seeded random weights.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxscript")  # torch's default exporter needs it
pytest.importorskip("timm")

import shipped_models as sm  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.grad import list_layers  # noqa: E402
from ort_cam.graph import layer_view, load_model  # noqa: E402
from ort_cam.graph.load import BATCH_ONE_NOTE, BATCH_TOLERANCE, PROBE_BATCH  # noqa: E402

#: Largest relative difference between the raw maps of a fixed-batch export (made dynamic)
#: and of the same exporter's dynamic-batch export of the same weights. Measured: 0 on every
#: model here (the same kernels); a batch of 2 against batch-1 runs differs by up to 2.5e-7
#: (levit_128s, the loader's check), so 1e-4 leaves a margin of 400x for kernels that sum in
#: another order at another batch, while a wrong batch (a sample dropped or mixed) is off by
#: O(1).
MAP_TOLERANCE = 1e-4
METHODS = ["gradcam", "igcam", "rsi"]
#: What onnxruntime's own log lines look like ("2026-... [E:onnxruntime:, ...]").
ORT_LOG = re.compile(r"\[[EWIV]:onnxruntime|onnxruntime_src")
CLI = [sys.executable, "-c", "from ort_cam.cli import main; main()"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(name, way)``: the model exported that way (built once per module)."""
    folder = tmp_path_factory.mktemp("shipped")
    made: dict[tuple[str, str], Path] = {}

    def get(name: str, way: str) -> Path:
        if (name, way) not in made:
            path = folder / f"{name}_{way}.onnx"
            made[name, way] = sm.export(sm.build(name), way, path, sm.MODELS[name][1])
        return made[name, way]

    return get


def last_layer(path: Path, layout: str) -> str:
    """The layer to explain: the last differentiable NCHW layer ``ort-cam layers`` lists; for a
    ViT, the LayerNorm in front of the last block's attention (``blocks[-1].norm1``, the layer
    pytorch-grad-cam's ViT example takes: the tokens after it reach the class token only
    through attention, so the last block's outputs have no gradient on the grid)."""
    lm = load_model(path)
    infos = [i for i in list_layers(lm) if i.differentiable and i.layout == layout]
    if layout == "tokens":
        norms = [n.outputs[0].name for n in lm.graph.nodes if n.op == "LayerNormalization"]
        (name,) = [i.name for i in infos if i.name == norms[-3]]
        return name
    return infos[-1].name


def stage_tokens(path: Path, tokens: int) -> str:
    """LeViT: the last residual Add whose output holds ``tokens`` tokens (a stage after the
    token-merging attention)."""
    lm = load_model(path)
    adds = [n.outputs[0].name for n in lm.graph.nodes if n.op == "Add"
            and len(lm.shapes.get(n.outputs[0].name, ())) == 3
            and lm.shapes[n.outputs[0].name][1] == tokens]
    return adds[-1]


def explain(path: Path, layer: str, x: np.ndarray):
    ex = ort_cam.Explainer(path, layer, cache=False, quiet=True)
    return ex, ex.explain_array(x, baseline_array="zeros", steps=8, methods=METHODS)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_same_maps(fixed: Path, dynamic: Path, layout: str, x: np.ndarray,
                     layer: Callable[[Path], str] | None = None) -> None:
    pick = layer or (lambda p: last_layer(p, layout))
    ex, got = explain(fixed, pick(fixed), x)
    assert not ex._setup.prepared.batch_rows  # made dynamic: the path runs batched
    _, want = explain(dynamic, pick(dynamic), x)
    assert got.target == want.target
    assert got.layer != "" and got["gradcam"].raw.shape == want["gradcam"].raw.shape
    assert np.max(want["gradcam"].raw) > 0  # a map to compare, not zeros
    for m in METHODS:
        if not np.any(want[m].raw):  # a map ReLU'd to zeros (random weights): zeros too
            assert not np.any(got[m].raw), m
            continue
        assert relative(got[m].raw, want[m].raw) <= MAP_TOLERANCE, m


def assert_made_dynamic(path: Path) -> None:
    """The note says the batch was made dynamic and verified, and the loaded model computes
    at batch 3 what the export computes on each input alone (an independent check)."""
    lm = load_model(path)
    assert any(n.startswith("fixed batch of 1 made dynamic") for n in lm.notes), lm.notes
    assert lm.probe_batch == PROBE_BATCH and not lm.batch_rows
    import onnxruntime as ort

    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    loaded = ort.InferenceSession(lm.proto.SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    side = sm.MODELS[path.stem.rsplit("_", 1)[0]][1]
    x = np.random.default_rng(5).standard_normal((3, 3, side, side)).astype(np.float32)
    batched = loaded.run(None, {lm.input_names[0]: x})
    name = original.get_inputs()[0].name
    rows = [original.run(None, {name: x[i:i + 1]}) for i in range(3)]
    for k, out in enumerate(batched):
        ref = np.concatenate([r[k] for r in rows])
        assert out.shape == ref.shape
        # the tolerance the loader verifies with (see load.BATCH_TOLERANCE)
        assert relative(out, ref) <= BATCH_TOLERANCE


@pytest.mark.parametrize("way", ["dynamo", "legacy"])
@pytest.mark.parametrize("name,layout", [("resnet_tiny", "NCHW"), ("view_net", "NCHW"),
                                         ("vit", "tokens")])
def test_fixed_batch_export_explained_as_the_dynamic_one(exported, name, layout, way):
    fixed = exported(name, way)
    assert onnx.load(str(fixed), load_external_data=False).graph.input[0].type.tensor_type \
        .shape.dim[0].dim_value == 1  # really a fixed batch of 1
    assert_made_dynamic(fixed)
    assert_same_maps(fixed, exported(name, sm.REFERENCE[way]), layout, sm.example(name))


@pytest.mark.slow
def test_resnet18_default_export_explained_as_the_dynamic_one(exported):
    """torchvision's resnet18 at 224², exported with torch's documented command."""
    assert_made_dynamic(exported("resnet18", "dynamo"))
    assert_same_maps(exported("resnet18", "dynamo"), exported("resnet18", "dynamo_dynamic"),
                     "NCHW", sm.example("resnet18"))


@pytest.mark.parametrize("way", ["dynamo", "legacy"])
def test_yolo_head_batch_made_dynamic(exported, way):
    """A YOLOv8-style head: its Reshape targets hold the batch ([1, 67, -1], [1, 4, 16, A]);
    its output [N, 7, 80] is not class scores, so it is listed and made dynamic, not
    explained here."""
    path = exported("yolo", way)
    assert_made_dynamic(path)
    lm = load_model(path)
    note = next(n for n in lm.notes if n.startswith("fixed batch of 1"))
    assert int(re.search(r"\((\d+) batch-1 operands", note).group(1)) >= 4
    names = [i.name for i in list_layers(lm) if i.differentiable]
    assert len(names) >= 4


def test_mixed_batch_falls_back_to_batch_one_runs(exported):
    """A batch-1 constant concatenated on the batch axis and averaged with the features: no
    batch can be given to it. It is explained at batch 1, row by row (the path's m + 1 points
    each a run of its own), its Grad-CAM equal to torch autograd's and RSI's completeness
    gap small (the path was walked point by point, in order)."""
    import torch

    path = exported("mixed", "legacy")
    lm = load_model(path)
    assert lm.batch_rows and lm.probe_batch == 1
    (note,) = [n for n in lm.notes if n.startswith(BATCH_ONE_NOTE)]
    assert "Concat" in note and "tools/bench_batch.py" in note
    layer = "/conv/conv.3/Relu_output_0"
    ex, r = explain(path, layer, sm.example("mixed"))
    assert ex._setup.prepared.batch_rows and type(ex.runner).__name__ == "RowRunner"
    assert [w for w in ex._setup.prepared.warnings if BATCH_ONE_NOTE in w] == [f"note: {note}"]
    model = sm.build("mixed")
    x = torch.from_numpy(sm.example("mixed"))
    acts = model.conv(x)
    acts.retain_grad()
    f = torch.cat([acts, model.memory], 0).mean(0, keepdim=True)
    p = torch.softmax(model.fc(f.mean((2, 3))), 1)[0]
    assert int(p.argmax()) == r.target
    p[r.target].backward()
    w = acts.grad[0].mean((1, 2))
    want = torch.relu((w[:, None, None] * acts[0]).sum(0)).detach().numpy()
    # float32 forward and gradient in both (different kernels): 1e-5 relative is ~10x the
    # 1e-6 seen
    assert relative(r["gradcam"].raw, want) <= 1e-5
    assert r["rsi"].extras["completeness_gap"] < 0.05


def assert_levit_stage(exported, name: str, way: str, first_tokens: int, tokens: int,
                       grid: int) -> None:
    """LeViT's tokens after a token-merging stage are read as their grid: the tracer follows
    them through the BatchNorm over [N·T, C] that LeViT's ``LinearNorm`` flattens them for
    and back (``reshape_as``), where it gave up before ("cannot tell the token grid"), then
    T = h·h. The first stage's tokens are traced from the patch embedding all the way. The
    maps are those of the dynamic-batch export."""
    path = exported(name, way)
    lm = load_model(path)
    first = layer_view(lm, stage_tokens(path, first_tokens))
    assert (first.layout, first.extra_tokens, first.told) == ("tokens", 0, "traced")
    view = layer_view(lm, stage_tokens(path, tokens))
    assert (view.layout, view.grid, view.extra_tokens) == ("tokens", (grid, grid), 0)
    assert_same_maps(path, exported(name, sm.REFERENCE[way]), "tokens", sm.example(name),
                     lambda p: stage_tokens(p, tokens))


def test_levit_stage_tokens_read_as_their_grid(exported):
    assert_levit_stage(exported, "levit_tiny", "legacy", 49, 16, 4)


@pytest.mark.slow
@pytest.mark.parametrize("way", ["dynamo", "legacy"])
def test_levit_128s_stage_tokens_read_as_their_grid(exported, way):
    """levit_128s at 224²: [N, 49, 256] after the first token merge, a 7x7 grid."""
    assert_levit_stage(exported, "levit", way, 196, 49, 7)


def ort_cam_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``ort-cam ARGS`` in a subprocess, file descriptors 1 and 2 captured (onnxruntime's
    C++ log writes to them directly, bypassing Python's streams)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_prints_no_onnxruntime_log(exported, tmp_path):
    """`ort-cam layers` on every export, and `explain` on a made-dynamic and a batch-1 model:
    nothing of onnxruntime's own logging on stdout or stderr (probing a batch that fails is
    part of loading the batch-1 model)."""
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)) \
        .save(image)
    runs = [ort_cam_cli("layers", str(exported(name, way)))
            for name in ("resnet_tiny", "vit", "yolo", "mixed") for way in ("dynamo", "legacy")
            if (name, way) != ("mixed", "dynamo")]
    runs += [ort_cam_cli("explain", str(exported("mixed", "legacy")), str(image), "--layer",
                         "/conv/conv.3/Relu_output_0", "--steps", "4", "--no-cache", "--out",
                         str(tmp_path / "mixed")),
             ort_cam_cli("explain", str(exported("vit", "dynamo")), str(image), "--steps", "4",
                         "--layer", last_layer(exported("vit", "dynamo"), "tokens"),
                         "--no-cache", "--out", str(tmp_path / "vit"))]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        assert not ORT_LOG.search(run.stdout + run.stderr), (run.args, run.stderr[-2000:])
    explained_mixed = runs[-2].stderr.splitlines()
    assert sum(BATCH_ONE_NOTE in line for line in explained_mixed) == 1
