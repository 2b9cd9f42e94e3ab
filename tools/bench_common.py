"""Shared pieces of the benchmarks: torchvision exports with random weights, timing."""

from __future__ import annotations

import atexit
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder for a benchmark's models, removed when the process exits (the
    exported models run to hundreds of MB, and runs left them behind)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def export_torchvision(name: str, path: Path, size: int = 224, seed: int = 0):
    """Export torchvision ``name`` (random weights, eval mode) to ``path``; returns the module."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).eval()
    if not path.exists():
        torch.onnx.export(model, torch.randn(1, 3, size, size), str(path), opset_version=17,
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return model


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, run round-robin so load on the machine hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def interleaved_wall_cpu(fns: dict[str, Callable[[], object]], repeats: int,
                         warmup: int = 1) -> dict[str, tuple[float, float]]:
    """Median wall and process-CPU seconds of each function, run round-robin. On a shared
    machine CPU time is the steadier measure of the work done (with one intra-op thread it
    counts no spinning either); wall time is what a user waits."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - w, time.process_time() - c))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for k, v in times.items()}


def print_ratios(times: dict[str, tuple[float, float]], base: str, width: int = 10) -> None:
    """One line per timed run: wall s, CPU s, and their ratios to the run ``base``'s."""
    base_wall, base_cpu = times[base]
    for name, (wall, cpu) in times.items():
        print(f"  {name:{width}s} {wall:7.3f}  {cpu:7.3f}  {wall / base_wall:5.2f}x  "
              f"{cpu / base_cpu:5.2f}x")


def random_batch(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)
