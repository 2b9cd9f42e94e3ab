"""``ort-cam methods`` lists the registry, and ``--methods`` (explain and audit) takes every
registered method: nothing outside ``METHODS`` names them."""

from __future__ import annotations

import json

import numpy as np
import tiny_models
from audit_data import cli_args, make_dataset
from click.testing import CliRunner
from PIL import Image

from ort_cam.cli import main
from ort_cam.methods import METHODS, method_records


def test_methods_lists_every_method_with_its_cost():
    res = CliRunner().invoke(main, ["methods"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == len(METHODS)
    for line, (name, cls) in zip(lines, METHODS.items()):
        assert line[2:].split()[0] == name
        assert line.startswith("*" if cls.default else " ")
        assert f"cost: {cls.cost}." in line and cls.title in line
    as_json = CliRunner().invoke(main, ["methods", "--json"])
    assert json.loads(as_json.output) == method_records()
    assert [r["name"] for r in method_records() if r["default"]] == ["gradcam", "igcam", "rsi"]


def test_explain_takes_every_method(tmp_path):
    model = tiny_models.conv_net(tmp_path)
    out = tmp_path / "cams"
    res = tiny_models.explain_conv_net(model, tiny_models.random_image(tmp_path), out,
                                       "--methods", ",".join(METHODS))
    assert res.exit_code == 0, res.output
    z = np.load(out / "a.npz")
    for name in METHODS:
        assert z[f"{name}_raw"].shape == (8, 8) and np.isfinite(z[f"{name}_map"]).all()
    rows = -(-(1 + len(METHODS)) // 6)  # render.PANEL_COLUMNS panels a row
    assert Image.open(out / "a.png").size == (320 * min(1 + len(METHODS), 6), 420 * rows)


def test_audit_takes_methods_beyond_the_default(tmp_path):
    data = make_dataset(tmp_path / "data", n=3)
    out = tmp_path / "audit"
    chosen = ["hirescam", "scorecam", "layerig"]
    res = CliRunner().invoke(main, cli_args(data, out, "--methods", ",".join(chosen)))
    assert res.exit_code == 0, res.output
    settings = json.loads((out / "audit.json").read_text())
    assert settings["methods"] == chosen
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["splits"]["all"]["metrics"]) == set(chosen)
