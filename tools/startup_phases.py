"""Where the time of one `ort-cam explain` process goes, phase by phase (run by
tools/bench_startup.py in a fresh process per measurement).

    python tools/startup_phases.py OUT_JSON -- <ort-cam explain arguments>

It runs the command in this process with a timer around each phase's function and writes
{phase: seconds} to OUT_JSON. The phases do not overlap: the time a phase spends importing
modules it had not imported yet is counted under "imports", not under the phase, and "other"
is the process's own time (from this script's first line) that no phase took. Phases run by
another thread (the cache's background writes) are listed "(in the background)" and left out
of the sum: they overlap the main thread's. Python's start
(before this script's first line) is the caller's: its wall time minus ``inner`` here.

A phase whose function is not in the tree (renamed, or never called by that command) is 0.
"""

from __future__ import annotations

import builtins
import importlib
import json
import sys
import threading
import time

T_START = time.perf_counter()

#: (module, attribute (Class.method for a method), phase). Leaf functions only: no phase's
#: function calls another's, so the phases add up.
PHASES: list[tuple[str, str, str]] = [
    ("ort_cam.prepared", "model_digest", "model digest (cache key)"),
    ("ort_cam.prepared", "remembered_digest", "model digest (cache key)"),
    ("ort_cam.cache", "read", "cache read"),
    ("ort_cam.prepared", "build", "build (load, probe, differentiate)"),
    ("ort_cam.cache", "write", "cache write"),
    ("ort_cam.explainer", "make_session", "session creation"),
    ("ort_cam.optimized", "make_session", "session creation"),
    ("ort_cam.optimized", "make_saved_session", "session creation"),
    ("ort_cam.runtime", "Runner.run", "session runs"),
    ("ort_cam.engine", "Feeder.feed", "methods (reduce)"),
    ("ort_cam.engine", "Feeder.finish", "methods (reduce)"),
    ("ort_cam.explainer", "upsample", "methods (upsample, normalise)"),
    ("ort_cam.explainer", "normalize", "methods (upsample, normalise)"),
    ("ort_cam.cli.explain_cmd", "load_image", "image decode"),
    ("ort_cam.model_setup", "ModelSetup.image_inputs", "image preprocess"),
    ("ort_cam.outputs", "save_panel", "panel (PNG)"),
    ("ort_cam.outputs", "np.savez_compressed", "arrays (npz)"),
    ("ort_cam.outputs", "np.savez", "arrays (npz)"),
]

_local = threading.local()
totals: dict[str, float] = {}
imports = [0.0]  # seconds the main thread spent importing (outermost imports only)
runs: list[float] = []  # every session run, in order
background: dict[str, float] = {}  # phases run by other threads (not part of the sum)


def _timed_import(real):
    main = threading.main_thread()

    def wrapped(name, globals=None, locals=None, fromlist=(), level=0):
        if threading.current_thread() is not main or getattr(_local, "depth", 0):
            return real(name, globals, locals, fromlist, level)
        _local.depth = 1
        t0 = time.perf_counter()
        try:
            return real(name, globals, locals, fromlist, level)
        finally:
            imports[0] += time.perf_counter() - t0
            _local.depth = 0

    return wrapped


def _wrap(fn, phase: str):
    main = threading.main_thread()

    def timed(*args, **kwargs):
        t0, i0 = time.perf_counter(), imports[0]
        try:
            return fn(*args, **kwargs)
        finally:
            if threading.current_thread() is not main:  # overlaps the main thread's phases
                key = f"{phase} (in the background)"
                background[key] = background.get(key, 0.0) + time.perf_counter() - t0
            else:
                seconds = time.perf_counter() - t0 - (imports[0] - i0)
                totals[phase] = totals.get(phase, 0.0) + seconds
                if phase == "session runs":
                    runs.append(seconds)

    return timed


def instrument() -> None:
    """Put a timer around every phase's function that exists in the tree."""
    for module, attr, phase in PHASES:
        try:
            owner = importlib.import_module(module)
        except ImportError:
            continue
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is not None and callable(getattr(owner, name, None)):
            setattr(owner, name, _wrap(getattr(owner, name), phase))


def main() -> None:
    out, args = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    builtins.__import__ = _timed_import(builtins.__import__)
    from ort_cam.cli import main as cli  # timed by the hook, as every import from here on

    instrument()
    try:
        cli(args, standalone_mode=False)
    finally:
        sys.stdout.flush()
    waited = time.perf_counter()
    for thread in threading.enumerate():  # what the process waits for before it exits
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    inner = time.perf_counter() - T_START
    totals["waiting for background threads at exit"] = time.perf_counter() - waited
    phases = dict(totals)
    if runs:  # the first run allocates onnxruntime's arena: "warm-up" is what it took extra
        phases["session runs"] -= runs[0]
        phases["first session run (x alone, warm-up)"] = runs[0]
    phases["imports"] = imports[0]
    phases["other"] = inner - sum(phases.values())
    phases.update(background)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"inner": inner, "phases": phases}, fh)


if __name__ == "__main__":
    main()
