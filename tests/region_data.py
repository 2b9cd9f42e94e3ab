"""The segment and embedding audits' test data (tests/test_audit_regions.py,
tests/test_audit_ray.py): the small segmenter of tests/target_models.py, three 16x16 random
images with COCO masks (polygons and RLE), and the same masks as VOC segmentation PNGs; its
embedding model, two random images with COCO boxes and a concept vector per label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import target_models as tm
from PIL import Image

#: Pixels to the models' standard-normal inputs: x = p / 64 - 2.
PRE = {"preset": "raw", "scale": 1 / 64, "mean": (2.0, 2.0, 2.0)}

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
