"""Regenerate the README's panels (docs/*.png): EfficientNet-Lite0 (real ImageNet weights) on
scikit-image's bundled photos, the three default methods, m = 50; and one grid of every
registered method on the coffee photo (docs/effnet_lite0_coffee_all_methods.png).

    python tools/export_efficientnet_lite0.py --out models/efficientnet_lite0.onnx
    python tools/make_docs_panels.py [--model models/efficientnet_lite0.onnx] [--force]
        [--only panels|grid]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "coffee", "astronaut")
GRID_PHOTO, GRID_COLUMNS = "coffee", 6


def save_grid(r, path: Path, title: str, columns: int = GRID_COLUMNS) -> Path:
    """The input and every method's overlay in a grid of ``columns``, each titled with the
    method's name and, where it has one, its completeness gap."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ort_cam.methods import METHODS
    from ort_cam.render import class_text, extra_text, overlay

    names = list(r.methods)
    rows = -(-(1 + len(names)) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows + 0.4), dpi=100)
    axes = fig.subplots(rows, columns).ravel()
    axes[0].imshow(r.pixels)
    axes[0].set_title(f"input\n{class_text(r)}", fontsize=8)
    for ax, name in zip(axes[1:], names):
        res = r.methods[name]
        ax.imshow(overlay(r.pixels, res.map))
        notes = [extra_text(k, v) for k, v in res.extras.items()] + (
            ["dark map"] if res.dark else [])
        ax.set_title("\n".join([f"{METHODS[name].title} ({name})", ", ".join(notes)]),
                     fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.text(0.5, 0.005, title, fontsize=8, ha="center", va="bottom", color="dimgray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "efficientnet_lite0.onnx")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--only", choices=("panels", "grid"), default=None)
    args = ap.parse_args()
    from skimage import data

    import ort_cam
    from ort_cam.render import save_panel

    ex = ort_cam.Explainer(args.model)
    args.out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in PHOTOS if args.only != "grid" else ():
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
        if args.only != "panels":
            _grid(ex, Path(tmp), args.out, args.force)


def _grid(ex, tmp: Path, out: Path, force: bool) -> None:
    """Every registered method on the coffee photo, m = 50, in one grid."""
    from skimage import data

    from ort_cam.methods import METHODS

    target = out / f"effnet_lite0_{GRID_PHOTO}_all_methods.png"
    if target.exists() and not force:
        raise SystemExit(f"{target} exists; pass --force")
    photo = tmp / f"{GRID_PHOTO}.png"
    Image.fromarray(getattr(data, GRID_PHOTO)()).save(photo)
    r = ex.explain(photo, steps=50, methods=list(METHODS))
    save_grid(r, target, f"{GRID_PHOTO}.png (scikit-image) · EfficientNet-Lite0 · layer "
                         f"{r.layer} · m = {r.steps} · every method ort_cam has")
    print(f"{target}: {r.label} ({r.target}) p={r.score:.4f}, {len(r.methods)} methods, "
          f"{r.timings['total']:.1f} s")


if __name__ == "__main__":
    main()
