"""Gradient heads on torchvision architectures against torch autograd, as a table.

Runs the comparison of tests/test_heads_torchvision.py (the code is tests/torch_reference.py)
and prints, per model, layer and score mode:

  grad     max|grad - ref| / max|ref|, ref = float64 autograd along onnxruntime's kink branches
  floor    the same for torch's own float32 run along those branches: the noise floor; the
           tolerance of grad is min(GRAD_CAP, FACTOR x floor + ABS_FLOOR)
  f64-own  the same against float64 autograd along float64's own branches
  act      the fused model's layer activation against float64
  repro    prefix.onnx + head.onnx scores against the original model (logits or softmax)
  head     prefix.onnx + head.onnx grad against float64 along the head run's branches
  cross    tensors that cross the cut besides the layer
  branches kink elements where onnxruntime branched unlike float64, and the largest distance
           of such an input from its corner relative to its tensor's largest magnitude
  excess   that distance / (FACTOR x float32 torch's deviation at that input + ABS_FLOOR);
           at most 1 if the branch is float32 rounding

Needs torch and torchvision (pip install '.[test]'). Usage:

  python tools/check_heads.py [MODEL ...] [--seed N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch_reference as tr  # noqa: E402

COLUMNS = ("model", "layer (torch module)", "onnx op", "score", "grad", "floor", "f64-own", "act",
           "repro", "head", "cross", "branches", "excess")


def rows(results: list[tr.Result]) -> list[tuple[str, ...]]:
    out = []
    for r in results:
        branches = f"{r.branches} @ {r.branch_margin:.0e}" if r.branches else "0"
        out.append((r.model, r.module, r.op, r.score, f"{r.grad:.1e}", f"{r.grad_floor:.1e}",
                    f"{r.plain:.1e}", f"{r.act:.1e}", f"{r.repro:.1e}", f"{r.head_grad:.1e}",
                    str(r.crossing), branches, f"{r.branch_excess:.2f}"))
    return out


def table(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    fmt = " | ".join(f"{{:{w}}}" for w in widths)
    sep = "-|-".join("-" * w for w in widths)
    return "\n".join([fmt.format(*COLUMNS), sep, *(fmt.format(*line) for line in lines)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"models to check (default: all): {', '.join(tr.CASES_BY_NAME)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the exported models go (default: a temporary directory)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    names = args.models or list(tr.CASES_BY_NAME)
    unknown = [n for n in names if n not in tr.CASES_BY_NAME]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}")
    results, failed = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check_heads_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            case = tr.CASES_BY_NAME[name]
            t0 = time.perf_counter()
            try:
                results += tr.check_case(case, workdir, args.seed)
            except Exception as exc:  # report and go on with the other models
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"# {name} (opset {case.opset}) {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    print(f"input {tr.SIZE}x{tr.SIZE}, batch {tr.BATCH}, seed {args.seed}; tolerances: "
          f"{tr.FACTOR:g} x float32 floor + {tr.ABS_FLOOR:g}, capped at grad/head "
          f"{tr.GRAD_CAP:g}, act {tr.ACT_CAP:g}, scores/repro {tr.SCORES_CAP:g}")
    print(table(rows(results)))
    worst = [r for r in results if any(e > t for e, t in r.tolerances().values())]
    for line in failed:
        print("FAILED", line)
    for r in worst:
        print("OUT OF TOLERANCE", r.model, r.module, r.score,
              {k: f"{e:.1e} > {t:.1e}" for k, (e, t) in r.tolerances().items() if e > t})
    print(f"{len(results)} rows, {len(worst)} out of tolerance, {len(failed)} models failed, "
          f"{time.perf_counter() - start:.0f} s")
    return 1 if worst or failed else 0


if __name__ == "__main__":
    sys.exit(main())
