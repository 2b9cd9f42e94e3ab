"""The CLI flags of the methods' later options (``MethodOptions`` fields marked later): each
reaches its method and gives the map the library gives with the same option; bad values are
one-line usage errors (exit code 2)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tolerance import assert_rebatched, rebatched

from ort_cam import Explainer
from ort_cam.cli import main
from ort_cam.methods import MethodOptions

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
MODEL = DEMO / "demo_cnn.onnx"
IMAGE = DEMO / "samples" / "ring_unsaturated.png"
STEPS = 2

#: flag arguments, the method that reads the option, the library's options.
CASES = [
    (["--eigen-smooth"], "gradcam", {"eigen_smooth": True}),
    (["--aug-smooth"], "gradcam", {"aug_smooth": True}),
    (["--gradcampp-eps", "0.001"], "gradcampp", {"gradcampp_eps": 0.001}),
    (["--fem-k", "0.5"], "fem", {"fem_k": 0.5}),
    (["--kpca-kernel", "rbf"], "kpcacam", {"kpca_kernel": "rbf"}),
    (["--kpca-gamma", "0.01"], "kpcacam", {"kpca_gamma": 0.01}),
    (["--finer-alpha", "0.25"], "finercam", {"finer_alpha": 0.25}),
    (["--finer-compare", "1"], "finercam", {"finer_compare": 1}),
]
LATER = {f.name for f in fields(MethodOptions) if f.metadata.get("later")}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def explainer():
    return Explainer(MODEL)


def library_raw(ex: Explainer, method: str, options: dict) -> np.ndarray:
    return ex.explain(IMAGE, steps=STEPS, methods=[method], **options)[method].raw


def library_maps(ex: Explainer, method: str, options: dict) -> np.ndarray:
    """The raw map and the normalised one (aug_smooth averages the normalised maps)."""
    res = ex.explain(IMAGE, steps=STEPS, methods=[method], **options)[method]
    return np.concatenate([res.raw.ravel(), res.map.ravel()])


def test_every_later_option_has_a_flag_and_a_case():
    """run_batch changes no map; it has its own test below."""
    assert {k for _, _, opts in CASES for k in opts} | {"run_batch"} == LATER
    text = run("explain", "--help").output
    for name in LATER:
        assert "--" + name.replace("_", "-") in text


@pytest.mark.parametrize("flag,method,options", CASES, ids=[c[0][0] for c in CASES])
def test_flag_gives_the_librarys_map(explainer, tmp_path, flag, method, options):
    res = run("explain", MODEL, IMAGE, "--methods", method, "--steps", STEPS,
              "--out", tmp_path / "out", *flag)
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "out" / f"{IMAGE.stem}.npz")
    got = np.concatenate([z[f"{method}_raw"].ravel(), z[f"{method}_map"].ravel()])
    np.testing.assert_array_equal(got, library_maps(explainer, method, options))
    # and the option matters: the default maps are others
    assert not np.array_equal(got, library_maps(explainer, method, {}))


def test_run_batch_reaches_the_runs(monkeypatch, explainer, tmp_path):
    seen: list[int] = []
    original = Explainer.model_runs

    def spy(self, *args):
        seen.append(args[-1])
        return original(self, *args)

    monkeypatch.setattr(Explainer, "model_runs", spy)
    res = run("explain", MODEL, IMAGE, "--methods", "ablationcam", "--steps", STEPS,
              "--run-batch", 3, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert seen == [3]
    got = np.load(tmp_path / "out" / f"{IMAGE.stem}.npz")["ablationcam_raw"]
    np.testing.assert_array_equal(got, library_raw(explainer, "ablationcam",
                                                   {"run_batch": 3}))


def test_demo_and_audit_take_the_flags(explainer, tmp_path):
    res = run("demo", "--out", tmp_path / "demo", "--steps", STEPS, "--methods", "fem",
              "--fem-k", "0.5")
    assert res.exit_code == 0, res.output
    got = np.load(tmp_path / "demo" / f"{IMAGE.stem}.npz")["fem_raw"]
    # the demo packs its images' paths: bit for bit but where onnxruntime sums by the batch
    assert_rebatched(got, library_raw(explainer, "fem", {"fem_k": 0.5}))
    box = "0,0,8,8"
    (tmp_path / "boxes.csv").write_text(f"image,label,x0,y0,x1,y1\n{IMAGE},ring,{box}\n")
    res = run("audit", MODEL, tmp_path / "boxes.csv", "--out", tmp_path / "audit",
              "--methods", "fem", "--fem-k", "0.5", "--steps", STEPS, "--no-report")
    assert res.exit_code == 0, res.output
    import json

    settings = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert settings["options"]["fem_k"] == 0.5
    rec = json.loads((tmp_path / "audit" / "results.jsonl").read_text().splitlines()[0])
    want = library_raw(explainer, "fem", {"fem_k": 0.5})
    # (the audit's batches: as the demo's above)
    assert abs(rec["methods"]["fem"]["raw_mean"] - float(want.mean())) <= rebatched() * float(
        np.abs(want).max())


BAD = [
    (["--fem-k", "0"], "--fem-k"), (["--fem-k", "-1"], "--fem-k"),
    (["--fem-k", "abc"], "--fem-k"), (["--kpca-gamma", "0"], "--kpca-gamma"),
    (["--kpca-kernel", "cubic"], "--kpca-kernel"), (["--run-batch", "0"], "--run-batch"),
    (["--finer-compare", "0"], "--finer-compare"),
    (["--gradcampp-eps", "-1e-3"], "--gradcampp-eps"),
]


def one_line_usage_error(res, flag: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and flag in errors[0], res.output


@pytest.mark.parametrize("bad,flag", BAD, ids=[" ".join(b) for b, _ in BAD])
def test_bad_value_is_a_one_line_usage_error(tmp_path, bad, flag):
    res = run("explain", MODEL, IMAGE, "--out", tmp_path / "out", *bad)
    one_line_usage_error(res, flag)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["demo", "audit", "export"])
def test_bad_value_in_the_other_commands(tmp_path, command):
    args = {"demo": ["demo", "--out", tmp_path / "o"],
            "audit": ["audit", MODEL, tmp_path / "boxes.csv", "--out", tmp_path / "o"],
            "export": ["export", MODEL, "--out", tmp_path / "o.onnx"]}[command]
    one_line_usage_error(run(*args, "--fem-k", "0"), "--fem-k")


def test_export_refuses_an_option_it_cannot_express_by_name(tmp_path):
    """aug_smooth has no ONNX reduction: refused in one line naming it (exit code 1)."""
    res = run("export", MODEL, "--methods", "gradcam", "--steps", STEPS, "--aug-smooth",
              "--out", tmp_path / "e.onnx")
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    assert len(lines) == 1 and "aug_smooth cannot be exported" in lines[0], res.output
    assert not (tmp_path / "e.onnx").exists()
