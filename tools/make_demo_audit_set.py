"""Write a dataset for ``ort-cam audit`` from the demo model's scene generator: N generated
images whose object boxes are exact, as PNGs plus a CSV of boxes.

    python tools/make_demo_audit_set.py --out /tmp/demo_audit_set -n 200 --seed 7001
    ort-cam audit models/demo/demo_cnn.onnx /tmp/demo_audit_set/boxes.csv --out /tmp/demo_audit

Each image is ``make_sample(rng, size)`` of tools/train_demo_model.py (a shape of random colour,
size, position and rotation on a cluttered background); classes cycle through the six shapes
so they are balanced. The CSV is ``image,label,x0,y0,x1,y1`` with the class name as label and
the pixel-exact box (x1/y1 exclusive); the demo model stores its class names, so no label map
is needed. Use a seed the training script does not use, so the images are held out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import CLASSES, SIZE, make_sample  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write (must be new)")
    ap.add_argument("-n", type=int, default=200, help="number of images (default 200)")
    ap.add_argument("--seed", type=int, default=7001, help="generator seed (default 7001)")
    ap.add_argument("--size", type=int, default=SIZE, help=f"image side (default {SIZE})")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out} exists and is not empty")
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    rows = ["image,label,x0,y0,x1,y1"]
    for i in range(args.n):
        img, cls, box = make_sample(rng, args.size, cls=i % len(CLASSES))
        name = f"images/{i:04d}_{CLASSES[cls]}.png"
        Image.fromarray(img).save(args.out / name)
        rows.append(",".join([name, CLASSES[cls], *map(str, box)]))
    (args.out / "boxes.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {args.n} images and {args.out / 'boxes.csv'} (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
