"""Whole gradient heads on torchvision architectures against torch autograd.

For every (model, layer, score mode) in ``torch_reference.CASES``: ort_cam's fused model must
return the layer activation and d Σ w·score / d layer that float64 torch autograd gives (along
the kink branches onnxruntime took, each shown to be float32 rounding away from its corner;
see torch_reference's docstring), and prefix.onnx + head.onnx must reproduce the original
model's outputs. Models have seeded random weights and non-trivial BatchNorm statistics, are
exported by the TorchScript exporter (opsets 11 to 17), and run at 128 px, batch 2, with
different target weights per row. ``tools/check_heads.py`` prints the same numbers as a table.

Models marked ``heavy`` (resnet50, vgg16_bn, densenet121, convnext_tiny) take most of the
time; CI runs them, ``-m "not heavy"`` skips them locally.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

import torch_reference as tr  # noqa: E402


def _params(per_score: bool):
    out = []
    for case in tr.CASES:
        marks = [pytest.mark.heavy] if case.heavy else []
        for module in case.modules:
            for score in tr.SCORES if per_score else (None,):
                ident = "-".join(p for p in (case.model, module, score) if p)
                out.append(pytest.param(case.model, module, score, id=ident, marks=marks))
    return out


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """model name -> torch_reference.Prepared, built once per session (failures too)."""
    cache: dict[str, object] = {}

    def get(name: str) -> tr.Prepared:
        if name not in cache:
            try:
                cache[name] = tr.prepare(tr.CASES_BY_NAME[name], tmp_path_factory.mktemp(name))
            except Exception as exc:  # report it in every test of the model, build it once
                cache[name] = exc
        if isinstance(cache[name], Exception):
            raise cache[name]
        return cache[name]

    return get


@pytest.fixture(scope="session")
def results(prepared):
    """(model, module, score) -> torch_reference.Result, computed once per session."""
    cache: dict[tuple, tr.Result] = {}

    def get(model: str, module: str, score: str) -> tr.Result:
        key = (model, module, score)
        if key not in cache:
            cache[key] = tr.check_layer(prepared(model), module, score, plain=False)
        return cache[key]

    return get


@pytest.mark.parametrize("model, module, score", _params(per_score=True))
def test_fused_gradient_matches_torch(results, model, module, score):
    r = results(model, module, score)
    where = f"{model} {module} ({r.layer}) {score}"
    assert r.act <= tr.ACT_TOL, f"{where}: layer activation off by {r.act:.2e}"
    assert r.fused_scores <= tr.REPRO_TOL, f"{where}: scores off by {r.fused_scores:.2e}"
    assert r.branch_margin <= tr.BRANCH_TOL, (
        f"{where}: onnxruntime branched unlike float64 at a kink input {r.branch_margin:.1e} "
        "(relative) from its corner: more than float32 rounding"
    )
    assert r.grad <= tr.GRAD_TOL, (
        f"{where}: max|grad - torch| / max|torch| = {r.grad:.2e} (along onnxruntime's kink "
        f"branches; {r.branches} differ from float64's, all within {r.branch_margin:.1e})"
    )


@pytest.mark.parametrize("model, module, score", _params(per_score=True))
def test_prefix_and_head_reproduce_the_model(results, model, module, score):
    r = results(model, module, score)
    where = f"{model} {module} ({r.layer}) {score}"
    assert r.repro <= tr.REPRO_TOL, f"{where}: prefix + head scores off by {r.repro:.2e}"
    assert r.head_grad <= tr.GRAD_TOL, f"{where}: head grad off by {r.head_grad:.2e}"
    if module in tr.CASES_BY_NAME[model].crossing:
        assert r.crossing > 0, f"{where}: a cut inside a block must have crossing tensors"


@pytest.mark.parametrize("model, module, score", _params(per_score=False))
def test_layer_and_kinks_found_by_value(prepared, model, module, score):
    """The probed module maps to one ONNX tensor of list_layers, and every kink of the torch
    forward to the ONNX tensor feeding the same kink, so all branches can be read."""
    p = prepared(model)
    assert p.layers[module] in {info.name for info in tr.list_layers(p.lm)}
    unmatched = [k.name for i, k in enumerate(p.pattern.kinks) if i not in p.kink_tensors]
    assert not unmatched, f"{model}: kinks without an ONNX tensor: {unmatched}"


def test_a_wrong_gradient_is_caught(prepared):
    """The measure is not vacuous: the fused gradient for the batch rows' target weights
    swapped is far outside GRAD_TOL of the reference."""
    p = prepared("resnet18")
    module = "layer3.1.bn1"
    model = tr.fused_model(p.lm, p.layers[module], "probability")
    grad = tr.run(model, {"input": p.x, "target_weights": np.ascontiguousarray(p.w[::-1])})
    want = p.reference({})[1][(module, "probability")]
    assert tr.rel_err(grad["grad"], want) > 100 * tr.GRAD_TOL
