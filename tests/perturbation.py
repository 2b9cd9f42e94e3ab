"""The numeric perturbation a test run is under (conftest.py's ``--ort-threads`` and
``--torch-threads``; tools/perturb_suite.py drives them). A test module that picks its own
thread counts (for speed on shared cores) asks here, so that the options override them:

    THREADS = perturbation.ort_threads(1)

``--ort-opt-level`` needs nothing here: it sets ort_cam's process default
(``ort_cam.runtime.set_session_defaults``), which every session made without an explicit
level follows."""

from __future__ import annotations

#: Set by conftest.py from the command line before the test modules are imported.
ORT_THREADS: int | None = None
TORCH_THREADS: int | None = None


def ort_threads(default: int | None) -> int | None:
    """onnxruntime intra-op threads for a test's sessions: ``--ort-threads`` or ``default``."""
    return ORT_THREADS if ORT_THREADS is not None else default


def torch_threads(default: int) -> int:
    """torch threads for a test's reference: ``--torch-threads`` or ``default``."""
    return TORCH_THREADS if TORCH_THREADS is not None else default
