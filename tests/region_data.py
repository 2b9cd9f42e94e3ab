"""The segment, detection and embedding audits' test data (tests/test_audit_regions.py,
tests/test_audit_ray.py): the small segmenter of tests/target_models.py, three 16x16 random
images with COCO masks (polygons and RLE), and the same masks as VOC segmentation PNGs; its
detector read with objectness, two 32x32 images with the boxes it predicts; its embedding
model, two random images with COCO boxes and a concept vector per label."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import target_models as tm
from PIL import Image

#: Pixels to the models' standard-normal inputs: x = p / 64 - 2.
PRE = {"preset": "raw", "scale": 1 / 64, "mean": (2.0, 2.0, 2.0)}


def model_input(pixels: np.ndarray) -> np.ndarray:
    """What PRE feeds: (p · 1/64 − 2) in float64, then float32, NCHW."""
    p = np.asarray(pixels, np.float64)
    return np.ascontiguousarray((p / 64 - 2.0).astype(np.float32).transpose(0, 3, 1, 2))

def palette_png(path: Path, values: np.ndarray) -> None:
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def random_images(d: Path, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` random 16x16 RGB images drawn from ``rng``, saved as d/0.png, d/1.png, ...;
    their COCO entries."""
    images = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 16, "height": 16})
    return images


def seg_data(d: Path) -> dict:
    """Three 16x16 random images: a polygon cat, an RLE dog (a 4-pixel-wide column band),
    a polygon cat; the segmenter exported."""
    d.mkdir(parents=True, exist_ok=True)
    tm.build_and_export("segmenter", d / "seg.onnx")
    images = random_images(d, 3, np.random.default_rng(0))
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 2, 6, 6],
             "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 16],
             "segmentation": {"size": [16, 16], "counts": [0, 64, 192]}},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [4, 4, 8, 8],
             "segmentation": [[4, 4, 12, 4, 12, 12, 4, 12]]}]
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (d / "coco.json").write_text(json.dumps(doc))
    (d / "map.json").write_text(json.dumps({"cat": 1, "dog": 2}))
    masks = {0: np.zeros((16, 16), bool), 1: np.zeros((16, 16), bool),
             2: np.zeros((16, 16), bool)}
    masks[0][2:8, 2:8] = True
    masks[1][:, :4] = True  # 64 pixels, column-major: the first 4 columns
    masks[2][4:12, 4:12] = True
    return {"dir": d, "model": d / "seg.onnx", "coco": d / "coco.json", "map": d / "map.json",
            "masks": masks, "classes": {0: 1, 1: 2, 2: 1}}


def voc_folder(data: dict, root: Path) -> Path:
    """``seg_data``'s images and masks as a VOC segmentation folder (VOC values 8 cat,
    12 dog) with ``map.json``."""
    (root / "JPEGImages").mkdir(parents=True)
    for i in range(3):
        Image.open(data["dir"] / f"{i}.png").save(root / "JPEGImages" / f"{i}.png")
        values = np.where(data["masks"][i], 12 if data["classes"][i] == 2 else 8, 0)
        palette_png(root / "SegmentationClass" / f"{i}.png", values)
    (root / "map.json").write_text(json.dumps({"cat": 1, "dog": 2}))
    return root


def emb_data(d: Path) -> dict:
    """Two 16x16 random images, a cat box and two dog boxes; a random concept per label; the
    320-wide embedding model exported."""
    d.mkdir(parents=True, exist_ok=True)
    tm.build_and_export("embedding", d / "emb.onnx")
    rng = np.random.default_rng(5)
    images = random_images(d, 2, rng)
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 3, 6, 3]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4]},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [10, 10, 6, 6]}]
    (d / "coco.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    concepts = {"cat": rng.standard_normal(tm.EMBED_DIM), "dog": rng.standard_normal(tm.EMBED_DIM)}
    np.savez(d / "concepts.npz", **concepts)
    regions = {0: np.zeros((16, 16), bool), 1: np.zeros((16, 16), bool)}
    regions[0][3:6, 2:8] = True
    regions[1][0:4, 0:4] = regions[1][10:16, 10:16] = True
    return {"dir": d, "model": d / "emb.onnx", "coco": d / "coco.json",
            "concepts": d / "concepts.npz", "vectors": concepts, "regions": regions,
            "labels": {0: "cat", 1: "dog"}}


def detector_images(d: Path, n: int, seed: int, score: Callable[[np.ndarray], np.ndarray]
                    ) -> tuple[list[dict], list[tuple[int, np.ndarray]]]:
    """``n`` random 32x32 images saved in ``d`` beside the exported detector, their COCO
    entries, and per image the detector's raw output [4+C, A] (plain onnxruntime) with the
    anchor that ``score(output)`` ranks highest among those inside the image and at least 4x4
    (whole pixels change its IoU little)."""
    d.mkdir(parents=True, exist_ok=True)
    tm.build_and_export("detector", d / "det.onnx")
    sess = ort.InferenceSession(str(d / "det.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    images, found = [], []
    for i in range(n):
        px = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(px).save(d / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 32, "height": 32})
        out = sess.run(None, {"x": model_input(px[None])})[0][0]
        cx, cy, w, h = out[:4]
        inside = (cx - w / 2 >= 0) & (cy - h / 2 >= 0) & (cx + w / 2 <= 32) & (
            cy + h / 2 <= 32) & (w >= 4) & (h >= 4)
        found.append((int(np.argmax(np.where(inside, score(out), -1.0))), out))
    return images, found


def obj_data(d: Path) -> dict:
    """Two 32x32 random images for the detector read with --objectness (row 4 the
    objectness, two classes), each annotated with a whole-pixel box of the anchor scoring
    highest under that reading among those inside the image and at least 4x4 (plain
    onnxruntime), labelled with its best class: a box either reading matches."""
    # objectness times the best of two classes
    images, found = detector_images(d, 2, 11, lambda out: out[4] * out[5:7].max(0))
    anns, boxes = [], {}
    for i, (a, out) in enumerate(found):
        cx, cy, w, h = out[:4]
        c = int(np.argmax(out[5:7, a]))
        x0, y0 = round(float(cx[a] - w[a] / 2)), round(float(cy[a] - h[a] / 2))
        x1, y1 = round(float(cx[a] + w[a] / 2)), round(float(cy[a] + h[a] / 2))
        anns.append({"id": i, "image_id": i, "category_id": c,
                     "bbox": [x0, y0, x1 - x0, y1 - y0]})
        boxes[i] = (c, (x0, y0, x1, y1))
    (d / "coco.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}))
    (d / "map.json").write_text(json.dumps({"a": 0, "b": 1}))
    return {"dir": d, "model": d / "det.onnx", "coco": d / "coco.json", "map": d / "map.json",
            "boxes": boxes}
