"""Execution provider selection: CUDA only when it really runs, explicit choices checked."""

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
