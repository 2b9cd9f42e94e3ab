"""A segment audit with real weights: PaddleOCR's PP-OCRv4 text detector (the one-channel
probability map [N, 1, H, W] that the rapidocr-onnxruntime wheel bundles) over words written
on scikit-image's photographs, each word's box a COCO polygon of the category "text".

    pip install --no-deps rapidocr-onnxruntime==1.4.4   # its models are all this needs
    python tools/audit_text_masks.py --out /tmp/text-audit --images 24 --steps 16

It writes DIR/data (the images, coco.json, label_map.json) and DIR/det.onnx, runs
``ort-cam audit DIR/det.onnx DIR/data/coco.json --target-kind segment ...`` into DIR/audit
(the target: Σ p over the image's text mask, p the map's probabilities) and prints the
summary's energy inside the mask, the mask's share of the image (the energy a uniform map
would have), and the deletion and insertion AUCs of the target per method. Nothing third-party
is written into the repository: the photographs come from scikit-image's package data, the
model from the installed wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: PP-OCR's preprocessing (rapidocr's config.yaml): BGR, x / 255, mean 0.5, std 0.5
OCR_PRE = ["--resize", "stretch", "--scale", "0.00392156862745098", "--mean", "0.5",
           "--std", "0.5", "--channels", "BGR"]
LAYER = "p2o.Concat.1"  # the FPN's fused features (as tools/make_target_pictures.py)
H, W = 192, 384
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "camera", "coins", "immunohistochemistry",
          "retina", "hubble_deep_field")
WORDS = ("ONNX", "audit", "Grad-CAM", "mask", "energy", "runtime", "target", "layer", "map",
         "pixel", "score", "sample", "path", "model")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def det_model(out: Path) -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps rapidocr-onnxruntime==1.4.4 (its bundled models)")
    src = Path(spec.submodule_search_locations[0]) / "models" / "ch_PP-OCRv4_det_infer.onnx"
    shutil.copyfile(src, out / "det.onnx")
    return out / "det.onnx"


def background(i: int, rng: np.random.Generator) -> Image.Image:
    """A W x H crop of one of scikit-image's photographs, at a random place and scale."""
    from skimage import data

    photo = Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB")
    s = max(W / photo.width, H / photo.height) * rng.uniform(1.0, 1.6)
    photo = photo.resize((max(W, round(photo.width * s)), max(H, round(photo.height * s))))
    x0 = int(rng.integers(0, photo.width - W + 1))
    y0 = int(rng.integers(0, photo.height - H + 1))
    return photo.crop((x0, y0, x0 + W, y0 + H))


def write_words(img: Image.Image, rng: np.random.Generator) -> list[list[float]]:
    """Two or three words in white with a black outline, not overlapping; their boxes."""
    draw = ImageDraw.Draw(img)
    boxes: list[list[float]] = []
    for _ in range(100):
        if len(boxes) == int(rng.integers(2, 4)) or len(boxes) == 3:
            break
        font = ImageFont.truetype(FONT, int(rng.integers(18, 34)))
        word = str(rng.choice(WORDS))
        x, y = int(rng.integers(4, W - 120)), int(rng.integers(4, H - 40))
        box = [float(v) for v in draw.textbbox((x, y), word, font=font, stroke_width=2)]
        if box[2] > W - 2 or box[3] > H - 2 or any(
                box[0] < b[2] + 4 and b[0] < box[2] + 4 and box[1] < b[3] + 4 and
                b[1] < box[3] + 4 for b in boxes):
            continue
        draw.text((x, y), word, font=font, fill="white", stroke_width=2, stroke_fill="black")
        boxes.append(box)
    return boxes


def dataset(out: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img = background(i, rng)
        boxes = write_words(img, rng)
        img.save(out / f"{i:03d}.png")
        images.append({"id": i, "file_name": f"{i:03d}.png", "width": W, "height": H})
        for x0, y0, x1, y1 in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    (out / "coco.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "text"}]}))
    (out / "label_map.json").write_text('{"text": 0}\n')
    return out / "coco.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="gradcam,igcam,rsi")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = det_model(args.out)
    coco = dataset(args.out / "data", args.images, args.seed)
    cmd = ["ort-cam", "audit", str(model), str(coco), "--target-kind", "segment",
           "--layer", LAYER, "--size", f"{H}x{W}", *OCR_PRE, "--label-map",
           str(args.out / "data" / "label_map.json"), "--steps", str(args.steps),
           "--methods", args.methods, "--out", str(args.out / "audit"), "--force"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    summary = json.loads((args.out / "audit" / "summary.json").read_text())
    recs = [json.loads(line) for line in (args.out / "audit" / "results.jsonl").open()]
    ok = [r for r in recs if r["status"] == "ok"]
    share = np.array([r["region_fraction"] for r in ok])
    print(f"{len(ok)} of {len(recs)} images audited; the text mask covers {share.mean():.3f} "
          f"of the input on average ({share.min():.3f}..{share.max():.3f})")
    for method, ms in summary["splits"]["all"]["metrics"].items():
        e, d, i = ms["energy"], ms["deletion_auc"], ms["insertion_auc"]
        print(f"{method:8s} energy in mask {e['mean']:.3f} [{e['ci95'][0]:.3f}, "
              f"{e['ci95'][1]:.3f}]  deletion AUC {d['mean']:.3g}  insertion AUC "
              f"{i['mean']:.3g}  (y at x: mean {np.mean([r['y'] for r in ok]):.4g})")


if __name__ == "__main__":
    main()
