"""The exported explainer (``ort-cam export``) gives the Python engine's numbers.

Every output of one ``run()`` of the exported model is compared with ``Explainer.explain`` /
``explain_array`` on the same input: maps to 1e-5 (absolute; they lie in [0, 1)), raw maps to
1e-5 of their largest value, the completeness gap to 1e-6 of itself, the target exactly. Both
sides run the same fused gradient graph on the same chunks of the path (the chunk size is
passed to both), so the remaining differences are float64 summation order in the reductions.
Covered: every method option, chunk boundaries (m + 1 a multiple of the chunk or not, chunks
of one point, one chunk), targets, every exportable baseline, pixel and tensor input, logits,
BGR and NHWC; torchvision resnet18 and mobilenet_v3_small (random weights, 64x64) at two
layers each; the refusals. Where Python's gap is not defined (y_m − y_0 float32 noise:
``result.gap_defined``) the exported gap is NaN, by the same rule built in the graph.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import perturbation
import pytest
from cam_models import LAYER, X, tiny_cam_model_nhwc
from cam_models import OPTION_SETS as CAM_OPTION_SETS
from click.testing import CliRunner
from export_runtimes import with_sentinels
from PIL import Image

from ort_cam import Explainer
from ort_cam.cli import main
from ort_cam.errors import OrtCamError
from ort_cam.export import ONNX_REDUCTIONS, export_explainer
from ort_cam.export.ops import Ops
from ort_cam.export.reductions import completeness_gap
from ort_cam.grad.builder import Builder
from ort_cam.methods import METHODS
from ort_cam.result import GAP_UNDEFINED, GAP_UNDEFINED_REL, gap_defined
from ort_cam.runtime import make_session

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLES = ROOT / "models" / "demo" / "samples"
STAR, RING = SAMPLES / "star_unsaturated.png", SAMPLES / "ring_saturated.png"
#: GAP_TOL, the gap to this fraction of itself where it is defined: measured ≤ 1.6e-13 of it
#: over this file, and 5.0e-8 for the logit case, whose gap is 2.9e-8 (float64 summation order
#: moved Σ IG by 1.5e-15 there): 20x margin over the largest.
MAP_TOL, GAP_TOL = 1e-5, 1e-6
#: the suite's thread count (tests/conftest.py; tools/perturb_suite.py changes it)
THREADS = perturbation.ort_threads(None)

#: Every option value and the RSI rule x selection grid (cam_models.OPTION_SETS), the last set
#: with a non-default eps.
OPTION_SETS = [*CAM_OPTION_SETS[:-1], {**CAM_OPTION_SETS[-1], "eps": 1e-3}]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def run(proto: onnx.ModelProto, **feeds) -> dict[str, np.ndarray]:
    """One run; ``target_index`` and ``baseline`` not given are fed their sentinels (−1: the
    top-1 class; a baseline with no rows: the default one)."""
    sess = make_session(proto, ["CPUExecutionProvider"], THREADS)
    feeds = with_sentinels(proto, feeds)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def assert_same(out: dict[str, np.ndarray], r) -> None:
    """Every output of the exported model against the Explanation ``r``."""
    assert int(out["target"]) == r.target
    np.testing.assert_allclose(out["scores"], r.scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([out["y0"], out["ym"]], [r.y0, r.ym], rtol=1e-6, atol=1e-9)
    for name, res in r.methods.items():
        assert out[f"{name}_map"].shape == res.map.shape
        assert np.abs(out[f"{name}_map"] - res.map).max() <= MAP_TOL, name
        scale = max(np.abs(res.raw).max(), 1e-30)
        assert np.abs(out[f"{name}_raw"] - res.raw).max() <= MAP_TOL * scale, name
    if "rsi" in r.methods:
        gap, got = r.completeness_gap, float(out["rsi_completeness_gap"])
        if np.isnan(gap):  # not defined (result.gap_defined): NaN on both sides
            assert np.isnan(got), got
        else:
            assert abs(got - gap) <= GAP_TOL * gap


_EXPLAINERS: dict[tuple, Explainer] = {}


def explainer(model=DEMO, layer=None, **kw) -> Explainer:
    """One Explainer per (model, layer, settings), built once for the whole module."""
    key = (str(model), layer, json.dumps(kw, sort_keys=True, default=str))
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = Explainer(model, layer, threads=THREADS, quiet=True, **kw)
    return _EXPLAINERS[key]


# --- the demo model: every option, chunk boundaries ----------------------------------------
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(o.values()) if all(
    isinstance(v, str) for v in o.values()) else "eps")
def test_every_option_matches_the_engine(options):
    proto = export_explainer(DEMO, steps=12, options=options, chunk_size=5)
    for sample in (STAR, RING):
        r = explainer(chunk_size=5).explain(sample, steps=12, **options)
        assert_same(run(proto, image=pixels(sample)), r)


@pytest.mark.parametrize("steps,chunk", [(20, 7), (22, 7), (9, 1), (12, 100), (5, 5), (6, 2)],
                         ids=["m+1=3x7", "m+1=3x7+2", "chunks-of-1", "one-chunk",
                              "last-chunk-1-point", "m+1=3x2+1"])
def test_chunk_boundaries_match_the_engine(steps, chunk):
    proto = export_explainer(DEMO, steps=steps, chunk_size=chunk)
    r = explainer(chunk_size=chunk).explain(STAR, steps=steps)
    assert_same(run(proto, image=pixels(STAR)), r)


def test_chunk_size_changes_nothing_but_rounding():
    a = run(export_explainer(DEMO, steps=16, chunk_size=3), image=pixels(RING))
    b = run(export_explainer(DEMO, steps=16, chunk_size=17), image=pixels(RING))
    for name in ("gradcam", "igcam", "rsi"):
        assert np.abs(a[f"{name}_map"] - b[f"{name}_map"]).max() <= 1e-5
    assert abs(a["rsi_completeness_gap"] - b["rsi_completeness_gap"]) <= 1e-4


# --- targets and baselines -----------------------------------------------------------------
def test_target_index_is_the_class_explained():
    proto = export_explainer(DEMO, steps=10, chunk_size=4)
    r = explainer(chunk_size=4).explain(STAR, steps=10, target=2)
    assert r.target != int(np.argmax(r.scores))  # not the top-1 class
    assert_same(run(proto, image=pixels(STAR), target_index=np.array(2, np.int64)), r)


@pytest.mark.parametrize("bad", [-2, 6, 1000])
def test_a_target_out_of_range_fails_the_run(bad):
    proto = export_explainer(DEMO, steps=4)
    with pytest.raises(Exception, match="out of (data )?bounds|out of range"):
        run(proto, image=pixels(STAR), target_index=np.array(bad, np.int64))


@pytest.mark.parametrize("baseline", ["black", "zeros", "noise", str(RING)])
def test_default_baselines_match_the_engine(baseline):
    proto = export_explainer(DEMO, steps=10, chunk_size=6, baseline=baseline, baseline_seed=3)
    names = [i.name for i in proto.graph.input]
    assert ("baseline" in names) == (baseline != "zeros")  # zeros lives in model space
    r = explainer(chunk_size=6).explain(STAR, steps=10, baseline=baseline, baseline_seed=3)
    assert_same(run(proto, image=pixels(STAR)), r)


def test_a_baseline_fed_at_run_time():
    proto = export_explainer(DEMO, steps=10, chunk_size=6)
    r = explainer(chunk_size=6).explain(STAR, steps=10, baseline=str(RING))
    assert_same(run(proto, image=pixels(STAR), baseline=pixels(RING)), r)


# --- the completeness gap where y_m − y_0 is float32 noise -----------------------------------
def _gap_graph(ig: np.ndarray, y0: np.ndarray, ym: np.ndarray) -> np.ndarray:
    """reductions.completeness_gap, elementwise over vectors, run in onnxruntime."""
    graph = gs.Graph(opset=17)
    op = Ops(Builder(graph, prefix="gap", opset=17))
    ins = [gs.Variable(name, np.float64, [len(ig)]) for name in ("ig", "y0", "ym")]
    out = completeness_gap(op, *ins)
    out.name, out.dtype, out.shape = "gap", np.float64, [len(ig)]
    graph.inputs, graph.outputs = ins, [out]
    proto = gs.export_onnx(graph)
    proto.ir_version = 8
    sess = make_session(proto, ["CPUExecutionProvider"], THREADS)
    return sess.run(None, {"ig": ig, "y0": y0, "ym": ym})[0]


def test_the_graphs_gap_is_pythons_rule_to_the_bit():
    """The graph's rule against methods.rsi's own expression (gap_defined, then the quotient)
    on both sides of the threshold: |Δ| exactly at GAP_UNDEFINED_REL · max(|y_0|, |y_m|)
    (1 − 2^−17 and 1, either way round: undefined, the rule is ≤) and one float64 step
    beyond (defined), 60 and 70 ulps, zeros, tiny and huge scores, negative ones, NaN and
    infinite ends. Sub, Abs and Div are exact IEEE operations done in the same order, so the
    values are equal bit for bit and NaN exactly where Python gives NaN."""
    edge = 1.0 - GAP_UNDEFINED_REL  # 1 − 2^−17, exact
    ulp = float(np.finfo(np.float32).eps)
    pairs = [(1.0, edge), (1.0, np.nextafter(edge, 0.0)), (edge, 1.0), (0.0, 0.0), (0.3, 0.3),
             (1e6, 1e6 * (1 + 60 * ulp)), (1e6, 1e6 * (1 + 70 * ulp)), (1e-30, 2e-30),
             (-2.0, -2.0 * (1 + 10 * ulp)), (-2.0, 3.0), (0.0, 1e-300), (np.nan, 1.0),
             (1.0, np.nan), (np.inf, 1.0), (1.0, -np.inf), (np.inf, np.inf), (0.9579944, 0.2)]
    ig = [(b - a) * 0.75 + 1e-3 for a, b in pairs]  # Σ IG off by a quarter and a bit
    want = np.array([abs(i - (b - a)) / abs(b - a) if gap_defined(a, b) else np.nan
                     for i, (a, b) in zip(ig, pairs, strict=True)])  # Python floats
    undefined, defined = [0, 2, 3, 4, 5, 8, 13], [1, 6, 7, 9, 10, 16]  # the cases are so
    assert np.isnan(want[undefined]).all() and not np.isnan(want[defined]).any()
    y0, ym = (np.array(v, np.float64) for v in zip(*pairs, strict=True))
    ig = np.array(ig, np.float64)
    np.testing.assert_array_equal(_gap_graph(ig, y0, ym), want)


def _one_pixel_off(image: np.ndarray, row: int, col: int) -> np.ndarray:
    out = image.copy()
    out[row, col, 0] += 1
    return out


@pytest.mark.parametrize("sample,baseline", [
    (STAR, lambda x: x),  # Δ = 0 and Σ IG = 0: the old export gave 0.0
    # y_0 = y_m exactly, Σ IG ≠ 0: the old export gave 2.4e+300
    (SAMPLES / "square_unsaturated.png", lambda x: _one_pixel_off(x, 95, 95)),
    # Δ = 1.2e-7 ≠ 0 but 0.016 of the noise threshold: the old export gave 0.44
    (STAR, lambda x: _one_pixel_off(x, 0, 0)),
], ids=["baseline-is-x", "dy-is-0", "dy-is-noise"])
def test_the_gap_is_nan_where_python_says_undefined(sample, baseline, tmp_path):
    """A baseline equal to x, or one pixel off it, leaves y_m − y_0 float32 noise: Python's
    gap is NaN (the CLI's n/a), and so is the exported one; y_0, y_m and the maps as always."""
    base = baseline(pixels(sample))
    Image.fromarray(base).save(tmp_path / "baseline.png")
    r = explainer(chunk_size=5).explain(sample, steps=8, baseline=str(tmp_path / "baseline.png"))
    assert r.completeness_gap_undefined == GAP_UNDEFINED  # the case is what it says
    out = run(export_explainer(DEMO, steps=8, chunk_size=5), image=pixels(sample),
              baseline=base)
    assert np.isnan(out["rsi_completeness_gap"])
    assert_same(out, r)


# --- inputs, score, preprocessing, layout ---------------------------------------------------
def test_tensor_input_matches_explain_array():
    ex = explainer(chunk_size=8)
    assert ex.preprocess is not None
    x = ex.preprocess(str(STAR))
    x0 = ex.preprocess(str(RING))
    proto = export_explainer(DEMO, steps=10, chunk_size=8, input_kind="tensor", baseline=str(RING))
    assert [i.name for i in proto.graph.input] == [ex.input_name, "target_index", "baseline"]
    r = ex.explain_array(x, baseline_array=x0, steps=10)
    assert_same(run(proto, **{ex.input_name: x}), r)


def test_logit_score_and_bgr_preprocessing():
    spec = {"preset": None, "channels": "BGR"}
    proto = export_explainer(DEMO, steps=8, chunk_size=4, score="logit", preprocess=spec)
    r = explainer(chunk_size=4, score="logit", preprocess=spec).explain(RING, steps=8)
    assert r.score_mode == "logit" and r.score > 1  # a logit, not a probability
    assert_same(run(proto, image=pixels(RING)), r)


def test_nhwc_layer():
    model = tiny_cam_model_nhwc()  # input x and layer A both [N, 2, 2, 2] channels last
    x = X.transpose(0, 2, 3, 1) + 0.25
    proto = export_explainer(model, LAYER, steps=6, chunk_size=4, input_kind="tensor",
                             baseline="zeros", preprocess="raw")
    ex = Explainer(model, LAYER, preprocess="raw", chunk_size=4, quiet=True)
    assert ex.channel_axis == 3
    assert_same(run(proto, x=x), ex.explain_array(x, baseline_array="zeros", steps=6))


def test_target_and_baseline_are_plain_inputs_with_sentinels():
    """By default no initializer shadows an input (OpenVINO would fold it, onnxruntime warns):
    −1 is the top-1 class and a baseline with no rows the default one, the same numbers as
    that baseline fed; a baseline of another size fails the run."""
    proto = export_explainer(DEMO, steps=8, chunk_size=4, baseline=str(RING))
    assert not {i.name for i in proto.graph.initializer} & {i.name for i in proto.graph.input}
    sess = make_session(proto, ["CPUExecutionProvider"], THREADS)
    assert [i.name for i in sess.get_inputs()] == ["image", "target_index", "baseline"]
    assert sess.get_inputs()[2].shape == ["baseline_rows", 96, 3]
    r = explainer(chunk_size=4).explain(STAR, steps=8, baseline=str(RING))
    assert_same(run(proto, image=pixels(STAR), target_index=np.array(-1, np.int64),
                    baseline=np.zeros((0, 96, 3), np.uint8)), r)
    assert_same(run(proto, image=pixels(STAR), baseline=pixels(RING)), r)
    black = explainer(chunk_size=4).explain(STAR, steps=8, target=1)
    assert_same(run(proto, image=pixels(STAR), target_index=np.array(1, np.int64),
                    baseline=np.zeros((96, 96, 3), np.uint8)), black)
    for rows in (48, 192):  # half an image, two images
        with pytest.raises(Exception, match="baseline_rows_must_be_0_or_96"):
            run(proto, image=pixels(STAR), baseline=np.zeros((rows, 96, 3), np.uint8))


def test_optional_inputs():
    """--optional-inputs: defaults as initializers, so a run may omit them."""
    proto = export_explainer(DEMO, steps=8, chunk_size=4, optional_inputs=True)
    sess = make_session(proto, ["CPUExecutionProvider"], THREADS)
    assert [i.name for i in sess.get_inputs()] == ["image"]  # the others have defaults
    assert [i.name for i in proto.graph.input] == ["image", "target_index", "baseline"]
    r = explainer(chunk_size=4).explain(STAR, steps=8)
    outs = [o.name for o in sess.get_outputs()]
    assert_same(dict(zip(outs, sess.run(None, {"image": pixels(STAR)}), strict=True)), r)
    r1 = explainer(chunk_size=4).explain(STAR, steps=8, target=1, baseline=str(RING))
    feeds = {"image": pixels(STAR), "target_index": np.array(1, np.int64),
             "baseline": pixels(RING)}
    assert_same(dict(zip(outs, sess.run(None, feeds), strict=True)), r1)


# --- structure and metadata -----------------------------------------------------------------
def test_the_path_runs_in_one_loop_whose_size_does_not_grow_with_m():
    small = export_explainer(DEMO, steps=10, chunk_size=4)
    big = export_explainer(DEMO, steps=400, chunk_size=4)
    for proto in (small, big):
        loops = [n for n in proto.graph.node if n.op_type == "Loop"]
        assert len(loops) == 1
        assert not any(n.op_type == "Conv" for n in proto.graph.node)  # only in the body
        body = loops[0].attribute[0].g
        assert sum(n.op_type == "Conv" for n in body.node) == 5  # the model, once
    assert len(small.graph.node) == len(big.graph.node)
    assert abs(small.ByteSize() - big.ByteSize()) < 64


@pytest.mark.parametrize("steps,chunk", [(10, 4), (7, 8)], ids=["4-chunks", "one-chunk"])
def test_unrolled_has_no_loop_and_the_loops_numbers(steps, chunk):
    """unroll=True (for engines without Loop): one copy of the body per iteration, the
    weights stored once, and the same numbers as the Loop (the same nodes on the same
    values; measured ≤ 4.5e-16 apart: float64 sums folded in another order)."""
    looped = export_explainer(DEMO, steps=steps, chunk_size=chunk, baseline=str(RING))
    flat = export_explainer(DEMO, steps=steps, chunk_size=chunk, baseline=str(RING), unroll=True)
    trips = 1 + -(-(steps + 1) // chunk)
    assert not any(n.op_type == "Loop" for n in flat.graph.node)
    assert sum(n.op_type == "Conv" for n in flat.graph.node) == 5 * trips
    assert json.loads({p.key: p.value for p in flat.metadata_props}["ort_cam.export.unroll"])
    body_bytes = sum(i.ByteSize() for n in looped.graph.node if n.op_type == "Loop"
                     for i in n.attribute[0].g.initializer)
    assert flat.ByteSize() < looped.ByteSize() + body_bytes // 2  # weights not copied per trip
    for target in (-1, 3):
        feeds = {"image": pixels(STAR), "target_index": np.array(target, np.int64)}
        a, b = run(looped, **feeds), run(flat, **feeds)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)
    onnx.checker.check_model(flat)


def test_metadata_records_the_source_and_the_settings():
    proto = export_explainer(DEMO, steps=7, methods=["rsi", "gradcam"],
                             options={"rsi_rule": "riemann"})
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ort_cam.export.source_sha256"] == hashlib.sha256(DEMO.read_bytes()).hexdigest()
    assert meta["ort_cam.export.layer"] == "block4_out"
    assert meta["ort_cam.export.steps"] == "7"
    assert json.loads(meta["ort_cam.export.methods"]) == ["rsi", "gradcam"]
    assert json.loads(meta["ort_cam.export.options"])["rsi_rule"] == "riemann"
    from ort_cam import __version__

    assert meta["ort_cam.export.version"] == __version__
    assert json.loads(meta["ort_cam.labels"])[0] == "circle"
    outs = [o.name for o in proto.graph.output]
    assert outs == ["target", "scores", "y0", "ym", "rsi_raw", "rsi_map", "rsi_completeness_gap",
                    "gradcam_raw", "gradcam_map"]
    onnx.checker.check_model(proto)


def test_export_opens_no_session(monkeypatch):
    """The export resolves the model as an Explainer does, without building one (which would
    open an onnxruntime session of the fused model only to read the resolved fields)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the export opened a session")

    monkeypatch.setattr("ort_cam.optimized.make_session", refuse)  # the explainer's sessions
    monkeypatch.setattr("ort_cam.optimized.make_saved_session", refuse)
    proto = export_explainer(DEMO, steps=3, methods=["rsi"])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ort_cam.export.chunk"] == "4"  # m + 1 points per run, as the engine's
    assert json.loads(meta["ort_cam.labels"])[0] == "circle"


def test_every_registered_method_with_a_reduction_declares_the_same_extras():
    for name, cls in ONNX_REDUCTIONS.items():
        assert name in METHODS, f"ONNX reduction {name!r} is not a registered method"
        declared = tuple(getattr(METHODS[name], "extras", ()) or ())
        assert sorted(declared) == sorted(cls.extras)


# --- refusals -------------------------------------------------------------------------------
class _NoOnnx:
    name = "nothing"
    default = False
    extras = ()


@pytest.mark.parametrize("kwargs,message", [
    (dict(steps="auto"), "steps='auto' cannot be exported"),
    (dict(baseline="blur"), "baseline blur cannot be exported"),
    (dict(options={"auto_tolerance": 0.1}), "option auto_tolerance cannot be exported"),
    (dict(methods=["gradcam", "nope"]), "unknown method"),
    (dict(methods=["nothing"]), "nothing have no ONNX reduction"),
    (dict(input_kind="jpeg"), "unknown input kind 'jpeg'"),
    (dict(preprocess={"preset": None, "layout": "NHWC"}), "pixel input needs an RGB model input"),
    (dict(steps=0), "steps must be a positive integer"),
], ids=["auto", "blur", "auto-option", "unknown-method", "no-reduction", "input-kind", "layout",
        "steps-0"])
def test_what_cannot_be_exported_is_refused_by_name(kwargs, message, monkeypatch):
    monkeypatch.setitem(METHODS, "nothing", _NoOnnx)
    with pytest.raises(OrtCamError, match=message):
        export_explainer(DEMO, **kwargs)


def test_cli(tmp_path):
    out = tmp_path / "e.onnx"
    args = ["export", str(DEMO), "--out", str(out), "--steps", "8", "--chunk-size", "4",
            "--methods", "gradcam,rsi", "--rsi-selection", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "inputs: image, target_index, baseline" in result.output
    r = explainer(chunk_size=4).explain(STAR, steps=8, methods=["gradcam", "rsi"],
                                        rsi_selection="none")
    assert_same(run(onnx.load(out), image=pixels(STAR)), r)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "pass --force" in again.output
    blur = CliRunner().invoke(main, [*args, "--force", "--baseline", "blur"])
    assert blur.exit_code == 1 and "Error: baseline blur cannot be exported" in blur.output
    assert len(blur.output.strip().splitlines()) == 1
    flat = CliRunner().invoke(main, [*args, "--force", "--unroll"])
    assert flat.exit_code == 0 and "4 path points per chunk, unrolled" in flat.output
    assert not any(n.op_type == "Loop" for n in onnx.load(out).graph.node)
    both = CliRunner().invoke(main, [*args, "--force", "--optional-inputs", "--required-inputs"])
    assert both.exit_code == 2 and "contradict each other" in both.output


# --- torchvision, random weights ------------------------------------------------------------
TORCHVISION = {
    "resnet18": ("/layer4/layer4.1/relu_1/Relu_output_0", "/layer3/layer3.1/relu_1/Relu_output_0"),
    "mobilenet_v3_small": ("/features/features.12/features.12.2/HardSwish_output_0",
                           "/features/features.3/Add_output_0"),
}
STRETCH = {"preset": "imagenet", "resize": "stretch"}


@pytest.fixture(scope="module")
def torchvision_models(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    import warnings

    from torch_reference import build_model  # random weights, BatchNorm statistics calibrated

    d = tmp_path_factory.mktemp("tv")
    paths = {}
    for name in TORCHVISION:
        model = build_model(name, seed=3)
        paths[name] = d / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.zeros(1, 3, 64, 64), str(paths[name]),
                              opset_version=17, dynamo=False, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return paths


def _photo(seed: int) -> np.ndarray:
    """A smooth 64x64 test image (blobs of colour), so the class scores are not flat."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC))


@pytest.mark.parametrize("name", list(TORCHVISION))
@pytest.mark.parametrize("which,options", [
    (0, OPTION_SETS[0]), (0, OPTION_SETS[4]), (1, OPTION_SETS[1]), (1, OPTION_SETS[2])],
    ids=["last-guided", "last-riemann-positive", "mid-notebook", "mid-none"])
def test_torchvision_matches_the_engine(torchvision_models, name, which, options):
    path, layer = torchvision_models[name], TORCHVISION[name][which]
    image = _photo(which)
    if which == 0:  # pixels in, 13 points in chunks of 5
        proto = export_explainer(path, layer, steps=12, options=options, preprocess=STRETCH,
                                 chunk_size=5)
        r = explainer(path, layer, preprocess=STRETCH, chunk_size=5).explain(
            image, steps=12, **options)
        out = run(proto, image=image)
    else:  # the model's tensor in, logits, default chunks
        proto = export_explainer(path, layer, steps=10, options=options, preprocess=STRETCH,
                                 input_kind="tensor", score="logit")
        ex = explainer(path, layer, preprocess=STRETCH, score="logit")
        assert ex.preprocess is not None
        x = ex.preprocess.normalize(image)
        r = ex.explain(image, steps=10, **options)
        out = run(proto, input=x)
    assert_same(out, r)


#: The methods after the three that read only l = m (tests/test_export_methods.py has the rest).
AT_X = ["hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam", "fem"]


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_methods_at_x_match_the_engine(torchvision_models, name):
    """Mid layers (resnet18's a ReLU, mobilenet's a residual Add with negative activations),
    so that the methods differ from each other; tensor input, logits; maps and raw maps to
    1e-5 relative."""
    path, layer = torchvision_models[name], TORCHVISION[name][1]
    options = {"gradcampp_eps": 1e-6}
    proto = export_explainer(path, layer, steps=1, methods=AT_X, options=options,
                             preprocess=STRETCH, input_kind="tensor", score="logit")
    ex = explainer(path, layer, preprocess=STRETCH, score="logit")  # as the mid-layer cases
    assert ex.preprocess is not None
    image = _photo(2)
    r = ex.explain(image, steps=1, methods=AT_X, **options)
    out = run(proto, input=ex.preprocess.normalize(image))
    assert int(out["target"]) == r.target
    for method in AT_X:
        for key, want in (("map", r.methods[method].map), ("raw", r.methods[method].raw)):
            err = np.abs(out[f"{method}_{key}"] - want).max() / np.abs(want).max()
            assert err <= MAP_TOL, (method, key, err)
