"""The GPU check: ort_cam's CUDA execution-provider path against its CPU path and against
PyTorch on the same GPU. Run by tools/gpu_check.sh (see there for the setup); about 2–4
minutes on a GPU machine, under a minute with --dry-run.

  1. The environment: onnxruntime's version and providers, whether CUDA really runs (a
     session on CUDAExecutionProvider), torch and the GPU.
  2. The demo model (models/demo): every sample explained on the CPU and on CUDA; the
     largest relative difference of each method's raw map, and the time per image.
  3. resnet50 (torchvision, seeded random weights), last block, m = 50, all three methods:
     CPU against CUDA maps, and ms/image for ort_cam on CUDA against PyTorch CUDA eager
     (torch.autograd.grad to the layer, the path as one batch, the same reductions).

Without a working CUDA provider (onnxruntime without CUDA, no GPU, or CUDA libraries that do
not match), the CUDA rows say why and the rest still runs: the CPU path, and PyTorch on the
GPU when torch sees one. ``--dry-run``: CPU only, m = 8, two demo images (for checking the
script itself on a machine without a GPU).

    python tools/gpu_check.py [--dry-run] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

LAST = "/layer4/layer4.2/relu_2/Relu_output_0"
METHODS = ("gradcam", "igcam", "rsi")


def timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None
          ) -> tuple[float, Any]:
    """Median seconds of ``fn`` after one warm-up call, and its last result."""
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


def environment() -> tuple[bool, bool]:
    """Print what is there; (ort CUDA works, torch CUDA works)."""
    import onnxruntime as ort

    from ort_cam.runtime import CUDA, provider_works

    have = ort.get_available_providers()
    cuda_ort = CUDA in have and provider_works(CUDA)
    why = "" if cuda_ort else (" (not in this onnxruntime build)" if CUDA not in have else
                               " (listed, but a session cannot run on it: GPU or libraries)")
    print(f"python {sys.version.split()[0]}, onnxruntime {ort.__version__}, providers {have}")
    print(f"onnxruntime CUDA provider: {'works' if cuda_ort else 'UNAVAILABLE' + why}")
    try:
        import torch

        cuda_torch = bool(torch.cuda.is_available())
        gpu = torch.cuda.get_device_name(0) if cuda_torch else "none"
        print(f"torch {torch.__version__}, CUDA {'available' if cuda_torch else 'not available'}"
              f", GPU: {gpu}")
    except ImportError:
        cuda_torch = False
        print("torch: not installed (the resnet50 part is skipped)")
    return cuda_ort, cuda_torch


def demo(providers: list[str], n_images: int, steps: int) -> None:
    import ort_cam

    d = ROOT / "models" / "demo"
    images = sorted((d / "samples").glob("*.png"))[:n_images]
    results: dict[str, list[Any]] = {}
    print(f"\n2. demo model, {len(images)} images, m={steps}")
    for prov in providers:
        ex = ort_cam.Explainer(d / "demo_cnn.onnx", quiet=True, providers=prov, cache=False)
        ex.explain_many(images[:1], steps=steps)  # warm up
        t0 = time.perf_counter()
        results[prov] = ex.explain_many(images, steps=steps)
        per = (time.perf_counter() - t0) / len(images)
        print(f"  {prov:5s}: {1e3 * per:8.1f} ms/image (explain_many: paths packed)")
    if "cuda" in results:
        for name in METHODS:
            worst = max(rel(g[name].raw, c[name].raw)
                        for g, c in zip(results["cuda"], results["cpu"]))
            same = all(g.target == c.target for g, c in zip(results["cuda"], results["cpu"]))
            print(f"  {name:8s} CUDA vs CPU: max relative difference {worst:.1e}"
                  f"{'' if same else ' (TARGETS DIFFER)'}")


def torch_cams(model, x, x0, c: int, m: int):
    """The three maps in PyTorch eager on x's device (tools/bench_engine.py's reference)."""
    from bench_engine import torch_cams as reference

    return reference(model, model.layer4, x, x0, c, m)


def resnet(providers: list[str], cuda_torch: bool, steps: int, repeats: int) -> None:
    import torch
    from bench_common import export_torchvision, random_batch

    import ort_cam

    path = Path(tempfile.mkdtemp(prefix="gpu_check_")) / "resnet50.onnx"
    model = export_torchvision("resnet50", path)
    x = random_batch(1, seed=1)
    x0 = np.zeros_like(x)
    print(f"\n3. resnet50 224x224, layer {LAST}, m={steps}, three methods, median of {repeats}")
    maps: dict[str, Any] = {}
    ours: dict[str, float] = {}
    for prov in providers:
        ex = ort_cam.Explainer(str(path), LAST, quiet=True, providers=prov, cache=False)
        sec, r = timed(lambda ex=ex: ex.explain_array(x, baseline_array=x0, steps=steps),
                       repeats)
        maps[prov], ours[prov] = r, sec
        print(f"  ort_cam {prov:5s}: {1e3 * sec:9.1f} ms/image (chunk {ex.chunk_for(steps)}, "
              f"session on {ex.session.get_providers()[0]}, IOBinding {ex.runner.bound})")
    c = maps["cpu"].target
    if "cuda" in maps:
        for name in METHODS:
            print(f"  {name:8s} CUDA vs CPU: max relative difference "
                  f"{rel(maps['cuda'][name].raw, maps['cpu'][name].raw):.1e}")
    dev = "cuda" if cuda_torch else "cpu"
    m_dev = model.to(dev)
    xt, x0t = torch.from_numpy(x).to(dev), torch.from_numpy(x0).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sec, ref = timed(lambda: torch_cams(m_dev, xt, x0t, c, steps), repeats, sync)
    err = max(rel(maps["cpu"][n].raw, t) for n, t in zip(METHODS, ref))
    print(f"  torch eager {dev:4s} (autograd.grad to the layer): {1e3 * sec:9.1f} ms/image; "
          f"maps vs ort_cam cpu {err:.1e}")
    same = "cuda" if dev == "cuda" else "cpu"
    if same in ours:
        print(f"  ort_cam {same} / torch eager {dev} = {ours[same] / sec:.3f} "
              "(the same device; goal <= 0.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU only, m = 8, two demo images: checks the script itself")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("1. environment")
    cuda_ort, cuda_torch = environment()
    if args.dry_run:
        cuda_ort = cuda_torch = False
        args.steps, args.repeats = 8, 1
        print("--dry-run: CPU only, m = 8")
    providers = ["cpu", "cuda"] if cuda_ort else ["cpu"]
    demo(providers, 2 if args.dry_run else 8, args.steps)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    resnet(providers, cuda_torch, args.steps, args.repeats)
    print("\nRESULT: " + ("CUDA provider checked" if cuda_ort else
                          "CUDA provider NOT checked (see 1.); CPU path and torch ran"))


if __name__ == "__main__":
    main()
