"""Execution provider selection: CUDA only when it really runs, explicit choices checked;
the process default of ort_cam's sessions; onnxruntime's process-wide logging left alone."""

import os
from pathlib import Path

import pytest

from ort_cam.errors import OrtCamError
from ort_cam.runtime import CPU, CUDA, provider_works, select_providers


def test_auto_picks_cuda_when_it_works():
    providers, line = select_providers(None, available=lambda: [CUDA, CPU], works=lambda p: True)
    assert providers == [CUDA, CPU] and "CUDAExecutionProvider" in line


def test_auto_falls_back_when_cuda_is_listed_but_unusable():
    providers, line = select_providers("auto", available=lambda: ["TensorrtExecutionProvider",
                                                                  CUDA, CPU],
                                       works=lambda p: False)
    assert providers == [CPU] and "unusable" in line


def test_auto_without_cuda_package():
    providers, line = select_providers(None, available=lambda: [CPU], works=lambda p: False)
    assert providers == [CPU] and "not installed" in line


def test_explicit_choices():
    assert select_providers("cpu", available=lambda: [CPU])[0] == [CPU]
    chosen, _ = select_providers("cuda", available=lambda: [CUDA, CPU], works=lambda p: True)
    assert chosen == [CUDA, CPU]
    with pytest.raises(OrtCamError, match="cannot run"):
        select_providers("cuda", available=lambda: [CUDA, CPU], works=lambda p: False)
    with pytest.raises(OrtCamError, match="not available"):
        select_providers(["ROCMExecutionProvider"], available=lambda: [CPU])


def test_cpu_provider_really_works_here():
    assert provider_works(CPU)


def test_session_defaults_reach_every_session_option():
    from ort_cam.runtime import OPT_LEVELS, session_options, set_session_defaults

    before = set_session_defaults(threads=3, opt_level="basic")
    try:
        opts = session_options()
        assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 1)
        assert opts.graph_optimization_level == OPT_LEVELS["basic"]
        assert opts.log_severity_level == 3  # errors only, per session
        explicit = session_options(threads=1, opt_level="disabled")  # the call wins
        assert explicit.intra_op_num_threads == 1
        assert explicit.graph_optimization_level == OPT_LEVELS["disabled"]
        set_session_defaults()  # onnxruntime's thread choice and all optimisations again
        opts = session_options()
        assert opts.intra_op_num_threads == 0
        assert opts.graph_optimization_level == OPT_LEVELS["all"]
    finally:  # the suite's own default (tests/conftest.py) back
        set_session_defaults(before.threads, before.opt_level)
    assert set_session_defaults(before.threads, before.opt_level) == before


@pytest.mark.parametrize("kw", [{"threads": 0}, {"threads": -2}, {"threads": 1.5},
                                {"opt_level": "max"}])
def test_bad_session_defaults_are_one_line_errors(kw):
    from ort_cam.runtime import set_session_defaults

    with pytest.raises(OrtCamError, match="threads=|opt_level="):
        set_session_defaults(**kw)


def test_ort_cam_leaves_onnxruntime_process_wide_logging_alone(tmp_path):
    """Importing ort_cam, probing providers and running sessions never sets onnxruntime's
    process-wide log level (each session carries its own), and prints nothing of
    onnxruntime's log."""
    import subprocess
    import sys

    code = (
        "import onnxruntime as ort\n"
        "calls = []\n"
        "ort.set_default_logger_severity = lambda *a: calls.append(a)\n"
        "import numpy as np, ort_cam\n"
        "from cam_models import LAYER, X, tiny_cam_model\n"
        "from ort_cam.runtime import CUDA, provider_works\n"
        "provider_works(CUDA)\n"
        "ex = ort_cam.Explainer(tiny_cam_model(), LAYER, score='logit', quiet=True)\n"
        "ex.explain_array(X, baseline_array='zeros', steps=2)\n"
        "print(calls)\n")
    tests = Path(__file__).parent
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "onnxruntime" not in done.stderr, done.stderr


def test_the_probe_model_is_the_one_onnx_builds():
    """The provider probe's model is kept serialised (no onnx import to probe a provider)."""
    from ort_cam.runtime import TINY_MODEL, tiny_model

    assert tiny_model() == TINY_MODEL
