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


def assert_client_matches(out: dict, r, map_tol: float, gap_tol: float = 1e-6) -> None:
    """A client's outputs (JSON numbers) against the Explanation ``r``: maps to ``map_tol``,
    the completeness gap to ``gap_tol`` of itself."""
    assert out["target"] == r.target
    np.testing.assert_allclose(out["scores"], r.scores, rtol=1e-5, atol=1e-7)
    for name, res in r.methods.items():
        got = np.asarray(out[f"{name}_map"]).reshape(res.map.shape)
        assert np.abs(got - res.map).max() <= map_tol, name
    gap = r.completeness_gap
    assert abs(out["rsi_completeness_gap"] - gap) <= gap_tol * gap
