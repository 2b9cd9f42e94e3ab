"""Whole gradient heads on torchvision architectures against torch autograd.

For every (model, layer, score mode) in ``torch_reference.CASES``: ort_cam's fused model must
return the layer activation and d Σ w·score / d layer that float64 torch autograd gives (along
the kink branches onnxruntime took, each shown to be float32 rounding away from its corner;
see torch_reference's docstring), and prefix.onnx + head.onnx must reproduce the original
model's outputs. Models have seeded random weights and non-trivial BatchNorm statistics, are
exported by the TorchScript exporter (opsets 11 to 17), and run at 128 px, batch 2, with
different target weights per row. ``tools/check_heads.py`` prints the same numbers as a table.

Models marked ``heavy`` (resnet50, vgg16_bn, densenet121, convnext_tiny) took 60% of this
file's time and add no op, block or cut that their small twins (``*_mini`` in
torch_reference.CASES: the same torchvision classes, narrower and shallower, probed at the
same modules) do not have: the twins run by default, the full-size models with ``-m slow``.
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
        marks = [pytest.mark.heavy, pytest.mark.slow] if case.heavy else []
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


def _check(r: tr.Result, where: str, whats: tuple[str, ...]) -> None:
    tols = r.tolerances()
    for what in whats:
        err, tol = tols[what]
        assert err <= tol, f"{where}: {what} {err:.2e} > tolerance {tol:.2e} ({r})"


@pytest.mark.parametrize("model, module, score", _params(per_score=True))
def test_fused_gradient_matches_torch(results, model, module, score):
    """Layer activation, scores and gradient of the fused model within their tolerances (a
    float32 noise floor times tr.FACTOR, see torch_reference); every branch onnxruntime took
    unlike float64 within float32 rounding of its corner (branch_excess <= 1)."""
    r = results(model, module, score)
    _check(r, f"{model} {module} ({r.layer}) {score}",
           ("act", "fused_scores", "branch_excess", "grad"))


@pytest.mark.parametrize("model, module, score", _params(per_score=True))
def test_prefix_and_head_reproduce_the_model(results, model, module, score):
    r = results(model, module, score)
    where = f"{model} {module} ({r.layer}) {score}"
    _check(r, where, ("repro", "head_grad"))
    if module in tr.CASES_BY_NAME[model].crossing:
        assert r.crossing > 0, f"{where}: a cut inside a block must have crossing tensors"


@pytest.mark.parametrize("model, module, score", _params(per_score=False))
def test_layer_and_kinks_found_by_value(prepared, model, module, score):
    """The probed module maps to one ONNX tensor of list_layers, and every kink of the torch
    forward to the ONNX tensor feeding the same kink, so all branches can be read."""
    p = prepared(model)
    assert p.layers[module] in p.layer_names  # list_layers(p.lm), made once in prepare()
    unmatched = [k.name for i, k in enumerate(p.pattern.kinks) if i not in p.kink_tensors]
    assert not unmatched, f"{model}: kinks without an ONNX tensor: {unmatched}"


def test_a_wrong_gradient_is_caught(prepared):
    """The measure is not vacuous: the fused gradient for the batch rows' target weights
    swapped is far outside the largest gradient tolerance."""
    p = prepared("resnet18")
    module = "layer3.1.bn1"
    model = tr.fused_model(p.lm, p.layers[module], "probability")
    grad = tr.run(model, {"input": p.x, "target_weights": np.ascontiguousarray(p.w[::-1])})
    want = p.reference({}).grads[(module, "probability")]
    assert tr.rel_err(grad["grad"], want) > 100 * tr.GRAD_CAP
