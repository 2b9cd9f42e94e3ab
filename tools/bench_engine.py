"""Benchmark of the CAM engine (issue: CAM engine).

All three maps for resnet50 (random weights) at its last block, m = 50, 224², measured side by
side in one run on the same CPU threads:
  - ort_cam: Explainer.explain_array (one pass over the m+1 path points, chunked);
  - PyTorch eager: the same path as one batch, forward + backward to the layer, same reductions
    (goal: ort_cam >= 2x faster);
  - a plain onnxruntime forward of the m+1 batch, the floor of this approach (goal <= 1.10x);
  - peak resident memory during the explanation at m = 200 against m = 50 (goal <= 1.2x),
    each in a fresh process with the peak counter reset after setup.

    python tools/bench_engine.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision, interleaved_medians, random_batch  # noqa: E402

LAST = "/layer4/layer4.2/relu_2/Relu_output_0"
M = 50


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_run(path: str, steps: int, threads: int) -> None:
    """Child process: peak RSS of one explanation, counted from after setup."""
    import ort_cam

    ex = ort_cam.Explainer(path, LAST, threads=threads, quiet=True)
    x = random_batch(1)
    ex.explain_array(x, baseline_array="zeros", steps=2)  # warm the session up
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to current RSS
    before = _vm("VmRSS")
    ex.explain_array(x, baseline_array="zeros", steps=steps)
    print(json.dumps({"steps": steps, "rss_before": before, "peak": _vm("VmHWM"),
                      "chunk": ex.chunk_for(steps)}))


def torch_cams(model, layer_module, x, x0, c, m):
    """The three maps in PyTorch eager: forward + backward of the whole path as one batch."""
    import torch

    feats = {}

    def hook(_mod, _inp, out):
        out.retain_grad()
        feats["a"] = out

    handle = layer_module.register_forward_hook(hook)
    alphas = torch.arange(m + 1, dtype=torch.float32).view(-1, 1, 1, 1) / m
    xs = x0 + alphas * (x - x0)
    probs = torch.softmax(model(xs), dim=1)[:, c]
    probs.sum().backward()
    handle.remove()
    with torch.no_grad():
        a, g = feats["a"].double(), feats["a"].grad.double()
        gc = torch.relu((g[m].mean((1, 2))[:, None, None] * a[m]).sum(0))
        s = g[1:].sum((2, 3))
        ig = torch.relu(torch.einsum("bk,bkij->bij", s, a[1:] - a[0])).sum(0) / m
        rsi_ig = (0.5 * (g[1:] + g[:-1]) * (a[1:] - a[:-1])).sum(0)
        sel = (a[m] > 0) & (rsi_ig > 0) & (a[m] - a[0] > 0)
        rsi = torch.relu(((rsi_ig * sel).mean((1, 2))[:, None, None] * a[m]).sum(0))
    return gc, ig, rsi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-run", nargs=2, metavar=("MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_run:
        memory_run(args.memory_run[0], int(args.memory_run[1]), args.threads)
        return

    import onnxruntime as ort
    import torch

    import ort_cam
    from ort_cam.runtime import session_options

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="ort_cam_bench_"))
    path = tmp / "resnet50.onnx"
    model = export_torchvision("resnet50", path)
    ex = ort_cam.Explainer(str(path), LAST, threads=args.threads, quiet=True)
    plain = ort.InferenceSession(str(path), session_options(args.threads),
                                 providers=["CPUExecutionProvider"])
    x = random_batch(1, seed=1)
    x0 = np.zeros_like(x)
    c = int(np.argmax(plain.run(None, {"input": x})[0]))
    batch = random_batch(M + 1, seed=2)
    xt, x0t = torch.from_numpy(x), torch.from_numpy(x0)
    results = {}

    def ours():
        results["ours"] = ex.explain_array(x, baseline_array=x0, target=c, steps=M)

    def eager():
        results["torch"] = torch_cams(model, model.layer4, xt, x0t, c, M)

    t = interleaved_medians({
        "ort_cam (3 maps, m=50)": ours,
        "torch eager (3 maps, m=50)": eager,
        "onnxruntime forward, batch 51": lambda: plain.run(None, {"input": batch}),
    }, args.repeats)
    r = results["ours"]
    err = max(float(np.abs(r[k].raw - v.numpy()).max() / max(np.abs(v.numpy()).max(), 1e-30))
              for k, v in zip(("gradcam", "igcam", "rsi"), results["torch"]))
    ours_t, torch_t = t["ort_cam (3 maps, m=50)"], t["torch eager (3 maps, m=50)"]
    fwd_t = t["onnxruntime forward, batch 51"]
    print(f"resnet50 224x224, layer {LAST}, m={M}, {args.threads} threads, chunk "
          f"{ex.chunk_for(M)}, median of {args.repeats}")
    for name, sec in t.items():
        print(f"  {name:32s} {sec:7.2f} s")
    print(f"  max relative difference of the maps, ort_cam vs torch: {err:.2e}")
    print(f"torch / ort_cam = {torch_t / ours_t:.2f}x (goal >= 2)")
    print(f"ort_cam / forward(m+1) = {ours_t / fwd_t:.3f} (goal <= 1.10)")
    print(f"torch / forward(m+1) = {torch_t / fwd_t:.2f}  (forward = {fwd_t / torch_t:.2f}x torch)")
    print_memory(path, args.threads)


def print_memory(path: Path, threads: int) -> None:
    """Peak RSS of one explanation at m=50 and m=200, each in a fresh process."""
    mem = {}
    for steps in (50, 200):
        out = subprocess.run([sys.executable, __file__, "--threads", str(threads),
                              "--memory-run", str(path), str(steps)],
                             capture_output=True, text=True, check=True)
        mem[steps] = json.loads(out.stdout.strip().splitlines()[-1])
        d = mem[steps]
        print(f"  m={steps:3d}: peak RSS {d['peak'] / 2**20:7.0f} MiB during explain "
              f"(RSS before {d['rss_before'] / 2**20:.0f} MiB, chunk {d['chunk']})")
    print(f"peak memory m=200 / m=50 = {mem[200]['peak'] / mem[50]['peak']:.3f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
