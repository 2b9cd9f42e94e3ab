"""Benchmark of the CAM engine against the strongest fair way to do the same work elsewhere.

resnet50 (random weights) at its last block, 224², m = 50, probability score, the same
threads (or the same GPU), every contender run round-robin (interleaved medians):

  A. The three maps. ort_cam (one pass over the m+1 path points, chunked; x run once) against
     PyTorch eager with torch.autograd.grad taken with respect to the layer only (the same
     path as one batch, the same reductions in float64; goal: ort_cam <= 0.5x its time) and
     against a plain onnxruntime forward of the m+1 batch (the floor; goal: <= 1.10x).
     PyTorch with .backward(), which also computes every parameter's gradient, is printed
     for the record: earlier README numbers compared against it.
  B. Grad-CAM + RSI-Grad-CAM. ort_cam against captum 0.9.0: LayerGradCam, plus
     LayerConductance called twice (x0 -> x and x -> x0, riemann_trapezoid alphas l/m): its
     sums take the gradient at the left end of each step, so the mean of the two directions
     is RSI's trapezoid rule.
  C. Grad-CAM alone. ort_cam (one run of x at batch 1) against pytorch-grad-cam 1.5.7's
     GradCAM (softmax target) and torch.autograd.grad at x.
  D. Peak resident memory of an explanation at m = 200 against m = 50 (goal <= 1.2x), each
     in a fresh process with the peak counter reset after setup (CPU only).
  E. IOBinding: the three maps with the session run through IOBinding (outputs bound to new
     host arrays; the default on CUDA) against session.run (the default on the CPU), the same
     session, side by side; the maps are checked to be bit-identical.
  F. Where the time of the three maps goes: ort_cam's explain_array, a plain forward of the
     m+1 batch and a forward of the model cut at the layer (the prefix, onnx.utils's
     extract_model) side by side. Shares of explain_array's time: the prefix (its forward of
     the m+1 inputs), the head (the session runs' time less the prefix's: the layers above
     the cut forward and backward, and the layer's outputs), the methods (the reducers) and
     Python (the rest: path inputs, chunks, scores, maps). With --profile, onnxruntime's own
     profile of the fused session (enable_profiling) is summed by node too: the nodes of the
     gradient graph (ort_cam/...), the layers above the cut, and the layer's reorder.

    python tools/bench_engine.py [--repeats 3] [--threads 2] [--providers cpu|cuda]
                                 [--sections ABCDEF] [--profile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import export_torchvision, interleaved_wall_cpu, random_batch, scratch_dir  # noqa: E402

LAST = "/layer4/layer4.2/relu_2/Relu_output_0"
M = 50
METHODS = ("gradcam", "igcam", "rsi")


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_run(path: str, steps: int, threads: int) -> None:
    """Child process: peak RSS of one explanation, counted from after setup."""
    import ort_cam

    ex = ort_cam.Explainer(path, LAST, threads=threads, quiet=True, providers="cpu")
    x = random_batch(1)
    ex.explain_array(x, baseline_array="zeros", steps=2)  # warm the session up
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak) to current RSS
    before = _vm("VmRSS")
    ex.explain_array(x, baseline_array="zeros", steps=steps)
    print(json.dumps({"steps": steps, "rss_before": before, "peak": _vm("VmHWM"),
                      "chunk": ex.chunk_for(steps)}))


# --- PyTorch ----------------------------------------------------------------------------
def _layer_and_grad(model, layer_module, xs, c, backward: bool):
    """A and dp_c/dA for a batch: autograd.grad to the layer only, or .backward()."""
    import torch

    feats = {}

    def hook(_mod, _inp, out):
        if backward:
            out.retain_grad()
        feats["a"] = out

    handle = layer_module.register_forward_hook(hook)
    try:
        probs = torch.softmax(model(xs), dim=1)[:, c]
        if backward:
            probs.sum().backward()
            return feats["a"].detach(), feats["a"].grad
        (g,) = torch.autograd.grad(probs.sum(), feats["a"])
        return feats["a"].detach(), g
    finally:
        handle.remove()


def torch_cams(model, layer_module, x, x0, c, m, backward: bool = False):
    """The three maps in PyTorch eager, the whole path as one batch."""
    import torch

    alphas = torch.arange(m + 1, dtype=torch.float32, device=x.device).view(-1, 1, 1, 1) / m
    a, g = _layer_and_grad(model, layer_module, x0 + alphas * (x - x0), c, backward)
    with torch.no_grad():
        a, g = a.double(), g.double()
        gc = torch.relu((g[m].mean((1, 2))[:, None, None] * a[m]).sum(0))
        s = g[1:].sum((2, 3))
        ig = torch.relu(torch.einsum("bk,bkij->bij", s, a[1:] - a[0])).sum(0) / m
        rsi_ig = (0.5 * (g[1:] + g[:-1]) * (a[1:] - a[:-1])).sum(0)
        rsi = _rsi_map(rsi_ig, a[0], a[m])
    return [t.cpu().numpy() for t in (gc, ig, rsi)]


def _rsi_map(ig, a0, am):
    import torch

    sel = (am > 0) & (ig > 0) & (am - a0 > 0)
    return torch.relu(((ig * sel).mean((1, 2))[:, None, None] * am).sum(0))


def torch_gradcam(model, layer_module, x, c):
    """Grad-CAM at x alone, autograd.grad to the layer."""
    import torch

    a, g = _layer_and_grad(model, layer_module, x, c, backward=False)
    with torch.no_grad():
        return torch.relu((g[0].mean((1, 2))[:, None, None] * a[0]).sum(0)).cpu().numpy()


# --- captum and pytorch-grad-cam ----------------------------------------------------------
def captum_gc_rsi(softmax_model, layer_module, x, x0, c, m):
    """Grad-CAM (LayerGradCam) and RSI (LayerConductance both ways: trapezoid IG)."""
    import torch
    from captum.attr import LayerConductance, LayerGradCam

    gc = LayerGradCam(softmax_model, layer_module).attribute(x, target=c,
                                                            relu_attributions=True)
    cond = LayerConductance(softmax_model, layer_module)
    kw = {"target": c, "n_steps": m, "method": "riemann_trapezoid"}
    left = cond.attribute(x, baselines=x0, **kw)  # Σ G_{l-1} (A_l − A_{l-1})
    right = cond.attribute(x0, baselines=x, **kw)  # −Σ G_l (A_l − A_{l-1})
    with torch.no_grad():
        ig = (0.5 * (left - right))[0].double()
        feats: dict[str, torch.Tensor] = {}
        handle = layer_module.register_forward_hook(lambda _m, _i, o: feats.setdefault("a", o))
        softmax_model(torch.cat([x0, x]))
        handle.remove()
        a0, am = feats["a"][0].double(), feats["a"][1].double()
        rsi = _rsi_map(ig, a0, am)
    return [gc[0, 0].detach().double().cpu().numpy(), rsi.cpu().numpy()]


def grad_cam_lib(model, layer_module, x, c):
    """pytorch-grad-cam's GradCAM map (upsampled and min-max scaled by the library). Its hooks
    are released after each call so that they do not slow the other contenders down."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    cam = GradCAM(model=model, target_layers=[layer_module])
    try:
        return cam(input_tensor=x, targets=[ClassifierOutputSoftmaxTarget(c)])[0]
    finally:
        cam.activations_and_grads.release()


# --- the run ------------------------------------------------------------------------------
def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()
                 / max(float(np.abs(np.asarray(b)).max()), 1e-30))


def stock_options(threads: int) -> Any:
    """onnxruntime's own session options, with ``threads`` intra-op threads (what a user of
    plain onnxruntime gets: all graph optimisations, spinning threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class Setup:
    """Everything the contenders share: the model in both frameworks, x, x0 and the class."""

    def __init__(self, args: argparse.Namespace):
        import onnxruntime as ort
        import torch

        import ort_cam
        from ort_cam.runtime import select_providers

        torch.set_num_threads(args.threads)
        self.device = torch.device("cuda" if args.providers == "cuda" else "cpu")
        tmp = args.models or scratch_dir("ort_cam_bench_")
        tmp.mkdir(parents=True, exist_ok=True)
        self.path = tmp / "resnet50.onnx"
        self.model = export_torchvision("resnet50", self.path).to(self.device)
        self.softmax_model = torch.nn.Sequential(self.model, torch.nn.Softmax(dim=1)).eval()
        self.ex = ort_cam.Explainer(str(self.path), LAST, threads=args.threads, quiet=True,
                                    providers=args.providers)
        providers, _ = select_providers(args.providers)
        self.plain = ort.InferenceSession(str(self.path), stock_options(args.threads),
                                          providers=providers)
        self.x = random_batch(1, seed=1)
        self.x0 = np.zeros_like(self.x)
        self.c = int(np.argmax(self.plain.run(None, {"input": self.x})[0]))
        self.batch = random_batch(M + 1, seed=2)
        self.xt = torch.from_numpy(self.x).to(self.device)
        self.x0t = torch.from_numpy(self.x0).to(self.device)

    def ours(self, methods, steps=M):
        return self.ex.explain_array(self.x, baseline_array=self.x0, target=self.c,
                                     steps=steps, methods=methods)


Times = dict[str, tuple[float, float]]


def section(title: str, fns: dict[str, Callable[[], object]], repeats: int) -> Times:
    t = interleaved_wall_cpu(fns, repeats)
    print(title)
    for name, (wall, cpu) in t.items():
        print(f"  {name:44s} {wall:8.3f} s wall {cpu:8.3f} s CPU")
    return t


def ratio(label: str, t: Times, a: str, b: str, goal: str = "") -> None:
    """``a`` over ``b``, by wall and by CPU time."""
    print(f"  {label} = {t[a][0] / t[b][0]:.3f} wall, {t[a][1] / t[b][1]:.3f} CPU {goal}")


def three_maps(s: Setup, repeats: int) -> None:
    out: dict[str, Any] = {}
    t = section(f"A. the three maps, m={M}", {
        "ort_cam": lambda: out.__setitem__("ours", s.ours(METHODS)),
        "torch eager, autograd.grad to the layer": lambda: out.__setitem__(
            "torch", torch_cams(s.model, s.model.layer4, s.xt, s.x0t, s.c, M)),
        "torch eager, .backward() (all parameters)": lambda: torch_cams(
            s.model, s.model.layer4, s.xt, s.x0t, s.c, M, backward=True),
        f"onnxruntime forward, batch {M + 1}": lambda: s.plain.run(None, {"input": s.batch}),
    }, repeats)
    r = out["ours"]
    err = max(rel(r[k].raw, v) for k, v in zip(METHODS, out["torch"]))
    print(f"  maps, ort_cam vs torch: max relative difference {err:.1e}")
    ratio("ort_cam / torch layer-only", t, "ort_cam", "torch eager, autograd.grad to the layer",
          "(goal <= 0.5)")
    ratio("ort_cam / torch .backward()", t, "ort_cam", "torch eager, .backward() (all parameters)")
    ratio("ort_cam / forward(m+1)", t, "ort_cam", f"onnxruntime forward, batch {M + 1}",
          "(goal <= 1.10)")


def with_captum(s: Setup, repeats: int) -> None:
    out: dict[str, Any] = {}
    t = section(f"B. Grad-CAM + RSI-Grad-CAM, m={M}", {
        "ort_cam": lambda: out.__setitem__("ours", s.ours(("gradcam", "rsi"))),
        "captum LayerGradCam + 2x LayerConductance": lambda: out.__setitem__(
            "captum", captum_gc_rsi(s.softmax_model, s.model.layer4, s.xt, s.x0t, s.c, M)),
    }, repeats)
    r, (gc, rsi) = out["ours"], out["captum"]
    print(f"  maps, ort_cam vs captum: Grad-CAM {rel(r['gradcam'].raw, gc):.1e}, "
          f"RSI {rel(r['rsi'].raw, rsi):.1e} (max relative difference)")
    ratio("captum / ort_cam", t, "captum LayerGradCam + 2x LayerConductance", "ort_cam")


def gradcam_alone(s: Setup, repeats: int) -> None:
    out: dict[str, Any] = {}
    runs = {"n": 0}
    run = s.ex.runner.run

    def counted(feeds):
        runs["n"] += 1
        return run(feeds)

    setattr(s.ex.runner, "run", counted)  # noqa: B010 (count the session runs)
    t = section("C. Grad-CAM alone", {
        "ort_cam": lambda: out.__setitem__("ours", s.ours(("gradcam",))),
        "pytorch-grad-cam GradCAM": lambda: out.__setitem__(
            "lib", grad_cam_lib(s.model, s.model.layer4, s.xt, s.c)),
        "torch autograd.grad at x": lambda: out.__setitem__(
            "torch", torch_gradcam(s.model, s.model.layer4, s.xt, s.c)),
    }, repeats)
    setattr(s.ex.runner, "run", run)  # noqa: B010
    r = out["ours"]
    corr = float(np.corrcoef(r["gradcam"].map.ravel(), np.asarray(out["lib"]).ravel())[0, 1])
    print(f"  session runs per ort_cam explanation: {runs['n'] / (repeats + 1):.0f} "
          f"(batch 1); raw map vs torch {rel(r['gradcam'].raw, out['torch']):.1e}; "
          f"map vs pytorch-grad-cam's: correlation {corr:.4f} (its own upsampling)")
    ratio("pytorch-grad-cam / ort_cam", t, "pytorch-grad-cam GradCAM", "ort_cam")
    ratio("torch layer-only / ort_cam", t, "torch autograd.grad at x", "ort_cam")


def iobinding(s: Setup, repeats: int) -> None:
    """The three maps through IOBinding and through session.run, on one session."""
    from ort_cam.runtime import Runner

    default = s.ex.runner
    other = Runner(s.ex.session, bind=not default.bound, preallocate=True)
    runners = {"IOBinding" if r.bound else "session.run": r for r in (default, other)}
    out: dict[str, Any] = {}

    def through(name: str) -> None:
        s.ex.runner = runners[name]
        try:
            out[name] = s.ours(METHODS)
        finally:
            s.ex.runner = default

    t = section(f"E. IOBinding, the three maps, m={M}",
                {f"ort_cam, {name}": (lambda n=name: through(n)) for name in runners}, repeats)
    same = all(np.array_equal(out["IOBinding"][k].raw, out["session.run"][k].raw)
               for k in METHODS)
    print(f"  maps bit-identical: {same}")
    ratio("IOBinding / session.run", t, "ort_cam, IOBinding", "ort_cam, session.run")


class CpuSplit:
    """Process CPU seconds of explain_array's session runs and of its reducers (the engine's
    Feeder), per call, while installed (with one intra-op thread the process's CPU time is
    the work done; with more it counts onnxruntime's spinning threads too)."""

    def __init__(self, ex: Any):
        from ort_cam import engine

        self.calls: list[dict[str, float]] = []
        self.active = False  # only the calls made through ``call`` are counted
        self._undo: list[Callable[[], None]] = []
        for owner, name, part in ((ex.runner, "run", "runs"), (engine.Feeder, "feed", "reduce"),
                                  (engine.Feeder, "finish", "reduce")):
            self._wrap(owner, name, part)

    def _wrap(self, owner: Any, name: str, part: str) -> None:
        real = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return real(*args, **kwargs)
            c0 = time.process_time()
            try:
                return real(*args, **kwargs)
            finally:
                spent = time.process_time() - c0
                self.calls[-1][part] = self.calls[-1].get(part, 0.0) + spent
                if part == "runs":  # the first run of a call is x's alone (batch 1)
                    self.calls[-1].setdefault("x run", spent)

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, real))

    def call(self, fn: Callable[[], object]) -> Callable[[], object]:
        def counted() -> object:
            self.calls.append({})
            self.active, c0 = True, time.process_time()
            try:
                return fn()
            finally:
                self.calls[-1]["total"] = time.process_time() - c0
                self.active = False

        return counted

    def undo(self) -> None:
        for fn in self._undo:
            fn()

    def median(self, part: str) -> float:
        return float(np.median([c.get(part, 0.0) for c in self.calls[1:] or self.calls]))


def shares(s: Setup, repeats: int, threads: int) -> None:
    """F: the shares of explain_array's time (see the module's docstring)."""
    import onnx.utils
    import onnxruntime as ort


    cut = s.path.with_name("prefix.onnx")
    if not cut.exists():
        onnx.utils.extract_model(str(s.path), str(cut), ["input"], [LAST])
    prefix = ort.InferenceSession(str(cut), stock_options(threads),
                                  providers=s.plain.get_providers())
    spinning = spinning_runner(s.ex, threads)
    split = CpuSplit(s.ex)
    try:
        t = section(f"F. where the time goes, the three maps, m={M}", {
            "ort_cam explain_array": split.call(lambda: s.ours(METHODS)),
            "ort_cam, onnxruntime's threads spinning": lambda: with_runner(s, spinning),
            f"onnxruntime forward, batch {M + 1}": lambda: s.plain.run(None, {"input": s.batch}),
            f"prefix forward (input -> layer), batch {M + 1}":
                lambda: prefix.run(None, {"input": s.batch}),
        }, repeats)
    finally:
        split.undo()
    total, runs, reduce = (split.median(k) for k in ("total", "runs", "reduce"))
    pre = t[f"prefix forward (input -> layer), batch {M + 1}"][1]
    print(f"  shares of explain_array's process CPU time ({total:.3f} s): prefix "
          f"{pre / total:.1%} (its own forward of the m+1 inputs), head {(runs - pre) / total:.1%} "
          f"(the session runs less the prefix), methods {reduce / total:.1%}, Python "
          f"{(total - runs - reduce) / total:.1%}" + ("" if threads == 1 else
                                                      " (with 2+ threads: spinning included)"))
    x_run, forward = split.median("x run"), t[f"onnxruntime forward, batch {M + 1}"][1]
    print(f"  the run of x alone (batch 1): {x_run:.3f} s CPU, {x_run / (forward / (M + 1)):.2f}x "
          "one input's share of the batched forward")
    ratio("ort_cam / forward(m+1)", t, "ort_cam explain_array",
          f"onnxruntime forward, batch {M + 1}", "(goal <= 1.05)")
    ratio("ort_cam / the same with spinning threads", t, "ort_cam explain_array",
          "ort_cam, onnxruntime's threads spinning")


def spinning_runner(ex: Any, threads: int) -> Any:
    """A runner of the explainer's fused model whose session lets its threads spin
    (onnxruntime's default; ort_cam's sessions do not: runtime.NO_SPINNING)."""
    import onnxruntime as ort

    from ort_cam.runtime import NO_SPINNING, Runner, session_options

    options = session_options(threads)
    for key in NO_SPINNING:
        options.add_session_config_entry(key, "1")
    session = ort.InferenceSession(ex.fused.SerializeToString(), options,
                                   providers=ex.session.get_providers())
    return Runner(session, preallocate=True)


def with_runner(s: Setup, runner: Any) -> object:
    default, s.ex.runner = s.ex.runner, runner
    try:
        return s.ours(METHODS)
    finally:
        s.ex.runner = default


def node_profile(s: Setup, threads: int) -> None:
    """onnxruntime's profile of one explain_array (the three maps), summed by node kind."""
    import onnxruntime as ort

    from ort_cam.runtime import Runner, session_options

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(s.path.with_name("ort_profile"))
    session = ort.InferenceSession(s.ex.fused.SerializeToString(), options,
                                   providers=s.ex.session.get_providers())
    default, s.ex.runner = s.ex.runner, Runner(session, preallocate=True)
    try:
        s.ours(METHODS)
    finally:
        s.ex.runner = default
    events = json.loads(Path(session.end_profiling()).read_text())
    kinds: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        kind = ("gradient graph (ort_cam/...)" if name.startswith("ort_cam/") else
                "above the cut (avgpool, fc)" if name.startswith(("/avgpool", "/fc",
                                                                  "/Flatten")) else
                "layout reorders" if e["args"].get("op_name") == "ReorderOutput" else
                "below the cut (the prefix)")
        kinds[kind] = kinds.get(kind, 0.0) + e["dur"] / 1e6
    total = sum(kinds.values())
    print("  onnxruntime's profile of the fused session (node kernel time):")
    for kind, sec in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:34s} {sec:8.3f} s  {sec / total:6.1%}")


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
    print(f"  peak memory m=200 / m=50 = {mem[200]['peak'] / mem[50]['peak']:.3f} (goal <= 1.2)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--providers", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--sections", default="ABCDEF", help="which of A B C D E F to run")
    ap.add_argument("--models", type=Path, default=None,
                    help="keep the exported model here between runs")
    ap.add_argument("--profile", action="store_true",
                    help="F: also onnxruntime's profile of the fused session, by node kind")
    ap.add_argument("--memory-run", nargs=2, metavar=("MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_run:
        memory_run(args.memory_run[0], int(args.memory_run[1]), args.threads)
        return
    s = Setup(args)
    print(f"resnet50 224x224, layer {LAST}, m={M}, {args.providers}, {args.threads} threads, "
          f"chunk {s.ex.chunk_for(M)}, median of {args.repeats} (interleaved); on a shared "
          "machine prefer --threads 1 and the CPU column (OpenMP's barriers in torch stall "
          "when the cores are oversubscribed)")
    for key, fn in (("A", three_maps), ("B", with_captum), ("C", gradcam_alone)):
        if key in args.sections:
            fn(s, args.repeats)
    if "D" in args.sections and args.providers == "cpu":
        print("D. memory")
        print_memory(s.path, args.threads)
    if "E" in args.sections:
        iobinding(s, args.repeats)
    if "F" in args.sections:
        shares(s, args.repeats, args.threads)
        if args.profile:
            node_profile(s, args.threads)


if __name__ == "__main__":
    main()
