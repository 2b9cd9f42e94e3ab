"""``METHODS`` is the only place that knows the methods: a fourth method registered at run
time (a monkeypatched dummy, no other file touched) flows through ``explain_array``, the CLI's
panel and npz, the audit's records and summary, and the HTML report; and no module outside
``ort_cam/methods/`` types a method's name, title or short name as a string literal."""

from __future__ import annotations

import ast
import html
import json
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from audit_data import cli_args, make_dataset
from cam_models import A0, A1, LAYER, X, tiny_cam_model
from click.testing import CliRunner
from PIL import Image

import ort_cam
from ort_cam.cli import main
from ort_cam.errors import OrtCamError
from ort_cam.methods import METHODS, CamMethod, default_methods, extra_names

PACKAGE = Path(ort_cam.__file__).resolve().parent
#: The default set; the other registered methods are asked for by name.
BUILTIN = default_methods()


class MeanAct(CamMethod):
    """L = ReLU((1/K) Σ_k A_m[k]); extra ``path_mean`` = (1/(m+1)) Σ_l y_l."""

    name = "meanact"
    title = "Mean activation"
    short = "MeanAct"
    color = "tab:purple"
    default = True
    extras = ("path_mean",)

    def finish(self) -> np.ndarray:
        am = self.state.am
        assert am is not None  # the walk has reached l = m
        self.extra_values["path_mean"] = float(self.state.ys.mean())
        return np.maximum(am.mean(axis=0), 0.0)


@pytest.fixture
def meanact(monkeypatch):
    monkeypatch.setitem(METHODS, MeanAct.name, MeanAct)
    return MeanAct.name


def test_registry_holds_what_the_rest_reads():
    for name, cls in METHODS.items():
        assert cls.name == name and cls.title and cls.short and cls.color
    assert BUILTIN == ("gradcam", "igcam", "rsi")  # later methods keep default = False
    assert extra_names() == ("completeness_gap",)


def test_dummy_flows_through_explain_array(meanact):
    ex = ort_cam.Explainer(tiny_cam_model(), LAYER, score="logit", quiet=True)
    r = ex.explain_array(X, baseline_array="zeros", target=1, steps=4)
    assert list(r.methods) == [*BUILTIN, meanact]  # default=True: in the default set
    # A = ReLU(x) = x (x >= 0): L = ReLU((A0 + A1)/2); the layer grid is the input grid.
    np.testing.assert_allclose(r[meanact].raw, [[2.5, 1.25], [1.5, 2.5]], rtol=1e-6)
    np.testing.assert_allclose(r[meanact].map, [[1.0, 0.0], [0.2, 1.0]], atol=1e-7)
    # y_l = α_l (0.5 mean A0 + 2 mean A1) − 0.2 = 4 α_l − 0.2; mean of α_l over l = 0..4 is 1/2
    assert (A0.mean(), A1.mean()) == (2.5, 1.375)
    assert r[meanact].extras == {"path_mean": pytest.approx(1.8, rel=1e-6)}
    assert r.extra("path_mean") == r[meanact].extras["path_mean"]
    assert r.completeness_gap == r["rsi"].extras["completeness_gap"] < 1e-6


def test_auto_steps_find_the_gap_through_the_registry(meanact):
    ex = ort_cam.Explainer(tiny_cam_model(square=True), LAYER, score="logit", quiet=True)
    # the square head's trapezoid gap is 0 at any m; riemann's is 1/m: m = 8 → 16 → 32
    r = ex.explain_array(X, baseline_array="zeros", target=1, steps="auto", methods=[meanact],
                         rsi_rule="riemann", auto_tolerance=0.04)
    assert list(r.methods) == [meanact] and r.completeness_gap is None
    assert r.steps == 32 and len(r.scores_path) == 33
    # without rsi; the registry is put back in its order (monkeypatch.delitem would append
    # rsi at the end on undo, and later tests read the registry's order)
    saved = dict(METHODS)
    del METHODS["rsi"]
    try:
        with pytest.raises(OrtCamError, match="steps='auto' needs a method that reports"):
            ex.explain_array(X, baseline_array="zeros", steps="auto", methods=[meanact])
    finally:
        METHODS.clear()
        METHODS.update(saved)


def test_a_method_must_report_the_extras_it_declares(monkeypatch):
    class Liar(MeanAct):
        name = "liar"
        extras = ("something_else",)

    monkeypatch.setitem(METHODS, Liar.name, Liar)
    ex = ort_cam.Explainer(tiny_cam_model(), LAYER, score="logit", quiet=True)
    with pytest.raises(OrtCamError, match=r"'liar' reported extras \['path_mean'\] but declares"):
        ex.explain_array(X, baseline_array="zeros", steps=2, methods=["liar"])


def test_dummy_flows_through_the_cli_panel_and_npz(meanact, tmp_path):
    model, img = tiny_models.conv_net(tmp_path), tiny_models.random_image(tmp_path)
    out = tmp_path / "cams"
    res = tiny_models.explain_conv_net(model, img, out)
    assert res.exit_code == 0, res.output
    z = np.load(out / "a.npz")
    assert sorted(z.files) == sorted(
        ["target", "scores_path", "rsi_completeness_gap", f"{meanact}_path_mean"]
        + [f"{m}_{k}" for m in (*BUILTIN, meanact) for k in ("raw", "map")])
    ex = ort_cam.Explainer(model, "relu1_out", preprocess="raw", quiet=True)
    r = ex.explain(img, steps=4)
    np.testing.assert_allclose(z[f"{meanact}_raw"], r[meanact].raw, rtol=1e-6)
    np.testing.assert_allclose(z[f"{meanact}_map"], r[meanact].map, rtol=1e-6, atol=1e-9)
    assert float(z[f"{meanact}_path_mean"]) == pytest.approx(r.scores_path.mean(), rel=1e-6)
    rec = json.loads((out / "results.jsonl").read_text())
    assert list(rec["methods"]) == [*BUILTIN, meanact]
    assert rec["path_mean"] == pytest.approx(float(z[f"{meanact}_path_mean"]))
    # the panel: the input and one 320-px overlay per method (figsize 3.2 in at 100 dpi each)
    assert Image.open(out / "a.png").size == (320 * (1 + len(BUILTIN) + 1), 420)
    only = tiny_models.explain_conv_net(model, img, tmp_path / "only", "--methods", meanact,
                                        "--json")
    assert only.exit_code == 0, only.output
    z = np.load(tmp_path / "only" / "a.npz")
    assert np.isnan(z["rsi_completeness_gap"]) and "rsi_raw" not in z.files
    bad = CliRunner().invoke(main, ["explain", str(model), str(img), "--methods", "nope",
                                    "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and ", ".join(METHODS) in bad.output
    assert "hirescam, gradcam_elementwise, gradcampp, " in bad.output and meanact in bad.output


def test_dummy_flows_through_the_audit_summary_and_report(meanact, tmp_path):
    data = make_dataset(tmp_path / "data", n=4)
    out = tmp_path / "audit"
    args = [a for a in cli_args(data, out) if a != "--no-report"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert MeanAct.title in res.output  # the per-method lines the command prints
    settings = json.loads((out / "audit.json").read_text())
    assert settings["methods"] == [*BUILTIN, meanact]
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert ok and all(set(r["methods"]) == {*BUILTIN, meanact} for r in ok)
    summary = json.loads((out / "summary.json").read_text())
    block = summary["splits"]["all"]["metrics"]
    assert set(block) == {*BUILTIN, meanact}
    assert set(block[meanact]) == set(block["gradcam"]) | {"path_mean"}
    assert block[meanact]["energy"]["n"] == len(ok)
    assert block[meanact]["path_mean"]["mean"] == pytest.approx(
        np.mean([r["path_mean"] for r in ok]))
    assert "path_mean" not in block["rsi"] and "completeness_gap" not in block[meanact]
    page = (out / "report.html").read_text()
    assert page.count(html.escape(MeanAct.title)) >= 4  # 3 table headers and the gallery
    assert f"{MeanAct.short} path mean" in page and "RSI completeness gap" in page


def _literals(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_module_outside_methods_names_a_method():
    """A name, title or short name typed as a string outside ort_cam/methods/ is a hand list
    of methods waiting to go stale: read it from METHODS instead."""
    words = {w for cls in METHODS.values() for w in (cls.name, cls.title, cls.short)}
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
             for path in sorted(PACKAGE.rglob("*.py"))
             if (PACKAGE / "methods") not in path.parents
             for line, value in _literals(path) if value in words]
    assert not found, "method names typed outside ort_cam/methods/:\n" + "\n".join(found)


def test_the_literal_check_would_catch_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('DEFAULT = ("gradcam", "igcam")\nX = f"{1} rsi"\n')
    assert [v for _, v in _literals(probe) if v in METHODS] == ["gradcam", "igcam"]
