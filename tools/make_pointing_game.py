"""Build a grid pointing game dataset (Böhle et al. 2021; Rao et al. 2022) for ``ort-cam audit``:
2×2 grids of photos of four different classes, each photo classified confidently on its own,
so that each cell is an exact box for its class.

    pip download --no-deps foolbox==3.3.4 -d /tmp/fb      # 20 ImageNet photos (MIT licence)
    python tools/make_pointing_game.py --wheel /tmp/fb/foolbox-3.3.4-py3-none-any.whl \\
        --model efficientnet_lite0.onnx --out /tmp/pg --grids 200 --seed 0
    ort-cam audit efficientnet_lite0.onnx /tmp/pg/grids.csv --label-map /tmp/pg/labels.json \\
        --targets labels --out /tmp/pg_audit

Photos: a folder (``--photos``) or the ImageNet images inside a foolbox wheel (``--wheel``,
read straight out of the zip, nothing extracted); each photo's class is the first group of
``--pattern`` on its file name (default: the trailing number of ``imagenet_07_609.jpg``), a
class index or one of the model's class names. A photo takes part when the model, with its own
preprocessing, puts its class first with probability at least ``--min-p``; of photos of the
same class the most confident one is kept, so the four classes of a grid always differ.

Grids: ``--grids`` distinct sets of four photos drawn with ``--seed`` (without replacement;
an error when fewer exist), each set in a random order, row by row. A cell is the pixel image
the model saw of the photo alone (``Preprocess.resize_image``: its resize and crop). The four
cells are tiled 2×2; for a ``crop`` model the grid is framed by a grey border so that the
model's centre crop sees exactly the grid, no more and no less (``stretch`` and ``letterbox``
see all of it). So, in the model's input, each cell is a quarter of the view.

Writes ``--out``: ``images/grid_NNNN.png``; ``grids.csv`` (``image,label,x0,y0,x1,y1,grid``:
one row per cell, its class name as label, ``grid`` = ``2x2``, which tells ``ort-cam audit``
to score the pointing game); ``labels.json`` (label -> class index, for ``--label-map``: class
names repeat in ImageNet); ``photos.csv`` (every photo, its class, the model's top-1 and
probability, and whether it was used). The photos are third-party: keep them out of git.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import zipfile
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

GREY = 128
CELLS = (2, 2)


def read_photos(folder: Path | None, wheel: Path | None) -> dict[str, Image.Image]:
    """name -> RGB photo, from a folder or the ``foolbox/data/imagenet_*`` files of a wheel."""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as z:
            names = sorted(n for n in z.namelist()
                           if re.match(r"foolbox/data/imagenet_.*\.(jpg|png)$", n))
            return {Path(n).name: Image.open(io.BytesIO(z.read(n))).convert("RGB")
                    for n in names}
    assert folder is not None
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return {p.name: Image.open(p).convert("RGB") for p in files}


def class_of(name: str, pattern: str, labels: list[str] | None, n: int) -> int:
    m = re.search(pattern, name)
    if not m:
        raise SystemExit(f"{name}: --pattern {pattern!r} finds no class in the name")
    text = m.group(1)
    if text.isdigit() and int(text) < n:
        return int(text)
    lowered = [lab.lower() for lab in labels or []]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise SystemExit(f"{name}: {text!r} is neither a class index below {n} nor a class name")


def classify(ex, photos: dict[str, Image.Image], pattern: str) -> list[dict]:
    """Each photo's class, the model's top-1 and its probability (the model's preprocessing)."""
    from ort_cam.audit.image import probabilities

    rows = []
    for name, im in photos.items():
        c = class_of(name, pattern, ex.labels, ex.n_classes)
        p = probabilities(ex, ex.scores_at(ex.preprocess(im)))[0]
        rows.append({"photo": name, "class": c, "top1": int(np.argmax(p)),
                     "p": float(p[c]), "used": False})
    return rows


def confident(rows: list[dict], min_p: float) -> list[dict]:
    """Photos classified as their class with p >= ``min_p``, the most confident per class."""
    best: dict[int, dict] = {}
    for r in rows:
        if r["top1"] == r["class"] and r["p"] >= min_p:
            if r["class"] not in best or r["p"] > best[r["class"]]["p"]:
                best[r["class"]] = r
    for r in best.values():
        r["used"] = True
    return sorted(best.values(), key=lambda r: r["photo"])


def draw(n_photos: int, grids: int, seed: int) -> list[tuple[int, ...]]:
    """``grids`` distinct 4-sets of photo indices, each in a random cell order."""
    sets = list(combinations(range(n_photos), CELLS[0] * CELLS[1]))
    if grids > len(sets):
        raise SystemExit(f"only {len(sets)} sets of 4 of the {n_photos} confident photos "
                         f"exist; ask for at most that many --grids (or lower --min-p)")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(sets), size=grids, replace=False)
    return [tuple(int(i) for i in rng.permutation(sets[k])) for k in picked]


def layout(pre, cell: int) -> tuple[int, int]:
    """(canvas side, border) so the model's view of the canvas is exactly the 2×2 grid."""
    grid = 2 * cell
    if pre.resize != "crop":
        return grid, 0
    side = int(round(grid / pre.crop_ratio))
    side += (side - grid) % 2  # an even border on both sides
    return side, (side - grid) // 2


def tile(cells: list[np.ndarray], side: int, border: int) -> tuple[Image.Image, list]:
    """The canvas and each cell's box (x0, y0, x1, y1), row by row."""
    h, w = cells[0].shape[:2]
    canvas = np.full((side, side, 3), GREY, np.uint8)
    boxes = []
    for k, a in enumerate(cells):
        r, c = divmod(k, CELLS[1])
        y0, x0 = border + r * h, border + c * w
        canvas[y0:y0 + h, x0:x0 + w] = a
        boxes.append((x0, y0, x0 + w, y0 + h))
    return Image.fromarray(canvas), boxes


def label_names(ex, classes: list[int]) -> dict[int, str]:
    """A distinct label per class: its name, with the index where names repeat."""
    names = {c: (ex.labels[c] if ex.labels else f"class {c}") for c in classes}
    counts = {n: sum(1 for x in (ex.labels or []) if x == n) for n in names.values()}
    return {c: (n if counts.get(n, 1) <= 1 else f"{n} ({c})") for c, n in names.items()}


def write(out: Path, ex, photos: dict[str, Image.Image], rows: list[dict], used: list[dict],
          sets: list[tuple[int, ...]]) -> None:
    pre = ex.preprocess
    cells = [pre.resize_image(photos[r["photo"]]) for r in used]
    side, border = layout(pre, cells[0].shape[1])
    names = label_names(ex, [r["class"] for r in used])
    (out / "images").mkdir(parents=True)
    lines = [["image", "label", "x0", "y0", "x1", "y1", "grid"]]
    for g, order in enumerate(sets):
        image, boxes = tile([cells[i] for i in order], side, border)
        rel = f"images/grid_{g:04d}.png"
        image.save(out / rel)
        lines += [[rel, names[used[i]["class"]], *box, f"{CELLS[0]}x{CELLS[1]}"]
                  for i, box in zip(order, boxes)]
    with open(out / "grids.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(lines)
    (out / "labels.json").write_text(json.dumps(
        {names[r["class"]]: r["class"] for r in used}, indent=1) + "\n")
    with open(out / "photos.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["photo", "class", "top1", "p", "used"])
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--photos", type=Path, help="folder of labelled photos")
    src.add_argument("--wheel", type=Path, help="a foolbox wheel: its ImageNet photos")
    ap.add_argument("--model", type=Path, required=True, help="the ONNX classifier")
    ap.add_argument("--out", type=Path, required=True, help="folder to write (must be new)")
    ap.add_argument("--pattern", default=r"_(\d+)\.[A-Za-z]+$",
                    help="regex on file names; group 1 is the class (index or name)")
    ap.add_argument("--min-p", type=float, default=0.75,
                    help="least probability of a photo's class on its own (default 0.75)")
    ap.add_argument("--grids", type=int, default=200, help="number of grids (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out} exists and is not empty")
    from ort_cam import Explainer

    ex = Explainer(args.model, quiet=True)
    photos = read_photos(args.photos, args.wheel)
    rows = classify(ex, photos, args.pattern)
    used = confident(rows, args.min_p)
    if len(used) < 4:
        raise SystemExit(f"only {len(used)} classes have a photo classified with p >= "
                         f"{args.min_p}; a grid needs 4")
    sets = draw(len(used), args.grids, args.seed)
    write(args.out, ex, photos, rows, used, sets)
    print(f"{len(photos)} photos, {len(used)} confident classes (p >= {args.min_p}); wrote "
          f"{len(sets)} grids and {args.out / 'grids.csv'} (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
