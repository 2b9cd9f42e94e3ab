"""``ort-cam demo`` on the bundled model: panels, arrays, and energies that match the maps."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from tolerance import REBATCHED

from ort_cam.audit.metrics import pixel_energy
from ort_cam.cli import main
from ort_cam.demo import MARKER, demo_dir, demo_samples


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "ort-cam-demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "16"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_demo_writes_a_panel_and_arrays_per_sample(demo_run):
    out, text = demo_run
    samples = demo_samples(demo_dir())
    assert len(samples) >= 6
    for s in samples:
        assert (out / f"{s.path.stem}.png").is_file() and (out / f"{s.path.stem}.npz").is_file()
    assert len((out / "results.jsonl").read_text().splitlines()) == len(samples)
    assert f"panels and arrays in {out}/ ({len(samples)} images" in text


def test_printed_energy_is_the_maps_energy_in_the_true_box(demo_run):
    out, text = demo_run
    for s in demo_samples(demo_dir()):
        z = np.load(out / f"{s.path.stem}.npz")
        block = text.split(f"{s.path.name}: ")[1].split("\n")[1]
        printed = [float(v) for v in re.findall(r"(\d\.\d\d)", block)]
        want = [pixel_energy(z[f"{m}_map"], s.box) for m in ("gradcam", "igcam", "rsi")]
        # the print rounds to 2 decimals: half a unit of the 2nd (0.005) is the whole allowance;
        # want is computed from the very map printed from (bit for bit), and 1e-9 covers the
        # binary representation of the decimals (~1e-17), not float noise
        np.testing.assert_allclose(printed, want, atol=0.005 + 1e-9)
        assert int(z["target"]) == s.cls  # the bundled samples are all classified right


def test_saturated_samples_show_what_the_papers_describe(demo_run):
    """Where float32 rounds p to 1, Grad-CAM's probability gradient is 0 and its map is dark;
    the integrated methods still have a map with a range (and RSI a small gap)."""
    out, _ = demo_run
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    dark = [r for r in records if r["methods"]["gradcam"]["dark"]]
    assert dark, "no bundled sample is saturated enough to darken Grad-CAM"
    for r in dark:
        assert r["score"] > 0.999
        for m in ("igcam", "rsi"):
            assert not r["methods"][m]["dark"]
            assert r["methods"][m]["raw_max"] - r["methods"][m]["raw_min"] > 1e-4
        assert r["completeness_gap"] < 0.05
    assert any(r["score"] < 0.99 and not r["methods"]["gradcam"]["dark"] for r in records)


def test_demo_refuses_a_foreign_directory_and_reuses_its_own(tmp_path, demo_run):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = CliRunner().invoke(main, ["demo", "--out", str(foreign), "--steps", "2"])
    assert res.exit_code == 1 and "not written by ort-cam demo" in res.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    out, _ = demo_run
    assert (out / MARKER).is_file()
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "2"])
    assert res.exit_code == 0, res.output


# --- --methods: any chosen set of registered methods -------------------------------------
CHOSEN = ("hirescam", "gradcampp", "eigencam", "fem", "kpcacam", "ablationcam",
          "layercam")  # 1 + 7 panels: two rows


def test_demo_methods_shows_exactly_the_chosen_ones(tmp_path):
    from PIL import Image

    from ort_cam import Explainer
    from ort_cam.render import PANEL_COLUMNS

    out = tmp_path / "chosen"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "2",
                                    "--methods", ",".join(CHOSEN)])
    assert res.exit_code == 0, res.output
    samples = demo_samples(demo_dir())
    ex = Explainer(demo_dir() / "demo_cnn.onnx")
    for s in samples[:3]:
        z = np.load(out / f"{s.path.stem}.npz")
        have = {k.rsplit("_", 1)[0] for k in z.files if k.endswith(("_raw", "_map"))}
        assert have == set(CHOSEN)
        r = ex.explain(s.path, steps=2, methods=list(CHOSEN))
        for m in CHOSEN:  # the demo packs its images' paths: tests/tolerance.py's REBATCHED
            for kind in ("map", "raw"):
                want = getattr(r[m], kind)
                np.testing.assert_allclose(z[f"{m}_{kind}"], want, rtol=0,
                                           atol=REBATCHED * np.abs(want).max())
        # the panel: rows of PANEL_COLUMNS, each 3.2 x 4.2 inches at 100 dpi
        rows = -(-(1 + len(CHOSEN)) // PANEL_COLUMNS)
        assert Image.open(out / f"{s.path.stem}.png").size == (320 * PANEL_COLUMNS, 420 * rows)
        line = res.output.split(f"{s.path.name}: ")[1].split("\n")[1]
        assert line.count(",") == len(CHOSEN) - 1 and "Grad-CAM++" in line
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert list(rec["methods"]) == list(CHOSEN)


def test_demo_default_panel_is_one_row(demo_run):
    from PIL import Image

    out, _ = demo_run
    s = demo_samples(demo_dir())[0]
    assert Image.open(out / f"{s.path.stem}.png").size == (320 * 4, 420)


def test_demo_unknown_method_is_refused_before_writing(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "x"), "--methods",
                                    "gradcam,nocam"])
    assert res.exit_code == 1 and "unknown method(s) nocam" in res.output, res.output
    assert not (tmp_path / "x").exists()
