"""pytest configuration shared by the test modules.

Threads: the suite runs onnxruntime and torch with one thread each (ort_cam's session default
and torch.set_num_threads, set here). With their defaults (a thread per core for each), both
keep worker threads spinning between parallel regions, and on a busy 2-core machine the suite
spent half its CPU time so (measured: test_heads_torchvision's resnet18 and squeezenet cases,
25 tests at load ~11: 111 s wall and 25 CPU-s with the defaults, 62 s and 13 CPU-s with one
thread each).

Options that change float32 rounding (tools/perturb_suite.py runs the numeric tests under each):
``--ort-threads N`` (0: onnxruntime's choice) and ``--ort-opt-level LEVEL`` set ort_cam's own
session default (``ort_cam.runtime.set_session_defaults``), followed by every session ort_cam
makes and by the test modules' own thread counts (tests/perturbation.py); ``--torch-threads
N`` (0: torch's choice) sets torch's threads for the references."""

import importlib.util
import os
import shutil
import tempfile

import perturbation

#: The tests never read or fill the user's prepared-model cache: one fresh directory per run,
#: which subprocesses inherit (tests/test_cache.py points elsewhere where it needs to).
_CACHE = tempfile.mkdtemp(prefix="ort_cam_test_cache_")
os.environ["ORT_CAM_CACHE"] = _CACHE


#: The suite's threads per library where the command line does not say (see above).
SUITE_THREADS = 1


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def pytest_addoption(parser):
    group = parser.getgroup("ort_cam numerics", "perturbations of float32 rounding")
    group.addoption("--ort-threads", type=_count, default=SUITE_THREADS, metavar="N",
                    help="onnxruntime intra-op threads of every session (ort_cam's session "
                         "default, and the tests' own thread counts); 0: onnxruntime's "
                         f"choice (default {SUITE_THREADS})")
    group.addoption("--ort-opt-level", default=None,
                    choices=["disabled", "basic", "extended", "all"],
                    help="onnxruntime graph optimisation level of ort_cam's sessions "
                         "(default: all)")
    group.addoption("--torch-threads", type=_count, default=SUITE_THREADS, metavar="N",
                    help="torch intra-op threads of the references; 0: torch's choice "
                         f"(default {SUITE_THREADS})")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "heavy: full-size torchvision models (also marked slow: pytest -m slow runs them; "
        "each has a small twin in the default run)",
    )
    config.addinivalue_line(
        "markers",
        "slow: expensive cases whose small twins are in the default run (the heavy "
        "torchvision models, the last-layer and second-layer Ablation-CAM and Score-CAM "
        "comparisons with pytorch-grad-cam); not in the default run (pyproject's addopts "
        "deselect them); run them with pytest -m slow",
    )
    _apply_perturbation(config)


def _apply_perturbation(config) -> None:
    ort_threads = config.getoption("--ort-threads")
    torch_threads = config.getoption("--torch-threads")
    from ort_cam.runtime import set_session_defaults

    set_session_defaults(threads=ort_threads or None,
                         opt_level=config.getoption("--ort-opt-level") or "all")
    perturbation.ORT_THREADS = ort_threads
    perturbation.ORT_OPT_LEVEL = config.getoption("--ort-opt-level") or "all"
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        perturbation.TORCH_THREADS = torch.get_num_threads()  # 0: torch's own choice


def pytest_report_header(config):
    parts = [f"{name}={config.getoption(name)}"
             for name in ("--ort-threads", "--ort-opt-level", "--torch-threads")]
    return ["ort_cam numerics: " + ", ".join(parts)]


def pytest_unconfigure(config):
    from ort_cam import cache

    cache.wait()  # entries still being written in the background, then the directory goes
    shutil.rmtree(_CACHE, ignore_errors=True)
