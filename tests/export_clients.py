"""What the Node.js and browser tests of the exported explainer share: a fresh ``npm install``
of an example into a temporary folder, the demo explainer and the Python engine's numbers to
compare with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ort_cam import Explainer
from ort_cam.cli.explain_cmd import _gap_text
from ort_cam.export import export_explainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLE = ROOT / "models" / "demo" / "samples" / "star_unsaturated.png"
RING = ROOT / "models" / "demo" / "samples" / "ring_saturated.png"
#: The demo explainer the clients run: 17 path points in chunks of 5 (four Loop iterations).
STEPS, CHUNK = 16, 5


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (see .ci/run for the packages)")


def npm_install(example: str, dest: Path) -> Path:
    """``examples/<example>`` copied to ``dest`` with its npm dependencies installed. The
    other examples are copied beside it: examples/node imports ../web/overlay.mjs."""
    need("node", "npm")
    target = dest / example
    shutil.copytree(ROOT / "examples", dest, ignore=shutil.ignore_patterns("node_modules"),
                    dirs_exist_ok=True)
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=target, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"npm install in examples/{example} failed:\n{done.stderr}"
    return target


def demo_explainer(path: Path, **kwargs) -> Path:
    export_explainer(DEMO, out=path, steps=STEPS, chunk_size=CHUNK, **kwargs)
    return path


def reference(**kwargs):
    """The Python engine's Explanation of the sample, on the same chunks."""
    return Explainer(DEMO, chunk_size=CHUNK, quiet=True).explain(SAMPLE, steps=STEPS, **kwargs)


def assert_client_matches(out: dict, r, map_tol: float, gap_tol: float = 2e-4) -> None:
    """A client's outputs (JSON numbers) against the Explanation ``r``: maps to ``map_tol``,
    the completeness gap to ``gap_tol`` of itself.

    The gap |Σ IG − (y_m − y_0)| / |y_m − y_0| cancels: where the client's onnxruntime fuses
    the graph otherwise than the Python engine's session, it moves by far more than the maps.
    Measured on the demo sample (gap 0.0064) and the ring baseline with target 2 (gap 3.4), the
    Python engine at onnxruntime's basic level against its default (all; the node client's):
    2.1e-5 and 2.6e-6 of the gap, the maps ≤ 1.1e-6 apart (tools/perturb_suite.py's ort-opt=basic
    failed the node tests at gap_tol 1e-6). 2e-4 is 10x the larger; a client that walked one
    step more or fewer (m = 15 or 17 for 16) is off by 0.34% to 96% of the gap (17x to 4800x).
    Where ``r``'s gap is not defined (NaN) the client's is NaN, which its JSON writes as null."""
    assert out["target"] == r.target
    np.testing.assert_allclose(out["scores"], r.scores, rtol=1e-5, atol=1e-7)
    for name, res in r.methods.items():
        got = np.asarray(out[f"{name}_map"]).reshape(res.map.shape)
        assert np.abs(got - res.map).max() <= map_tol, name
    gap = r.completeness_gap
    if np.isnan(gap):
        assert out["rsi_completeness_gap"] is None
    else:
        assert abs(out["rsi_completeness_gap"] - gap) <= gap_tol * gap


def gap_shown(r) -> str:
    """``r``'s RSI gap as ``ort-cam explain`` prints it after "RSI gap ": "n/a" and why where it
    is not defined, else the percentage to 2 significant digits (JavaScript's toPrecision(2)
    writes the same below 100%), which the clients' lines show likewise."""
    line = _gap_text(r)
    assert line.startswith(", RSI gap "), line
    return line.removeprefix(", RSI gap ")


#: The segmentation model the clients show: tests/target_models.py's segmenter (random weights,
#: seeded) at 64x64, its pixels scaled to [0, 1]; the explainer's target kind is segment.
SEG_SIZE, SEG_PREPROCESS = 64, {"preset": "raw", "scale": 1 / 255}


def segmenter(folder: Path) -> tuple[Path, Path, Path]:
    """(the segmenter .onnx, its explainer, a 64x64 picture) written into ``folder``: the
    picture is four flat rectangles on noise, so that several classes hold argmax regions."""
    import target_models as tm
    from PIL import Image

    model = tm.export(tm.build("segmenter"), "segmenter", folder / "segmenter.onnx",
                      shape=(3, SEG_SIZE, SEG_SIZE))
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (SEG_SIZE, SEG_SIZE, 3), np.uint8)
    for y0, x0, color in ((4, 6, (230, 40, 40)), (30, 8, (40, 200, 60)), (10, 36, (30, 60, 220)),
                          (38, 34, (240, 220, 40))):
        img[y0:y0 + 22, x0:x0 + 24] = color
    Image.fromarray(img).save(folder / "segmenter.png")
    explainer = folder / "segmenter_explainer.onnx"
    export_explainer(model, tm.MODELS["segmenter"].layer, explainer, steps=STEPS,
                     chunk_size=CHUNK, preprocess=SEG_PREPROCESS, target_kind="segment")
    return model, explainer, folder / "segmenter.png"


def segment_reference(model: Path, image: Path, **target):
    """The Python engine's Explanation of the segmenter's picture, on the same chunks."""
    import target_models as tm

    ex = Explainer(model, tm.MODELS["segmenter"].layer, chunk_size=CHUNK, quiet=True,
                   preprocess=SEG_PREPROCESS, target_kind="segment")
    return ex.explain(image, steps=STEPS, target=target or None)


def assert_segment_matches(out: dict, r, map_tol: float, gap_abs: float) -> None:
    """A client's outputs of a segment explainer against the Explanation ``r``: the class, the
    mask (the weights' support), y, the maps, and the gap within 1e-6 of itself + ``gap_abs``.
    The segmenter's gap |Σ IG − Δy| / |Δy| is tiny (8.6e-8 at the default target), so a
    difference in Σ IG that is relative to Σ |IG| shows in it as an absolute one: float64
    summation order in onnxruntime-node (measured 1.7e-14), wasm's float32 kernels in the
    browser (measured 1.2e-8)."""
    assert out["target"] == r.target
    weights = np.asarray(out["weights"]).reshape(np.shape(r.scores))
    assert np.count_nonzero(weights) == r.target_record["mask_area"]
    np.testing.assert_array_equal(weights[r.target] != 0, r.target_mask)
    # y = Σ W ⊙ S over the mask: float32 scores summed with cancellation (wasm: measured
    # 1.03e-6 relative, native 2e-16), held to map_tol relative
    np.testing.assert_allclose([out["y0"], out["ym"]], [r.y0, r.ym], rtol=map_tol)
    for name, res in r.methods.items():
        got = np.asarray(out[f"{name}_map"]).reshape(res.map.shape)
        assert np.abs(got - res.map).max() <= map_tol, name
    gap = r.completeness_gap
    assert abs(out["rsi_completeness_gap"] - gap) <= 1e-6 * gap + gap_abs

