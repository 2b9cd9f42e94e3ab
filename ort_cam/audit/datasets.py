"""Datasets for audits: images with object boxes, read from PASCAL VOC XML, COCO JSON or a CSV
file, labels mapped to class indices, and the RSI paper's filters (METHODS.md "Metrics").

Boxes are kept in the original image's pixels as edges ``(x0, y0, x1, y1)``, 0-based, x1/y1
exclusive (so a box's width is x1 − x0):

- VOC's ``xmin..xmax`` are 1-based inclusive pixel indices: ``(xmin − 1, ymin − 1, xmax, ymax)``;
- COCO's ``bbox`` is ``[x, y, w, h]`` in edges: ``(x, y, x + w, y + h)``;
- CSV rows ``image,label,x0,y0,x1,y1`` are taken as they are (our convention), one row per box;
- VOC segmentation PNGs (``read_voc_seg``): one object per class (SegmentationClass) or per
  object (SegmentationObject) present, its box the one around its pixels.

Objects may carry a mask (``audit.masks``): COCO's polygons and RLE, VOC's PNG values; the
segment audits explain and measure against them.

A malformed annotation stops the audit before any work with a one-line error naming the file
(and line or object); an image that cannot be read is skipped during the audit with its reason
recorded (see ``audit.image``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OrtCamError
from .masks import BACKGROUND, VOID, CocoMask, Mask, PngMask, mask_box, read_png
from .pointing import GRID_COLUMN, parse_grid

FORMATS = ("voc", "coco", "csv", "voc-seg")
#: The PASCAL VOC classes, by the value their pixels have in SegmentationClass PNGs.
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: Folders of VOC segmentation PNGs (labelme's labelme2voc.py writes SegmentationClassPNG).
SEG_CLASS_DIRS = ("SegmentationClass", "SegmentationClassPNG")
SEG_OBJECT_DIRS = ("SegmentationObject", "SegmentationObjectPNG")
#: Files that name a VOC segmentation's classes, one per line, line i for value i.
CLASS_NAME_FILES = ("class_names.txt", "labels.txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
CSV_COLUMNS = ("image", "label", "x0", "y0", "x1", "y1")
#: The RSI paper's dataset rules (§4.3.1), by option name.
FILTERS = ("correct", "one_box", "small_box")
SMALL_BOX = 0.5


@dataclass(frozen=True)
class Obj:
    """One annotated object: its label and box (original pixels, x1/y1 exclusive), and its
    mask where the annotation has one (``audit.masks``)."""

    label: str
    box: tuple[float, float, float, float]
    mask: Mask | None = field(default=None, compare=False, repr=False)


@dataclass
class Sample:
    """One image of a dataset. ``key`` (the image path relative to the dataset root) is what
    results are keyed on; ``size`` is (width, height) when the annotation states it."""

    key: str
    path: Path
    objects: list[Obj] = field(default_factory=list)
    size: tuple[int, int] | None = None
    #: The label to explain (``--targets labels``: one sample per label of an image, keyed
    #: ``image#label``); None explains the predicted class.
    target: str | None = None


@dataclass
class Dataset:
    root: Path
    format: str
    samples: list[Sample]
    #: (rows, columns) when the images are grids of photos, one class per cell (the grid
    #: pointing game, ``audit.pointing``); a CSV says so in its ``grid`` column.
    grid: tuple[int, int] | None = None

    def fingerprint(self, masks: bool = False) -> dict:
        """What identifies the dataset across machines: format, image count and a hash of
        every key, label and box (not the root path, which differs between machines), and
        with ``masks`` every object's mask (a COCO segmentation, a PNG's name and value); the
        grid when there is one."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(json.dumps([s.key, [[o.label, list(o.box)] + (
                [o.mask.describe() if o.mask is not None else None] if masks else [])
                for o in s.objects]]).encode())
        grid = {"grid": list(self.grid)} if self.grid else {}
        return {"format": self.format, "images": len(self.samples), "sha256": h.hexdigest(),
                **grid}


# --- readers --------------------------------------------------------------------------------
def _number(text: str | None, where: str) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OrtCamError(f"{where}: {text!r} is not a number") from None


def _check_box(box: tuple[float, float, float, float], where: str) -> None:
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise OrtCamError(f"{where}: empty box {list(box)} (needs x1 > x0 and y1 > y0)")


def read_voc(root: Path) -> Dataset:
    """PASCAL VOC: ``root/Annotations/*.xml`` (else ``root/*.xml``); images in
    ``root/JPEGImages`` (else beside the XML files), named by each file's ``<filename>``."""
    ann_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise OrtCamError(f"no VOC annotations (*.xml) in {ann_dir}")
    img_dir = root / "JPEGImages" if (root / "JPEGImages").is_dir() else ann_dir
    samples = []
    for xml in xmls:
        try:
            tree = ET.parse(xml).getroot()
        except (ET.ParseError, OSError) as exc:
            raise OrtCamError(f"cannot read VOC annotation {xml}: {exc}") from None
        name = (tree.findtext("filename") or "").strip()
        if not name:
            raise OrtCamError(f"VOC annotation {xml} has no <filename>")
        size = None
        w, h = tree.findtext("size/width"), tree.findtext("size/height")
        if w and h:
            w_, h_ = _number(w, f"{xml} <width>"), _number(h, f"{xml} <height>")
            size = (int(w_), int(h_)) if w_ > 0 and h_ > 0 else None
        objects = []
        for i, obj in enumerate(tree.findall("object"), start=1):
            where = f"{xml}, object {i}"
            label = (obj.findtext("name") or "").strip()
            if not label:
                raise OrtCamError(f"{where}: no <name>")
            if obj.find("bndbox") is None:
                raise OrtCamError(f"{where}: no <bndbox>")
            x0, y0, x1, y1 = (_number(obj.findtext(f"bndbox/{k}"), f"{where} <{k}>")
                              for k in ("xmin", "ymin", "xmax", "ymax"))
            box = (x0 - 1, y0 - 1, x1, y1)
            _check_box(box, where)
            objects.append(Obj(label, box))
        path = img_dir / name
        samples.append(Sample(_key(path, root), path, objects, size))
    return Dataset(root, "voc", _unique(samples))


def read_coco(path: Path, images: Path | None = None) -> Dataset:
    """COCO: ``images``, ``annotations`` (``bbox`` = [x, y, w, h]) and ``categories``;
    ``file_name`` relative to ``images`` (default: the JSON file's folder)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OrtCamError(f"cannot read COCO annotations {path}: {exc}") from None
    root = images or path.parent
    try:
        cats = {c["id"]: str(c["name"]) for c in doc["categories"]}
        by_id: dict = {}
        for im in doc["images"]:
            p = root / im["file_name"]
            size = (int(im["width"]), int(im["height"])) if im.get("width") else None
            by_id[im["id"]] = Sample(_key(p, root), p, [], size)
        for i, a in enumerate(doc["annotations"]):
            where = f"{path}, annotation {i} (id {a.get('id')})"
            if a["image_id"] not in by_id:
                raise OrtCamError(f"{where}: unknown image_id {a['image_id']!r}")
            if a["category_id"] not in cats:
                raise OrtCamError(f"{where}: unknown category_id {a['category_id']!r}")
            x, y, w, h = (_number(v, f"{where} bbox") for v in a["bbox"])
            box = (x, y, x + w, y + h)
            _check_box(box, where)
            sample = by_id[a["image_id"]]
            mask = coco_mask(a.get("segmentation"), sample.size, where)
            sample.objects.append(Obj(cats[a["category_id"]], box, mask))
    except (KeyError, TypeError, ValueError) as exc:
        raise OrtCamError(f"{path} is not COCO detection JSON (missing or bad {exc}); it needs "
                          "images, annotations with bbox, and categories") from None
    return Dataset(root, "coco", _unique(list(by_id.values())))


def coco_mask(seg: object, size: tuple[int, int] | None, where: str) -> CocoMask | None:
    """An annotation's ``segmentation`` (polygons, or RLE of the image's size), checked
    without decoding it; None where it has none. The image's width and height come from its
    entry in ``images``."""
    if seg is None or seg == [] or seg == {}:
        return None
    if size is None:
        raise OrtCamError(f"{where}: its image has no width and height; a segmentation needs "
                          "them")
    w, h = size
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise OrtCamError(f"{where}: a polygon is a list of x, y pairs, at least "
                                  "three points")
            for v in poly:
                _number(v, f"{where} polygon")
        return CocoMask(seg, h, w)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [h, w]:
            raise OrtCamError(f"{where}: its RLE mask is {seg['size'][0]}x{seg['size'][1]} "
                              f"(height x width); its image is {h}x{w}")
        return CocoMask(seg, h, w)
    raise OrtCamError(f"{where}: segmentation is neither polygons nor RLE "
                      "({size: [h, w], counts})")


def read_voc_seg(root: Path) -> Dataset:
    """VOC segmentation: ``root/SegmentationClass/*.png`` (palette images of class indices;
    0 background, 255 void), the images in ``root/JPEGImages`` under the same stem. One object
    per class present, or with ``root/SegmentationObject`` one per object (its class the most
    common one under its pixels). Class names from ``root/class_names.txt`` (or
    ``labels.txt``), one per line for values 0, 1, ..., else PASCAL VOC's 21."""
    seg_dir = _first_dir(root, SEG_CLASS_DIRS)
    if seg_dir is None:
        raise OrtCamError(f"no VOC segmentation in {root}: expected "
                          f"{' or '.join(SEG_CLASS_DIRS)}/ with PNGs")
    pngs = sorted(seg_dir.glob("*.png"))
    if not pngs:
        raise OrtCamError(f"no segmentation PNGs (*.png) in {seg_dir}")
    names = _class_names(root)
    obj_dir = _first_dir(root, SEG_OBJECT_DIRS)
    img_dir = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root
    samples = []
    for png in (p.absolute() for p in pngs):  # a Ray worker's folder is another
        image = next((img_dir / (png.stem + s) for s in IMAGE_SUFFIXES
                      if (img_dir / (png.stem + s)).is_file()), None)
        if image is None:
            raise OrtCamError(f"{png} has no image: expected {img_dir / png.stem}.jpg")
        classes = read_png(png)
        size = _image_size(image)
        if classes.shape != size[::-1]:
            raise OrtCamError(f"{png} is {classes.shape[1]}x{classes.shape[0]} (width x "
                              f"height); its image {image.name} is {size[0]}x{size[1]}")
        objects = _seg_objects(png, classes, obj_dir, names)
        samples.append(Sample(_key(image, root), image, objects, size))
    return Dataset(root, "voc-seg", _unique(samples))


def _seg_objects(png: Path, classes: np.ndarray, obj_dir: Path | None,
                 names: Sequence[str]) -> list[Obj]:
    """The objects of one segmentation PNG: per class value, or per object id where the
    SegmentationObject PNG exists."""
    def name(v: int) -> str:
        return names[v] if v < len(names) else str(v)

    inst = obj_dir / png.name if obj_dir is not None else None
    if inst is None or not inst.is_file():
        return [Obj(name(v), mask_box(classes == v), PngMask(png, v))
                for v in _values(classes)]
    ids = read_png(inst)
    if ids.shape != classes.shape:
        raise OrtCamError(f"{inst} is {ids.shape[1]}x{ids.shape[0]}; {png} is "
                          f"{classes.shape[1]}x{classes.shape[0]}")
    out = []
    for v in _values(ids):
        under = classes[ids == v]
        under = under[(under != BACKGROUND) & (under != VOID)]
        if not under.size:
            raise OrtCamError(f"{inst}: object {v} lies on no class pixel of {png.name}")
        out.append(Obj(name(int(np.bincount(under).argmax())), mask_box(ids == v),
                       PngMask(inst, v)))
    return out


def _values(png: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(png) if v not in (BACKGROUND, VOID)]


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first of the folders ``names`` under ``root`` that holds PNGs (labelme's
    SegmentationClass holds .npy files, its SegmentationClassPNG the PNGs)."""
    return next((root / n for n in names if (root / n).is_dir() and
                 any((root / n).glob("*.png"))), None)


def _class_names(root: Path) -> Sequence[str]:
    for name in CLASS_NAME_FILES:
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text(
                encoding="utf-8").splitlines() if line.strip()]
    return VOC_CLASSES


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise OrtCamError(f"cannot read image {path}: {exc}") from None


def read_csv(path: Path, images: Path | None = None) -> Dataset:
    """CSV with the header ``image,label,x0,y0,x1,y1``, one row per box, image paths relative
    to ``images`` (default: the CSV file's folder). An optional column ``grid`` ("2x2", the
    same on every row) marks the images as grids for the pointing game."""
    root = images or path.parent
    by_key: dict[str, Sample] = {}
    grids: set[tuple[int, int] | None] = set()
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise OrtCamError(f"{path}: missing column(s) {', '.join(missing)}; the header "
                                  f"must be {','.join(CSV_COLUMNS)}")
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                if not (row["image"] or "").strip():
                    raise OrtCamError(f"{where}: no image")
                box = tuple(_number(row[k], f"{where} {k}") for k in CSV_COLUMNS[2:])
                _check_box(box, where)  # type: ignore[arg-type]
                p = root / row["image"].strip()
                key = _key(p, root)
                sample = by_key.setdefault(key, Sample(key, p))
                sample.objects.append(Obj(row["label"].strip(), box))  # type: ignore[arg-type]
                grids.add(parse_grid(row[GRID_COLUMN] or "", where)
                          if GRID_COLUMN in row else None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OrtCamError(f"cannot read CSV annotations {path}: {exc}") from None
    if len(grids) > 1:
        raise OrtCamError(f"{path}: the grid column differs between rows; a dataset is one "
                          "grid layout")
    return Dataset(root, "csv", sorted(by_key.values(), key=lambda s: s.key),
                   next(iter(grids), None))


def open_dataset(path: Path, fmt: str = "auto", images: Path | None = None,
                 masks: bool = False) -> Dataset:
    """A dataset from a VOC folder, a COCO .json or a .csv file (or a folder holding exactly
    one of them); ``fmt`` forces the format, ``images`` the image folder (COCO, CSV). With
    ``masks`` (a segment audit), a VOC folder with segmentation PNGs is read as ``voc-seg``."""
    path = Path(path)
    if not path.exists():
        raise OrtCamError(f"dataset not found: {path}")
    if fmt not in ("auto", *FORMATS):
        raise OrtCamError(f"unknown dataset format {fmt!r}; use auto, {', '.join(FORMATS)}")
    if fmt == "voc-seg" or (fmt == "auto" and path.is_dir() and (
            masks or not (path / "Annotations").is_dir())
            and _first_dir(path, SEG_CLASS_DIRS) is not None):
        return read_voc_seg(path)
    if path.is_dir() and fmt in ("auto", "voc") and (
            (path / "Annotations").is_dir() or any(path.glob("*.xml"))):
        return read_voc(path)
    if path.is_dir():
        want = {"coco": ["*.json"], "csv": ["*.csv"]}.get(fmt, ["*.json", "*.csv"])
        found = sorted(p for pattern in want for p in path.glob(pattern))
        if len(found) != 1:
            what = "VOC Annotations/ or *.xml, " if fmt in ("auto", "voc") else ""
            raise OrtCamError(f"{path}: expected {what}exactly one "
                              f"{' or '.join(want)} file, found {len(found)}; "
                              "pass the annotation file itself")
        path = found[0]
    if fmt == "voc":
        raise OrtCamError(f"{path}: VOC datasets are folders (Annotations/, JPEGImages/)")
    if fmt == "coco" or (fmt == "auto" and path.suffix.lower() == ".json"):
        return read_coco(path, images)
    if fmt == "csv" or (fmt == "auto" and path.suffix.lower() == ".csv"):
        return read_csv(path, images)
    raise OrtCamError(f"cannot tell the format of {path}; pass --format voc, coco or csv")


def _key(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _unique(samples: list[Sample]) -> list[Sample]:
    """Samples sorted by key, objects of repeated entries for one image joined."""
    by_key: dict[str, Sample] = {}
    for s in samples:
        if s.key in by_key:
            by_key[s.key].objects.extend(s.objects)
        else:
            by_key[s.key] = s
    return sorted(by_key.values(), key=lambda s: s.key)


# --- labels -> class indices ----------------------------------------------------------------
def label_map_from_names(names: Sequence[str]) -> dict[str, list[int]]:
    """Each class name to its index (case-insensitive)."""
    out: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        out.setdefault(name.strip().lower(), []).append(i)
    return out


def read_label_map(path: Path, n_classes: int | None = None) -> dict[str, list[int]]:
    """A JSON object ``{label: index or [indices]}``; keys starting with ``_`` are comments.
    Labels match case-insensitively."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OrtCamError(f"cannot read label map {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise OrtCamError(f"label map {path} must be a JSON object {{label: index or [indices]}}")
    out: dict[str, list[int]] = {}
    for label, value in doc.items():
        if label.startswith("_"):
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise OrtCamError(f"label map {path}: {label!r} must map to an index or a list of "
                              f"indices (got {value!r})")
        bad = [v for v in values if v < 0 or (n_classes is not None and v >= n_classes)]
        if bad:
            raise OrtCamError(f"label map {path}: {label!r} maps to {bad[0]}, outside the "
                              f"model's 0..{(n_classes or 1) - 1}")
        out[label.strip().lower()] = sorted(set(values))
    return out


def label_map_for(path: Path | None, names: Sequence[str] | None = None,
                  n_classes: int | None = None) -> dict[str, list[int]]:
    """The label map of an audit: read from the JSON file ``path`` when given, else each of
    the model's class ``names`` to its index; an error when there is neither."""
    if path is not None:
        return read_label_map(path, n_classes)
    if names:
        return label_map_from_names(names)
    raise OrtCamError("no way to turn labels into classes: pass --label-map or --labels "
                      "(the model stores no class names)")


def classes_of(obj: Obj, label_map: dict[str, list[int]]) -> list[int]:
    return label_map.get(obj.label.strip().lower(), [])


# --- the RSI paper's filters ----------------------------------------------------------------
def chosen_filters(correct: bool = False, one_box: bool = False, small_box: bool = False,
                   rsi: bool = False) -> tuple[str, ...]:
    """The ``FILTERS`` switched on, in their order; ``rsi`` switches on all three, as in the
    RSI paper (§4.3.1)."""
    on = {"correct": correct, "one_box": one_box, "small_box": small_box}
    return tuple(f for f in FILTERS if on[f] or rsi)


def pre_model_skip(sample: Sample, label_map: dict[str, list[int]], filters: Sequence[str],
                   size: tuple[int, int]) -> tuple[str, str] | None:
    """(kind, detail) when ``sample`` is left out before running the model, else None.

    Always: an image with no box, or none whose label maps to a class. ``one_box``: exactly
    one box (every annotated object counts, mapped or not). ``small_box``: every mapped box
    covers less than half of the image (of ``size`` = (width, height))."""
    if not sample.objects:
        return "no box", "the annotation lists no object"
    mapped = [o for o in sample.objects if classes_of(o, label_map)]
    if not mapped:
        labels = sorted({o.label for o in sample.objects})
        return "no mapped label", f"labels {', '.join(labels)} map to no class"
    if "one_box" in filters and len(sample.objects) != 1:
        return "not one box", f"{len(sample.objects)} boxes"
    if "small_box" in filters:
        area = size[0] * size[1]
        for o in mapped:
            x0, y0, x1, y1 = o.box
            frac = (min(x1, size[0]) - max(x0, 0)) * (min(y1, size[1]) - max(y0, 0)) / area
            if frac >= SMALL_BOX:
                return "large box", f"a {o.label} box covers {100 * frac:.0f}% of the image"
    return None
