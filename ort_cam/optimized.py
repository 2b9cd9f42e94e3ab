"""The fused model as onnxruntime's graph optimiser leaves it, kept in the cache, so that a
later session on the same model starts without optimising it again.

onnxruntime optimises a model when it opens a session (constant folding, fusions and, at the
highest level, the NCHWc layouts of its CPU kernels). ``optimized_model_filepath`` writes the
result; loaded with optimisations off, it gives a session that computes the same values
(bit-identical maps, tests/test_cache.py) and opens in about two thirds of the time
(tools/bench_startup.py). The highest level's layout choices hold only for the onnxruntime,
the providers and the CPU they were made for, so the entry is keyed by all three (the
``context``); it is kept for CPU sessions at the highest level only (the default). The
"extended" level, which travels between CPUs, was measured too: loaded with optimisations
off its sessions ran 1.3x slower (no NCHWc), and loaded at the highest level they opened no
faster than the plain model, so it is not kept.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import onnxruntime as ort

from . import cache
from .model_setup import ModelSetup
from .runtime import CPU, cpu_signature, make_saved_session, make_session, session_defaults


def context(providers: list[str], opt_level: str | None = None) -> dict[str, Any] | None:
    """The session context an optimised model is kept for: onnxruntime's version, the
    providers and the CPU; None where none is kept (a provider other than the CPU, or graph
    optimisations below the highest level: ``opt_level``, else the process default)."""
    level = opt_level or session_defaults().opt_level
    if list(providers) != [CPU] or level != "all":
        return None
    return {"onnxruntime": ort.__version__, "providers": [CPU], "opt_level": level,
            "cpu": cpu_signature()}


def open_session(setup: ModelSetup, providers: list[str], threads: int | None,
                 ctx: dict[str, Any] | None) -> ort.InferenceSession:
    """The session of the fused model: from its optimised form when the cache held it for
    ``ctx``; else opened as usual, and (with a context and the cache) the optimised form made
    and stored for ``ctx`` in the background, while the explanation runs (onnxruntime takes
    a quarter of a second more to write a resnet50's model than to open a session on it)."""
    prep = setup.prepared
    if prep.session_bytes is not None:
        session = make_session(prep.session_bytes, providers, threads, opt_level="disabled")
        prep.session_bytes = None  # the session has its own copy
        return session
    model = prep.fused_bytes
    session = make_session(model if model is not None else setup.fused, providers, threads)
    if ctx is not None and prep.key is not None and model is not None:
        cache.write_soon(cache.cache_dir(), {**prep.key, "session": ctx}, prep.record(),
                         partial(_optimised, model, providers))
    return session


def _optimised(model: bytes, providers: list[str]) -> bytes | None:
    """The model as onnxruntime's optimiser leaves it (one thread: the layout choices do not
    depend on the thread count, tests/test_cache.py)."""
    session, path = make_saved_session(model, providers, 1)
    del session
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None
    finally:
        path.unlink(missing_ok=True)
