"""pytest configuration shared by the test modules."""

import os
import shutil
import tempfile

#: The tests never read or fill the user's prepared-model cache: one fresh directory per run,
#: which subprocesses inherit (tests/test_cache.py points elsewhere where it needs to).
_CACHE = tempfile.mkdtemp(prefix="ort_cam_test_cache_")
os.environ["ORT_CAM_CACHE"] = _CACHE


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


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)
