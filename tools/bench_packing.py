"""Throughput over many images: the paths of several images packed into shared session runs
(``Explainer.explain_many``/``explain_iter``, what `ort-cam explain DIR` and `ort-cam demo`
use) against one image at a time (``explain`` in a loop), on the bundled demo model.

32 images (the 8 demo samples, each also mirrored, flipped and rotated), m = 50, the three
methods, the same threads; interleaved medians. The maps are checked to be bit-identical.

    python tools/bench_packing.py [--repeats 3] [--threads 2] [--steps 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import interleaved_medians  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


def images() -> list[np.ndarray]:
    """32 distinct images: each demo sample as is, mirrored, flipped and turned 180°."""
    out = []
    for path in sorted((DEMO / "samples").glob("*.png")):
        a = np.asarray(Image.open(path).convert("RGB"))
        out += [a, a[:, ::-1], a[::-1], a[::-1, ::-1]]
    return [np.ascontiguousarray(a) for a in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    import ort_cam

    ex = ort_cam.Explainer(DEMO / "demo_cnn.onnx", threads=args.threads, quiet=True,
                           providers="cpu")
    imgs = images()
    runs: dict[str, int] = {"n": 0}
    run = ex.runner.run

    def counted(feeds):
        runs["n"] += 1
        return run(feeds)

    setattr(ex.runner, "run", counted)  # noqa: B010 (count the session runs)
    packed = ex.explain_many(imgs, steps=args.steps)
    n_packed, runs["n"] = runs["n"], 0
    single = [ex.explain(a, steps=args.steps) for a in imgs]
    n_single = runs["n"]
    same = all(np.array_equal(p[k].raw, s[k].raw) for p, s in zip(packed, single)
               for k in p.methods)
    t = interleaved_medians({
        "packed (explain_many)": lambda: ex.explain_many(imgs, steps=args.steps),
        "one at a time (explain)": lambda: [ex.explain(a, steps=args.steps) for a in imgs],
    }, args.repeats)
    print(f"{len(imgs)} demo images, m={args.steps}, three methods, {args.threads} threads, "
          f"up to {ex.run_capacity()} inputs per run, median of {args.repeats} (interleaved)")
    for name, sec in t.items():
        print(f"  {name:26s} {sec:6.2f} s  {len(imgs) / sec:6.1f} images/s")
    print(f"  session runs: packed {n_packed}, one at a time {n_single}; "
          f"maps bit-identical: {same}")
    ratio = t["packed (explain_many)"] / t["one at a time (explain)"]
    print(f"  packed / one at a time = {ratio:.2f}")


if __name__ == "__main__":
    main()
