"""pytest configuration shared by the test modules.

Options that change float32 rounding (tools/perturb_suite.py runs the numeric tests under each):
``--ort-threads N`` and ``--ort-opt-level LEVEL`` set ort_cam's own session default
(``ort_cam.runtime.set_session_defaults``), followed by every session ort_cam makes and by the
test modules' own thread counts (tests/perturbation.py); ``--torch-threads N`` sets torch's
threads for the references."""

import os
import shutil
import tempfile

import perturbation

#: The tests never read or fill the user's prepared-model cache: one fresh directory per run,
#: which subprocesses inherit (tests/test_cache.py points elsewhere where it needs to).
_CACHE = tempfile.mkdtemp(prefix="ort_cam_test_cache_")
os.environ["ORT_CAM_CACHE"] = _CACHE


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def pytest_addoption(parser):
    group = parser.getgroup("ort_cam numerics", "perturbations of float32 rounding")
    group.addoption("--ort-threads", type=_positive, default=None, metavar="N",
                    help="onnxruntime intra-op threads of every session (ort_cam's session "
                         "default, and the tests' own thread counts)")
    group.addoption("--ort-opt-level", default=None,
                    choices=["disabled", "basic", "extended", "all"],
                    help="onnxruntime graph optimisation level of ort_cam's sessions "
                         "(default: all)")
    group.addoption("--torch-threads", type=_positive, default=None, metavar="N",
                    help="torch intra-op threads of the references")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "heavy: large-model tests (CI runs them; deselect locally with -m 'not heavy')",
    )
    config.addinivalue_line(
        "markers",
        "slow: the last-layer (512 to 1,280 channel) Ablation-CAM and Score-CAM comparisons "
        "with pytorch-grad-cam, ~10 min on 2 cores; not in the default run (pyproject's "
        "addopts deselect them); run them with pytest -m slow",
    )
    _apply_perturbation(config)


def _apply_perturbation(config) -> None:
    ort_threads = config.getoption("--ort-threads")
    opt_level = config.getoption("--ort-opt-level")
    torch_threads = config.getoption("--torch-threads")
    if ort_threads is not None or opt_level is not None:
        from ort_cam.runtime import set_session_defaults

        set_session_defaults(threads=ort_threads, opt_level=opt_level or "all")
    perturbation.ORT_THREADS = ort_threads
    perturbation.TORCH_THREADS = torch_threads
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)


def pytest_report_header(config):
    parts = [f"{name}={config.getoption(name)}"
             for name in ("--ort-threads", "--ort-opt-level", "--torch-threads")
             if config.getoption(name) is not None]
    return ["ort_cam numerics: " + (", ".join(parts) if parts else "defaults")]


def pytest_unconfigure(config):
    from ort_cam import cache

    cache.wait()  # entries still being written in the background, then the directory goes
    shutil.rmtree(_CACHE, ignore_errors=True)
