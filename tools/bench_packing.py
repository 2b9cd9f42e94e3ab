"""Throughput over many images: the paths of several images packed into shared session runs
(``Explainer.explain_many``/``explain_iter``, what `ort-cam explain DIR` and `ort-cam demo`
use) against one image at a time (``explain`` in a loop), on the bundled demo model.

32 images (the 8 demo samples, each also mirrored, flipped and rotated), m = 50, the three
methods, the same threads; interleaved medians. The maps are checked to be bit-identical.

The audit row: ``audit_dataset`` over the same 32 images (their boxes moved with them), packed
(the default) against ``pack=False``, side by side; the records are checked to be equal (but
the timing field). Its metrics re-score 2k + 4 images per method and image (k =
--deletion-steps), which packing does not change.

    python tools/bench_packing.py [--repeats 3] [--threads 2] [--steps 50] [--deletion-steps 16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import interleaved_medians, scratch_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


def images() -> list[np.ndarray]:
    """32 distinct images: each demo sample as is, mirrored, flipped and turned 180°."""
    out = []
    for path in sorted((DEMO / "samples").glob("*.png")):
        a = np.asarray(Image.open(path).convert("RGB"))
        out += [a, a[:, ::-1], a[::-1], a[::-1, ::-1]]
    return [np.ascontiguousarray(a) for a in out]


#: The 32 images' flips, as (image op, box op on a W×H image); boxes are (x0, y0, x1, y1).
FLIPS = [
    (lambda a: a, lambda b, w, h: b),
    (lambda a: a[:, ::-1], lambda b, w, h: (w - b[2], b[1], w - b[0], b[3])),
    (lambda a: a[::-1], lambda b, w, h: (b[0], h - b[3], b[2], h - b[1])),
    (lambda a: a[::-1, ::-1], lambda b, w, h: (w - b[2], h - b[3], w - b[0], h - b[1])),
]


def audit_data(folder: Path) -> Path:
    """The 32 images of ``images`` as files with a boxes CSV (the boxes moved with the
    flips); returns the CSV."""
    boxes = json.loads((DEMO / "samples" / "boxes.json").read_text())
    rows = ["image,label,x0,y0,x1,y1"]
    for name, info in sorted(boxes.items()):
        a = np.asarray(Image.open(DEMO / "samples" / name).convert("RGB"))
        for i, (op, box_op) in enumerate(FLIPS):
            out = folder / f"{i}_{name}"
            Image.fromarray(np.ascontiguousarray(op(a))).save(out)
            box = box_op(info["box"], a.shape[1], a.shape[0])
            rows.append(",".join([out.name, info["label"], *map(str, box)]))
    (folder / "boxes.csv").write_text("\n".join(rows) + "\n")
    return folder / "boxes.csv"


def audit_row(ex, args: argparse.Namespace) -> None:
    """Audit throughput over the 32 images, packed against image by image."""
    from ort_cam.audit.datasets import label_map_for, open_dataset
    from ort_cam.audit.image import AuditSpec
    from ort_cam.audit.run import audit_dataset, read_results

    tmp = scratch_dir("ort_cam_bench_audit_")
    data = open_dataset(audit_data(tmp))
    spec = AuditSpec(steps=args.steps, deletion_steps=args.deletion_steps)
    lm = label_map_for(None, ex.labels, ex.n_classes)

    def audit(name: str, pack: bool) -> list[dict]:
        audit_dataset(ex, data, tmp / name, label_map=lm, spec=spec, model_sha256="bench",
                      force=True, progress=False, html_page=False, pack=pack)
        return [{k: v for k, v in r.items() if k != "seconds"}
                for r in read_results(tmp / name / "results.jsonl")]

    same = audit("packed", True) == audit("single", False)
    t = interleaved_medians({"audit, packed": lambda: audit("packed", True),
                             "audit, one at a time": lambda: audit("single", False)},
                            args.repeats)
    print(f"audit of the {len(data.samples)} images (m={args.steps}, three methods, "
          f"deletion/insertion k={args.deletion_steps}), median of {args.repeats} "
          "(interleaved)")
    for name, sec in t.items():
        print(f"  {name:26s} {sec:6.2f} s  {len(data.samples) / sec:6.1f} images/s")
    print(f"  records equal (but the timing field): {same}; packed / one at a time = "
          f"{t['audit, packed'] / t['audit, one at a time']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--deletion-steps", type=int, default=16)
    ap.add_argument("--no-audit", action="store_true", help="leave the audit row out")
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
    if not args.no_audit:
        audit_row(ex, args)


if __name__ == "__main__":
    main()
