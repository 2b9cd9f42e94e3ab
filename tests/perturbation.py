"""The threads a test run is under (conftest.py's ``--ort-threads`` and ``--torch-threads``,
one each by default; tools/perturb_suite.py changes them). A test module that sets thread
counts itself asks here, so that the options reach it:

    THREADS = perturbation.ort_threads(1)

``--ort-opt-level`` needs nothing here: it sets ort_cam's process default
(``ort_cam.runtime.set_session_defaults``), which every session made without an explicit
level follows."""

from __future__ import annotations

#: Set by conftest.py from the command line before the test modules are imported (None
#: outside pytest); ORT_THREADS 0: onnxruntime's choice.
ORT_THREADS: int | None = None
TORCH_THREADS: int | None = None
#: The sessions' default graph optimisation level (``--ort-opt-level``; None outside pytest).
ORT_OPT_LEVEL: str | None = None


def batch_invariant() -> bool:
    """Whether this run's sessions compute a batch item bit for bit the same whatever the
    batch: measured so at onnxruntime's full optimisation (the default) and with one thread,
    not at its basic level with two threads (tests/tolerance.py: REBATCHED)."""
    return ORT_OPT_LEVEL in (None, "all") or ORT_THREADS == 1


def ort_threads(default: int | None) -> int | None:
    """onnxruntime intra-op threads for a test's sessions: ``--ort-threads`` (None for
    onnxruntime's choice) or, outside pytest, ``default``."""
    if ORT_THREADS is None:
        return default
    return ORT_THREADS or None


def torch_threads(default: int) -> int:
    """torch threads for a test's reference: ``--torch-threads`` (0: torch's own count) or,
    outside pytest, ``default``."""
    return TORCH_THREADS if TORCH_THREADS is not None else default
