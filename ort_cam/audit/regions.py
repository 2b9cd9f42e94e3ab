"""Segment and detection audits: each image's target chosen at x from its annotation.

- **segment** (a segmenter's map, ``targets.segment``): the annotated label's mask (the union
  of the image's objects of that label: COCO polygons or RLE, VOC PNGs), moved onto the
  output's grid, is the target's mask M; the class c is the label's (of a label mapped to
  several classes, the one whose target is largest at x). y = Σ_hw M · s_c.
- **detection** (a YOLO-style head, ``targets.detection``): the label's largest annotated
  box, moved onto the input's pixels, picks the anchor whose predicted box overlaps it by IoU
  > 0.5 and scores class c highest; y = that anchor's class-c score. An image where no
  anchor matches is skipped with the reason.
- **embedding** (an image encoder, ``targets.embedding``): the label's concept vector (from
  ``--concepts FILE.npz``, one vector per label) is the target's concept; y = cos(out, v).
  The region is the union of the label's boxes.

The region the map is measured against (energy, Bbox, IoU/IoB/IoR) is the mask, or the box,
on the input's grid. Which label: the one ``--targets labels`` names, else the mapped label
with the largest area (mask pixels, or box).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OrtCamError
from .datasets import Dataset, Obj, Sample, classes_of
from .masks import CocoMask, to_grid
from .metrics import box_mask

if TYPE_CHECKING:  # annotations only: audit.run loads this module without the explainer
    from PIL import Image

    from ..explainer import Explainer
    from ..targets import Target

#: The target kinds an audit measures besides class and binary.
REGION_KINDS = ("segment", "detection", "embedding")
#: What their audits re-score (audit.json's ``probabilities``).
REGION_SCALAR = "the target y = sum(W * S), W chosen at x from the annotation"


@dataclass
class RegionTarget:
    """One image's target: the call's ``spec`` for ``Explainer.explain`` (class, and mask
    or box), the target it gives at x (``chosen``: W and y), the region on the input grid,
    the label explained and what the record says of it."""

    spec: dict
    chosen: Target
    region: np.ndarray
    label: str
    record: dict


def read_concepts(path: Path) -> dict[str, np.ndarray]:
    """An embedding audit's concepts: a .npz of one vector per label (its array's name),
    finite; labels match case-insensitively."""
    try:
        with np.load(path, allow_pickle=False) as doc:
            found = {name: np.asarray(doc[name], np.float64).reshape(-1) for name in doc.files}
    except (OSError, ValueError) as exc:
        raise OrtCamError(f"cannot read concepts {path}: {exc}; give a .npz of one vector per "
                          "label (np.savez(path, dog=v, ...))") from None
    if not found:
        raise OrtCamError(f"{path} holds no concept vector")
    for name, v in found.items():
        if not np.isfinite(v).all() or not v.any():
            raise OrtCamError(f"{path}: the concept {name!r} is all zeros or not finite")
    return {name.strip().lower(): v for name, v in found.items()}


def concept_label_map(concepts: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """The labels that have a concept, each to its index in ``concepts``."""
    return {name: [i] for i, name in enumerate(concepts)}


def check_concepts(concepts: dict[str, np.ndarray] | None, dim: int) -> None:
    """An embedding audit needs concepts of the embedding's length."""
    if not concepts:
        raise OrtCamError("an embedding audit needs a concept per label: --concepts FILE.npz "
                          "(np.savez(FILE, dog=vector, ...))")
    for name, v in concepts.items():
        if v.size != dim:
            raise OrtCamError(f"the concept {name!r} has {v.size} values; the embedding has "
                              f"{dim}: give vectors of that length")


def check_dataset(dataset: Dataset, kind: str, label_map: dict[str, list[int]],
                  labels: list[str] | None) -> None:
    """Refuse, before any work, a dataset a ``kind`` audit cannot measure: no label that maps
    to a class of the model; for segment, a mapped object without a mask or with an empty
    one."""
    found = {o.label for s in dataset.samples for o in s.objects}
    if found and not any(label_map.get(label.strip().lower()) for label in found):
        names = ", ".join(sorted(found)[:8]) + (", ..." if len(found) > 8 else "")
        model = f" (its labels: {', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})" \
            if labels else ""
        raise OrtCamError(f"none of the dataset's labels ({names}) is a class of the model"
                          f"{model}; pass --label-map {{label: class index}}")
    if kind != "segment":
        return
    for s in dataset.samples:
        for o in s.objects:
            if not classes_of(o, label_map):
                continue
            if o.mask is None:
                raise OrtCamError(f"{s.key}: its {o.label} has no mask; a segment audit needs "
                                  "masks (COCO segmentation, VOC segmentation PNGs)")
            if isinstance(o.mask, CocoMask) and o.mask.area() == 0:  # a PNG's are not empty
                raise OrtCamError(f"{s.key}: the mask of its {o.label} is empty; mark its "
                                  "pixels or remove the annotation")


def region_target(ex: Explainer, sample: Sample, image: Image.Image, mapped: list[Obj],
                  label_map: dict[str, list[int]],
                  concepts: dict[str, np.ndarray] | None = None
                  ) -> RegionTarget | tuple[str, str]:
    """The target of ``sample`` for the explainer's kind, or (skip kind, reason);
    ``concepts``: an embedding audit's vectors by label."""
    assert ex.preprocess is not None  # audits read images
    label = sample.target or _largest_label(mapped, ex.target_kind)
    objs = [o for o in mapped if o.label.strip().lower() == label.strip().lower()]
    classes = classes_of(objs[0], label_map)
    x = ex.preprocess(image)
    if ex.target_kind == "segment":
        return _segment(ex, image, objs, classes, x, label)
    if ex.target_kind == "embedding":
        assert concepts is not None  # the audit checked them first
        return _embedding(ex, image, objs, concepts[label.strip().lower()], x, label)
    return _detection(ex, image, objs, classes, x, label)


def _largest_label(mapped: list[Obj], kind: str) -> str:
    """The mapped label with the most area: mask pixels (segment), else its largest box."""
    area: dict[str, float] = {}
    for o in mapped:
        key = o.label.strip().lower()
        x0, y0, x1, y1 = o.box
        a = float(o.mask.area()) if kind == "segment" and o.mask is not None else \
            (x1 - x0) * (y1 - y0)
        area[key] = area.get(key, 0.0) + a if kind == "segment" else max(area.get(key, 0), a)
    best = max(area, key=lambda k: area[k])
    return next(o.label for o in mapped if o.label.strip().lower() == best)


def _segment(ex: Explainer, image: Image.Image, objs: list[Obj], classes: list[int],
             x: np.ndarray, label: str) -> RegionTarget | tuple[str, str]:
    from ..targets.segment import grid

    assert ex.preprocess is not None
    masks = [o.mask.decode() for o in objs if o.mask is not None]
    size = image.size
    if any(m.shape != size[::-1] for m in masks):
        m = next(m for m in masks if m.shape != size[::-1])
        return "mask size", (f"the {label} mask is {m.shape[1]}x{m.shape[0]}; the image is "
                             f"{size[0]}x{size[1]}")
    union = np.logical_or.reduce(masks)
    out_mask = to_grid(union, ex.preprocess, grid(ex.output_info))
    region = to_grid(union, ex.preprocess, ex.preprocess.size)
    if not out_mask.any() or not region.any():
        return "mask outside the view", (f"the {label} mask lies outside the model's input "
                                         "(or its output grid) after the resize/crop")
    specs = [{"target": c, "mask": out_mask} for c in classes]
    chosen = [ex.target_at(x, spec) for spec in specs]
    best = int(np.argmax([t.value for t in chosen]))
    return RegionTarget(specs[best], chosen[best], region, label,
                        {"mask_pixels": int(union.sum()), "target_objects": len(objs)})


def _embedding(ex: Explainer, image: Image.Image, objs: list[Obj], concept: np.ndarray,
               x: np.ndarray, label: str) -> RegionTarget | tuple[str, str]:
    assert ex.preprocess is not None
    boxes = [ex.preprocess.map_box(o.box, image.size) for o in objs]
    region = np.logical_or.reduce([box_mask(ex.preprocess.size, b) for b in boxes])
    if not region.any():
        return "box outside the view", (f"the {label} boxes lie outside the model's input "
                                        "after the resize/crop")
    spec = {"concept": concept}
    return RegionTarget(spec, ex.target_at(x, spec), region, label,
                        {"target_boxes": [list(b) for b in boxes]})


def _detection(ex: Explainer, image: Image.Image, objs: list[Obj], classes: list[int],
               x: np.ndarray, label: str) -> RegionTarget | tuple[str, str]:
    assert ex.preprocess is not None
    obj = max(objs, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
    box = ex.preprocess.map_box(obj.box, image.size)
    if box[2] <= box[0] or box[3] <= box[1]:
        return "box outside the view", (f"the {label} box lies outside the model's input "
                                        "after the resize/crop")
    found: list[tuple[dict, Target]] = []
    reason = ""
    for c in classes:
        spec = {"target": c, "box": tuple(float(v) for v in box)}
        try:
            found.append((spec, ex.target_at(x, spec)))
        except OrtCamError as exc:  # no anchor's box overlaps the annotated one
            reason = str(exc)
    if not found:
        return "no matching detection", reason
    spec, chosen = max(found, key=lambda f: f[1].value)
    return RegionTarget(spec, chosen, box_mask(ex.preprocess.size, box), label,
                        {"box": list(box)})
