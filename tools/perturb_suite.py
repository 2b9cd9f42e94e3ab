"""Run the numeric tests under perturbations of float32 rounding, one factor at a time.

Another machine rounds float32 differently: its CPU makes onnxruntime and torch pick other
kernels, and other thread counts sum in other orders. This tool changes each of those factors
on this machine, one at a time, runs the test files that compare floats under it, and prints a
table (perturbation, passed/failed, seconds). A test that fails under one would fail on some
user's machine: its tolerance needs a margin it does not have (tests/tolerance.py), or there
is a bug.

The factors (the baseline runs as the suite runs by default: one onnxruntime and one torch
thread, all graph optimisations, torch's kernels for this CPU; tests/conftest.py):

  ort-threads=1, 2        onnxruntime intra-op threads of every session (pytest --ort-threads,
                          ort_cam's session default and the tests' own thread counts)
  torch-threads=1, 2      torch's threads for the references (pytest --torch-threads)
  OMP_NUM_THREADS=1, 2    OpenMP threads (torch and OpenBLAS read it)
  ort-opt=basic, all      onnxruntime graph optimisation level (pytest --ort-opt-level)
  ort-opt=basic+threads=2 the one combination run: onnxruntime's basic level makes a batch
                          item's sums depend on the batch only with more than one thread
  ATEN=default, avx2, avx512
                          torch's kernels for another CPU (ATEN_CPU_CAPABILITY; avx512 only
                          where this CPU has it)

The torch factors (torch-threads, ATEN) change nothing in a test file that does not use torch:
they run only the files that do.

OPENBLAS_CORETYPE is left as the machine sets it. onnxruntime picks its kernels from the CPU
with no switch: its differences across CPUs are covered by the margins alone.

Not part of CI (about an hour on 2 busy cores). Usage:

  python tools/perturb_suite.py [--only NAME ...] [--files test_x.py ...] [--logs DIR]
                                [-- extra pytest arguments]

Each run is ``python -m pytest -q -s`` on the files (the default suite's selection, so not
``-m slow``); the table's result is pytest's closing line, the log holds the rest.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What marks a test file that compares floats: numpy's and pytest's comparisons (exact ones
#: too: bit-identical results are a float claim), the tests' tolerance helpers
#: (tests/tolerance.py, the references' rel_err and floors), a number like 1e-6.
FLOAT_CHECK = re.compile(r"allclose|isclose\(|approx\(|array_equal|\brel(_err)?\(|max_rel\(|"
                         r"tolerance\(|\brtol\b|\batol\b|\bfloor\b|REBATCHED|ulps\(|"
                         r"\d(\.\d+)?e-\d")


def _with_helpers(name: str) -> str:
    """Test file ``name``'s text and that of the tests/ modules it imports."""
    text = (ROOT / "tests" / name).read_text()
    for a, b in re.findall(r"^import (\w+)|^from (\w+) import", text, re.M):
        helper = ROOT / "tests" / f"{a or b}.py"
        if helper.is_file():
            text += helper.read_text()
    return text


def numeric_files() -> list[str]:
    """The test files that compare floats computed by onnxruntime, torch or NumPy against
    references, hand values or each other (found by FLOAT_CHECK, so new ones join)."""
    return sorted(p.name for p in (ROOT / "tests").glob("test_*.py")
                  if FLOAT_CHECK.search(_with_helpers(p.name)))


@dataclass
class Perturbation:
    name: str
    args: list[str] = field(default_factory=list)  # pytest options
    env: dict[str, str] = field(default_factory=dict)
    torch_only: bool = False  # changes torch alone: only the files that use torch


def uses_torch(name: str) -> bool:
    """Whether test file ``name`` (or a helper module it imports) uses torch."""
    return bool(re.search(r"import torch\b|importorskip\(\"torch", _with_helpers(name)))


def _has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def perturbations() -> list[Perturbation]:
    out = [Perturbation("baseline")]
    out += [Perturbation(f"ort-threads={n}", [f"--ort-threads={n}"]) for n in (1, 2)]
    out += [Perturbation(f"torch-threads={n}", [f"--torch-threads={n}"], torch_only=True)
            for n in (1, 2)]
    out += [Perturbation(f"OMP_NUM_THREADS={n}", env={"OMP_NUM_THREADS": str(n)})
            for n in (1, 2)]
    out += [Perturbation(f"ort-opt={level}", [f"--ort-opt-level={level}"])
            for level in ("basic", "all")]
    # two factors: at its basic level onnxruntime sums a batch item in an order that depends on
    # the batch only when it runs more than one thread (tests/tolerance.py: REBATCHED)
    out.append(Perturbation("ort-opt=basic+threads=2", ["--ort-opt-level=basic",
                                                        "--ort-threads=2"]))
    caps = ["default", "avx2"] + (["avx512"] if _has_avx512() else [])
    out += [Perturbation(f"ATEN={cap}", env={"ATEN_CPU_CAPABILITY": cap}, torch_only=True)
            for cap in caps]
    return out


def torch_capability(env: dict[str, str]) -> str:
    """The kernels torch really uses under ``env`` (it ignores a capability the CPU lacks)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def _counts(text: str) -> str:
    """pytest's closing summary, e.g. '212 passed, 3 skipped' (or how it ended)."""
    tail = [line for line in text.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    return tail[-1].strip("= ") if tail else "no summary (see the log)"


def run(p: Perturbation, files: list[str], extra: list[str], logs: Path) -> tuple[str, float]:
    env = {**os.environ, **p.env}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *p.args,
           *[str(ROOT / "tests" / f) for f in files], *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = logs / (re.sub(r"[^A-Za-z0-9_.-]+", "_", p.name) + ".log")
    log.write_text(" ".join(cmd) + "\n" + done.stdout + done.stderr)
    return _counts(done.stdout), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME",
                        help="run only these perturbations (names as in the table)")
    parser.add_argument("--files", nargs="*", default=None, metavar="FILE",
                        help="test files (under tests/) to run (default: every file that "
                             "compares floats, numeric_files())")
    parser.add_argument("--logs", type=Path, default=None,
                        help="one pytest log per perturbation, with the tests' printed "
                             "measurements (pytest -s; default: a new temporary folder)")
    args, extra = parser.parse_known_args(argv)
    # a file named as under tests/ or with its tests/ prefix; one that is not there is refused
    args.files = [Path(f).name for f in args.files] if args.files else numeric_files()
    missing = [f for f in args.files if not (ROOT / "tests" / f).is_file()]
    if missing:
        parser.error(f"no test file {', '.join(missing)} under {ROOT / 'tests'}")
    extra = [a for a in extra if a != "--"]
    chosen = [p for p in perturbations() if args.only is None or p.name in args.only]
    args.logs = args.logs or Path(tempfile.mkdtemp(prefix="perturb-logs-"))
    args.logs.mkdir(parents=True, exist_ok=True)
    print(f"{len(args.files)} test files; logs in {args.logs}/", flush=True)
    print(f"{'perturbation':<24} {'torch kernels':<14} {'files':>5} {'result':<44} "
          f"{'seconds':>8}", flush=True)
    failed = 0
    for p in chosen:
        cap = torch_capability({**os.environ, **p.env})
        files = [f for f in args.files if uses_torch(f)] if p.torch_only else args.files
        result, seconds = run(p, files, extra, args.logs)
        failed += "failed" in result or "error" in result or "no summary" in result
        print(f"{p.name:<24} {cap:<14} {len(files):>5} {result:<44} {seconds:>8.0f}",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
