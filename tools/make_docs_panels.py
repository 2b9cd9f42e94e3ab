"""Regenerate the README's panels (docs/*.png): EfficientNet-Lite0 (real ImageNet weights) on
scikit-image's bundled photos, all three methods, m = 50.

    python tools/export_efficientnet_lite0.py --out models/efficientnet_lite0.onnx
    python tools/make_docs_panels.py [--model models/efficientnet_lite0.onnx] [--force]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "coffee", "astronaut")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "efficientnet_lite0.onnx")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    from skimage import data

    import ort_cam
    from ort_cam.render import save_panel

    ex = ort_cam.Explainer(args.model)
    args.out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in PHOTOS:
            target = args.out / f"effnet_lite0_{name}.png"
            if target.exists() and not args.force:
                raise SystemExit(f"{target} exists; pass --force")
            photo = Path(tmp) / f"{name}.png"
            Image.fromarray(getattr(data, name)()).save(photo)
            r = ex.explain(photo, steps=50)
            save_panel(r, target, title=f"{name}.png (scikit-image) · EfficientNet-Lite0 · "
                                        f"layer {r.layer} · m = {r.steps}")
            print(f"{target}: {r.label} ({r.target}) p={r.score:.4f}, "
                  f"RSI gap {r.completeness_gap:.3f}")


if __name__ == "__main__":
    main()
