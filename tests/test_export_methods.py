"""The methods after the three, exported: those that read only l = m of the shared pass
(HiResCAM, Grad-CAM element-wise, XGrad-CAM, LayerCAM, Grad-CAM++ and FEM) give the Python
engine's ``_map`` and ``_raw`` to 1e-5 relative (issue 12's bound; measured ~1e-15), with pixel
and tensor input and with their numeric options (``gradcampp_eps``, ``fem_k``) baked in; the
others, and ``eigen_smooth``/``aug_smooth``, are refused with one line naming them and why.
Two exported models serve all six (one with default options, pixels; one with the options,
tensor input, logits); test_export.py checks them on torchvision mid layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import perturbation
import pytest
from click.testing import CliRunner
from export_runtimes import with_sentinels
from PIL import Image

from ort_cam import Explainer
from ort_cam.cli import main
from ort_cam.errors import OrtCamError
from ort_cam.export import export_explainer, exportable_methods
from ort_cam.export.build import NOT_EXPORTABLE
from ort_cam.methods import METHODS
from ort_cam.runtime import make_session

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLES = ROOT / "models" / "demo" / "samples"
STAR, RING = SAMPLES / "star_unsaturated.png", SAMPLES / "ring_saturated.png"
#: The methods that read A_m and G_m only (besides gradcam), in registry order.
AT_X = ["hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam", "fem"]
TOL = 1e-5
OPTIONS = {"gradcampp_eps": 1e-6, "fem_k": 1.0}  # pytorch-grad-cam's ε; another k
#: the suite's thread count (tests/conftest.py; tools/perturb_suite.py changes it)
THREADS = perturbation.ort_threads(None)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def run(proto: onnx.ModelProto, **feeds) -> dict[str, np.ndarray]:
    """One run, ``target_index`` and ``baseline`` not given fed their sentinels."""
    sess = make_session(proto, ["CPUExecutionProvider"], THREADS)
    feeds = with_sentinels(proto, feeds)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def relative(got: np.ndarray, want: np.ndarray) -> float:
    """max |got − want| / max |want|."""
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


def assert_methods_match(out: dict[str, np.ndarray], r, names=AT_X) -> None:
    assert int(out["target"]) == r.target
    np.testing.assert_allclose(out["ym"], r.ym, rtol=1e-6)
    for name in names:
        res = r.methods[name]
        assert out[f"{name}_map"].shape == res.map.shape
        assert out[f"{name}_raw"].shape == res.raw.shape
        assert relative(out[f"{name}_map"], res.map) <= TOL, name
        assert relative(out[f"{name}_raw"], res.raw) <= TOL, name


@pytest.fixture(scope="module")
def ex() -> Explainer:
    return Explainer(DEMO, threads=THREADS, quiet=True, chunk_size=4)


@pytest.fixture(scope="module")
def exported() -> onnx.ModelProto:
    return export_explainer(DEMO, steps=50, methods=AT_X, chunk_size=4)


def test_every_gradient_method_at_x_is_exportable():
    assert set(AT_X) <= set(exportable_methods())
    assert sorted(set(METHODS) - set(exportable_methods())) == sorted(NOT_EXPORTABLE)


def test_the_methods_at_x_match_the_engine(ex, exported):
    meta = {p.key: p.value for p in exported.metadata_props}
    assert meta["ort_cam.export.steps"] == "1"  # none of them reads the path: x_0 and x only
    assert meta["ort_cam.export.methods"] == '["' + '", "'.join(AT_X) + '"]'
    outs = [o.name for o in exported.graph.output]
    assert outs[4:] == [f"{n}_{k}" for n in AT_X for k in ("raw", "map")]
    for sample in (STAR, RING):
        r = ex.explain(sample, steps=2, methods=AT_X)
        assert_methods_match(run(exported, image=pixels(sample)), r)
    # the demo's layer is a ReLU output (A >= 0) behind global average pooling: LayerCAM is
    # Grad-CAM element-wise and XGrad-CAM is HiResCAM, to rounding
    out = run(exported, image=pixels(STAR))
    assert relative(out["layercam_raw"], out["gradcam_elementwise_raw"]) <= 1e-12
    assert relative(out["xgradcam_raw"], out["hirescam_raw"]) <= 1e-12


def test_a_target_that_is_not_the_top1(ex, exported):
    r = ex.explain(STAR, steps=2, methods=AT_X, target=2)
    assert r.target != int(np.argmax(r.scores))
    assert_methods_match(run(exported, image=pixels(STAR), target_index=np.array(2, np.int64)), r)


def test_numeric_options_are_baked_in(ex, exported):
    proto = export_explainer(DEMO, steps=2, methods=AT_X, options=OPTIONS, input_kind="tensor",
                             score="logit", baseline="zeros", chunk_size=4)
    logit = Explainer(DEMO, threads=THREADS, quiet=True, chunk_size=4, score="logit")
    assert logit.preprocess is not None
    x = logit.preprocess(str(STAR))
    out = run(proto, **{logit.input_name: x})
    assert_methods_match(out, logit.explain_array(
        x, baseline_array="zeros", steps=2, methods=AT_X, **OPTIONS))
    plain = run(exported, image=pixels(STAR))  # default options, probability score
    for name in ("gradcampp", "fem"):  # the options changed these maps
        assert relative(out[f"{name}_map"], plain[f"{name}_map"]) > 1e-3, name


@pytest.mark.parametrize("name", sorted(NOT_EXPORTABLE))
def test_the_others_are_refused_by_name(name):
    with pytest.raises(OrtCamError) as err:
        export_explainer(DEMO, steps=2, methods=["gradcam", name])
    message = str(err.value)
    assert message.startswith(f"method {name} cannot be exported: ") and "\n" not in message
    assert "exportable: gradcam, igcam, rsi, hirescam" in message


@pytest.mark.parametrize("option,why", [("eigen_smooth", "SVD"), ("aug_smooth", "six")])
def test_smoothing_is_refused_by_name(option, why):
    with pytest.raises(OrtCamError, match=f"option {option} cannot be exported: .*{why}"):
        export_explainer(DEMO, steps=2, methods=["hirescam"], options={option: True})


def test_cli_refuses_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", str(DEMO), "--out", str(tmp_path / "e.onnx"),
                                       "--methods", "hirescam,eigencam"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: method eigencam cannot be exported: {NOT_EXPORTABLE['eigencam']}; "
        f"exportable: {', '.join(exportable_methods())}"]
