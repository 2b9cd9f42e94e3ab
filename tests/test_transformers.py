"""Transformers against torch autograd: ViT token layers [N, T, C] and Swin channels-last
layers [N, h, w, C], listed with their layouts, differentiated, and explained on their grids.

The models are torchvision's own ``VisionTransformer`` and ``SwinTransformer`` classes (the
code of vit_b_16 and swin_t) at small sizes so that the suite stays fast: ViT 64x64 with
16-pixel patches (a 4x4 grid after one class token), 2 blocks of width 32; Swin 32x32 with
4-pixel patches, windows of 4, two stages of widths 24 and 48 (grids 8x8 and 4x4, the first
with shifted windows). ``tools/check_transformers.py`` runs the full vit_b_16 and swin_t.
Tolerances: FACTOR x the float32 torch error against float64 on the same quantity (see
transformer_reference), printed per layer.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")

import transformer_reference as tr  # noqa: E402

import ort_cam  # noqa: E402
from ort_cam.errors import OrtCamError  # noqa: E402
from ort_cam.grad import list_layers  # noqa: E402

N_CLASSES = 10
BATCH = 2


def vit():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2,
                            hidden_dim=32, mlp_dim=64, num_classes=N_CLASSES).eval()
    tr.rescale_head(net.heads.head)
    return net, 64


def swin():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    net = SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4],
                          window_size=[4, 4], stochastic_depth_prob=0.0,
                          num_classes=N_CLASSES).eval()
    tr.rescale_head(net.head)
    return net, 32


#: model -> the torch modules whose outputs are the layers: two each.
MODULES = {"vit": ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1.ln_1"],
           "swin": ["features.1", "norm"]}
BUILD = {"vit": vit, "swin": swin}
EXPECT = {"vit": ("tokens", (4, 4), 1), "swin": ("NHWC", None, 0)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (torch net, ONNX path, loaded model, x, {module: ONNX tensor})."""
    cache = {}

    def get(name):
        if name not in cache:
            net, size = BUILD[name]()
            path = tr.export(net, size, tmp_path_factory.mktemp(name) / f"{name}.onnx")
            lm = tr.load(path)
            x = np.random.default_rng(1).standard_normal((BATCH, 3, size, size)).astype(
                np.float32)
            values = tr.run_all(lm, x)
            tensors = {m: tr.find_tensor(values, tr.module_output(net, m, x))
                       for m in MODULES[name]}
            cache[name] = (net, path, lm, x, tensors)
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["vit", "swin"])
def test_layers_are_listed_with_their_layout_and_grid(built, name):
    _, _, lm, _, tensors = built(name)
    infos = {info.name: info for info in list_layers(lm)}
    layout, grid, extra = EXPECT[name]
    for tensor in tensors.values():
        info = infos[tensor]
        assert info.layout == layout and info.differentiable, info
        if layout == "tokens":
            assert (tuple(info.grid), info.extra_tokens, info.channel_axis) == (grid, extra, 2)
        else:
            assert info.channel_axis == 3 and info.grid is None


@pytest.mark.parametrize("score", ["probability", "logit"])
@pytest.mark.parametrize("name, module", [(n, m) for n in MODULES for m in MODULES[n]])
def test_gradient_matches_torch(built, name, module, score):
    net, _, lm, x, tensors = built(name)
    w = np.random.default_rng(2).standard_normal((BATCH, N_CLASSES)).astype(np.float32)
    r = tr.check_layer(lm, net, module, tensors[module], x, w, score)
    print(f"{name} {module} ({r.layout} {r.grid}+{r.extra}) {score}: act {r.act:.1e} grad "
          f"{r.grad:.2e} (float32 floor {r.floor:.1e}, tolerance {r.tolerance:.1e}) scores "
          f"{r.scores:.1e}")
    assert r.floor > 0 and r.act < 1e-5 and r.scores < 1e-5
    assert r.grad <= r.tolerance, r


@pytest.mark.parametrize("name", ["vit", "swin"])
def test_gradcam_map_on_the_grid_matches_torch(built, name):
    """The Grad-CAM map of the top class from the Explainer, laid out on the layer's grid as
    pytorch-grad-cam's reshape_transform lays it (row-major patches), against torch."""
    net, path, _, x, tensors = built(name)
    module = MODULES[name][-1]
    ex = ort_cam.Explainer(path, tensors[module], preprocess="raw", quiet=True, cache=False)
    r = ex.explain_array(x[:1], baseline_array="zeros", methods=["gradcam"])
    w = np.zeros((1, N_CLASSES), np.float32)
    w[0, r.target] = 1
    res = tr.check_layer(tr.load(path), net, module, tensors[module], x[:1], w, "probability")
    assert res.grad <= res.tolerance
    ref = tr.torch_reference(net, module, x[:1], w, "probability",
                             lambda t: _to_nchw(t, name, res))
    want = tr.gradcam_reference(ref.act, ref.grad64)
    err = tr.rel_err(r["gradcam"].raw, want)
    print(f"{name} Grad-CAM map at {module}: max relative error {err:.1e}")
    assert r["gradcam"].raw.shape == res.grid and err <= res.tolerance


def _to_nchw(t, name: str, res: tr.LayerResult):
    if name == "vit":
        h, w = res.grid
        return t[:, res.extra:, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
    return t.permute(0, 3, 1, 2)


def test_overrides_and_refusals(built, tmp_path):
    """--grid / --extra-tokens / --layer-layout: a wrong grid is refused by name; the right
    one gives the traced layer's map; a rank-3 tensor cannot be NHWC."""
    _, path, _, x, tensors = built("vit")
    layer = tensors["encoder.layers.encoder_layer_1.ln_1"]
    traced = ort_cam.Explainer(path, layer, preprocess="raw", quiet=True, cache=False)
    given = ort_cam.Explainer(path, layer, preprocess="raw", quiet=True, cache=False,
                              layer_layout="tokens", grid=(4, 4), extra_tokens=1)
    a = traced.explain_array(x[:1], baseline_array="zeros", methods=["gradcam"])
    b = given.explain_array(x[:1], baseline_array="zeros", methods=["gradcam"])
    np.testing.assert_array_equal(a["gradcam"].raw, b["gradcam"].raw)
    with pytest.raises(OrtCamError, match=r"has 17 tokens, but a 4x2 grid and 1 extra tokens "
                                          r"make 9"):
        ort_cam.Explainer(path, layer, grid=(4, 2), extra_tokens=1, quiet=True, cache=False)
    with pytest.raises(OrtCamError, match="rank 3, so its layout can only be tokens"):
        ort_cam.Explainer(path, layer, layer_layout="NHWC", quiet=True, cache=False)
    from click.testing import CliRunner

    from ort_cam.cli import main

    res = CliRunner().invoke(main, ["split", str(path), "--layer", layer, "--grid", "4x4",
                                    "--extra-tokens", "1", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    import json

    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["layer_shape"] == ["N", 32, 4, 4] and manifest["tokens"] == {
        "shape": ["N", 17, 32], "grid": [4, 4], "extra_tokens": 1}
    assert layer + "::extra_tokens" in manifest["crossing"]
