"""Segment and detection audits (issue 19): masks decoded by hand (COCO polygon and RLE, VOC
palette PNGs), masks moved onto a grid by hand, the energy inside a mask by hand, and the
audit's deletion curves of the target scalar y = Σ W ⊙ S against running the model itself
(plain onnxruntime, y computed here from the annotation) on the deleted images; bad inputs
refused in one line. The models are tests/target_models.py's segmenter (16x16 input, 4
classes, logits [N, 4, 16, 16]) and YOLO-style detector (32x32, 3 classes, [N, 7, 80]);
random weights, the test images random pixels written here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("pycocotools")

import target_models as tm  # noqa: E402
from region_data import (  # noqa: E402
    PRE,
    detector_images,
    emb_data,
    model_input,
    obj_data,
    palette_png,
    seg_data,
    voc_folder,
)
from tolerance import REBATCHED  # noqa: E402

from ort_cam import Explainer  # noqa: E402
from ort_cam.audit.datasets import VOC_CLASSES, open_dataset, read_coco  # noqa: E402
from ort_cam.audit.image import AuditSpec  # noqa: E402
from ort_cam.audit.masks import to_grid  # noqa: E402
from ort_cam.audit.metrics import pixel_energy  # noqa: E402
from ort_cam.audit.regions import read_concepts  # noqa: E402
from ort_cam.audit.run import audit_model, read_results  # noqa: E402
from ort_cam.cli import main  # noqa: E402
from ort_cam.errors import OrtCamError  # noqa: E402
from ort_cam.preprocess import Preprocess  # noqa: E402
from ort_cam.runtime import session_for  # noqa: E402

STEPS, DELETION = 4, 4
METHODS = ("gradcam", "igcam", "rsi")


def _deleted(pixels: np.ndarray, saliency: np.ndarray, steps: int) -> np.ndarray:
    """The deletion images, written out here: step s blacks out the ceil(s/steps · N) pixels
    of highest saliency (ties in pixel order)."""
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    out = []
    for s in range(steps + 1):
        img = pixels.astype(np.float64).reshape(-1, 3).copy()
        img[order[:int(np.ceil(s / steps * order.size))]] = 0.0
        out.append(img.reshape(pixels.shape))
    return np.stack(out)


# --- masks by hand ----------------------------------------------------------------------------
def test_energy_inside_a_mask_by_hand():
    saliency = np.array([[0.1, 0.2, 0.0, 0.0],
                         [0.4, 0.3, 0.0, 0.5],
                         [0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.5]])
    mask = np.zeros((4, 4), bool)
    mask[1, 0] = mask[1, 1] = mask[3, 3] = mask[2, 2] = True
    # inside: 0.4 + 0.3 + 0.5 + 0 = 1.2 of the total 2.0
    assert pixel_energy(saliency, mask) == pytest.approx(0.6, abs=1e-15)


def test_masks_move_onto_a_grid_by_hand():
    mask = np.zeros((4, 6), bool)  # 6 wide, 4 high
    mask[0, 0] = mask[1, 3] = mask[3, 5] = True
    pre = Preprocess(size=(2, 3), resize="stretch")
    # each cell of the 2x3 grid reads the original pixel under its centre: rows 1 and 3,
    # columns 1, 3 and 5
    assert to_grid(mask, pre, (2, 3)).tolist() == [[False, True, False],
                                                   [False, False, True]]
    # letterbox into 6x6: the image fills rows 1..4 (scale 1); rows 0 and 5 are the border
    box = Preprocess(size=(6, 6), resize="letterbox")
    on = to_grid(mask, box, (6, 6))
    assert not on[0].any() and not on[5].any()
    assert on[1:5].tolist() == mask.tolist()
    # and onto a 3x3 output grid of that input: centres at input 1, 3, 5, which are the
    # original rows 0, 2 (and 4: outside) and columns 1, 3, 5
    mask[2, 3] = True
    assert to_grid(mask, box, (3, 3)).tolist() == [[False, False, False],
                                                   [False, True, False],
                                                   [False, False, False]]


def test_polygon_and_rle_masks_decode_as_drawn(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 6, "height": 5},
                      {"id": 2, "file_name": "b.png", "width": 4, "height": 3}],
           "categories": [{"id": 1, "name": "cat"}],
           "annotations": [
               # a rectangle with corners (1, 1) and (4, 3), in pixel edges
               {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2],
                "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
               # uncompressed RLE, column-major: 2 off, 3 on, 7 off
               {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 3],
                "segmentation": {"size": [3, 4], "counts": [2, 3, 7]}},
               # the same run lengths as COCO's compressed string
               {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 3],
                "segmentation": {"size": [3, 4], "counts": "237"}}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    a, b = read_coco(tmp_path / "c.json").samples
    rect = np.zeros((5, 6), bool)
    rect[1:3, 1:4] = True  # rows 1-2, columns 1-3
    assert a.objects[0].mask is not None
    assert a.objects[0].mask.decode().tolist() == rect.tolist()
    assert a.objects[0].mask.area() == 6
    drawn = [[False, True, False, False],
             [False, True, False, False],
             [True, False, False, False]]
    for obj in b.objects:
        assert obj.mask is not None and obj.mask.decode().tolist() == drawn




def test_voc_segmentation_pngs(tmp_path):
    classes = np.zeros((5, 7), np.uint8)
    classes[1:3, 1:3] = 12   # a dog (VOC value 12)
    classes[1:4, 4:6] = 15   # two people side by side...
    classes[0, :] = 255      # a void border
    objects = np.zeros((5, 7), np.uint8)
    objects[1:3, 1:3] = 1
    objects[1:4, 4] = 2
    objects[1:4, 5] = 3
    objects[0, :] = 255
    root = tmp_path / "voc"
    palette_png(root / "SegmentationClass" / "a.png", classes)
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (7, 5)).save(root / "JPEGImages" / "a.jpg")
    ds = open_dataset(root)
    assert ds.format == "voc-seg"
    (s,) = ds.samples
    assert s.key == "JPEGImages/a.jpg" and s.size == (7, 5)
    assert [(o.label, o.box) for o in s.objects] == [("dog", (1.0, 1.0, 3.0, 3.0)),
                                                       ("person", (4.0, 1.0, 6.0, 4.0))]
    person = s.objects[1].mask
    assert person is not None and person.area() == 6 and person.decode()[1:4, 4:6].all()
    assert not s.objects[0].mask.decode()[0].any()  # type: ignore[union-attr]  # void
    # with SegmentationObject: one object each, its class from SegmentationClass
    palette_png(root / "SegmentationObject" / "a.png", objects)
    (s,) = open_dataset(root).samples
    assert [(o.label, o.box) for o in s.objects] == [
        ("dog", (1.0, 1.0, 3.0, 3.0)), ("person", (4.0, 1.0, 5.0, 4.0)),
        ("person", (5.0, 1.0, 6.0, 4.0))]
    assert VOC_CLASSES[12] == "dog" and VOC_CLASSES[15] == "person"
    # class names of one's own (labelme's class_names.txt): line i names value i
    (root / "class_names.txt").write_text("_background_\n" + "\n".join(
        f"k{i}" for i in range(1, 16)) + "\n")
    assert {o.label for o in open_dataset(root).samples[0].objects} == {"k12", "k15"}


# --- the segment audit -----------------------------------------------------------------------


def _audit(data: dict, kind: str, out: Path, model: str, score: str | None = None
           ) -> list[dict]:
    audit_model(data["model"], data["coco"], out, layer=tm.MODELS[model].layer,
                spec=AuditSpec(steps=STEPS, methods=METHODS, deletion_steps=DELETION),
                label_map=data["map"], preprocess=PRE,
                runtime={"target_kind": kind, "quiet": True, "cache": False, "score": score},
                html_page=False, progress=False)
    return read_results(out / "results.jsonl")


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_segment_audit_curves_are_the_target_scalar_of_the_deleted_images(tmp_path, score):
    data = seg_data(tmp_path / "d")
    records = _audit(data, "segment", tmp_path / "out", "segmenter", score)
    assert [r["status"] for r in records] == ["ok"] * 3
    settings = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert settings["target_kind"] == "segment"
    sess = session_for(onnx.load(data["model"]))  # the suite's thread settings
    ex = Explainer(data["model"], tm.MODELS["segmenter"].layer, preprocess=PRE, quiet=True,
                   cache=False, target_kind="segment", score=score)
    assert settings["score"] == score
    for i, rec in enumerate(records):
        mask, c = data["masks"][i], data["classes"][i]
        assert rec["target"] == c and rec["target_record"]["mask_area"] == mask.sum()
        assert rec["p"] == pytest.approx(rec["y"] / mask.sum(), rel=1e-12)  # the mean score
        assert rec["saturated"] == (score == "probability" and rec["p"] > 0.99)
        pixels = np.asarray(Image.open(data["dir"] / f"{i}.png").convert("RGB"))
        r = ex.explain(pixels, target={"target": c, "mask": mask}, steps=STEPS,
                       methods=list(METHODS))
        for name in METHODS:
            got = rec["methods"][name]
            saliency = r[name].map
            # the energy inside the annotation's mask, from the map by hand
            assert got["energy"] == pytest.approx(saliency[mask].sum() / saliency.sum(),
                                                  rel=REBATCHED)
            out = sess.run(None, {"x": model_input(_deleted(pixels, saliency, DELETION))})[0]
            s = out.astype(np.float64)
            if score == "probability":  # the softmax over the classes, per pixel
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
            y = (s[:, c] * mask).sum(axis=(1, 2))
            # float32 scores summed over the mask, onnxruntime run at another batch size than
            # the audit's (and its float32 softmax): REBATCHED of Σ|terms| (tests/tolerance.py)
            tol = REBATCHED * (np.abs(s[:, c]) * mask).sum(axis=(1, 2))
            assert np.all(np.abs(np.array(got["deletion"]) - y) <= tol), (name, got, y)
            # the AUC of the mean score over the mask: trapezoids over s/k, by hand
            auc = sum((y[k] + y[k + 1]) / 2 for k in range(DELETION)) / DELETION / mask.sum()
            assert abs(got["deletion_auc"] - auc) <= tol.max() / mask.sum()  # as the curve
        assert rec["y"] == pytest.approx(got["deletion"][0], abs=1e-9)  # no pixel deleted


def test_segment_audit_from_voc_pngs_on_the_cli(tmp_path):
    data = seg_data(tmp_path / "d")
    root = voc_folder(data, tmp_path / "voc")
    (root / "Annotations").mkdir()  # VOC's XML boxes beside: a segment audit reads the PNGs
    for i in range(3):
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.png</filename><object><name>bird</name><bndbox>"
            "<xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
            "</annotation>")
    assert open_dataset(root).format == "voc"
    out = tmp_path / "out"
    # no --target-kind: the segmenter's [N, 4, 16, 16] is read as a segment target
    args = ["audit", str(data["model"]), str(root), "--layer",
            tm.MODELS["segmenter"].layer, "--label-map", str(root / "map.json"),
            "--preprocess", "raw", "--scale", str(1 / 64), "--mean", "2,2,2",
            "--steps", str(STEPS), "--deletion-steps", str(DELETION), "--methods",
            "gradcam", "--no-cache", "--no-report", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    recs = {r["key"]: r for r in read_results(out / "results.jsonl")}
    assert {k: (r["label"], r["target"], r["target_record"]["mask_area"])
            for k, r in recs.items()} == {"JPEGImages/0.png": ("cat", 1, 36),
                                          "JPEGImages/1.png": ("dog", 2, 64),
                                          "JPEGImages/2.png": ("cat", 1, 64)}
    # the same masks as the COCO audit's: the same maps and numbers
    coco = {r["key"]: r for r in _audit(data, "segment", tmp_path / "coco", "segmenter")}
    for i in range(3):
        a = recs[f"JPEGImages/{i}.png"]["methods"]["gradcam"]
        b = coco[f"{i}.png"]["methods"]["gradcam"]
        assert a["energy"] == b["energy"] and a["deletion"] == b["deletion"]


# --- the detection audit ----------------------------------------------------------------------
def _det_data(d: Path) -> dict:
    """Three 32x32 random images, each annotated with the box the detector itself predicts
    best among those inside the image and at least 4x4 (read with plain onnxruntime), the
    third's box moved off it (no anchor matches)."""
    images, found = detector_images(d, 3, 3, lambda out: out[4:].max(0))
    anns, truth = [], {}
    for i, (a, out) in enumerate(found):
        c = int(np.argmax(out[4:, a]))
        cx, cy, w, h = (float(v) for v in out[:4, a])
        box = [cx - w / 2, cy - h / 2, w, h] if i < 2 else [0.0, 0.0, 2.0, 2.0]
        anns.append({"id": i, "image_id": i, "category_id": c, "bbox": box})
        truth[i] = (c, box)
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": k, "name": n} for k, n in enumerate("abc")]}
    (d / "coco.json").write_text(json.dumps(doc))
    (d / "map.json").write_text(json.dumps({"a": 0, "b": 1, "c": 2}))
    return {"dir": d, "model": d / "det.onnx", "coco": d / "coco.json", "map": d / "map.json",
            "truth": truth}


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def test_detection_audit_matches_the_box_and_deletes_its_score(tmp_path):
    data = _det_data(tmp_path / "d")
    records = _audit(data, "detection", tmp_path / "out", "detector")
    assert [r["status"] for r in records] == ["ok", "ok", "skipped"]
    assert records[2]["skip"] == "no matching detection"
    assert "IoU > 0.5" in records[2]["reason"]
    sess = session_for(onnx.load(data["model"]))
    ex = Explainer(data["model"], tm.MODELS["detector"].layer, preprocess=PRE, quiet=True,
                   cache=False, target_kind="detection")
    for i, rec in enumerate(records[:2]):
        c, (x, y, w, h) = data["truth"][i]
        pixels = np.asarray(Image.open(data["dir"] / f"{i}.png").convert("RGB"))
        (a,) = rec["target_record"]["anchors"]
        out0 = sess.run(None, {"x": model_input(pixels[None])})[0][0]
        cx, cy, bw, bh = out0[:4, a]
        box = [round(x), round(y), round(x + w), round(y + h)]  # on the 32x32 input's edges
        assert rec["target"] == c and rec["box"] == box
        assert _iou([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], box) > 0.5
        assert rec["y"] == pytest.approx(float(out0[4 + c, a]), abs=REBATCHED)
        assert rec["p"] == rec["y"] and rec["saturated"] == (rec["p"] > 0.99)
        r = ex.explain(pixels, target={"target": c, "box": tuple(map(float, box))},
                       steps=STEPS, methods=list(METHODS))
        region = np.zeros((32, 32), bool)
        region[box[1]:box[3], box[0]:box[2]] = True
        for name in METHODS:
            got, saliency = rec["methods"][name], r[name].map
            assert got["energy"] == pytest.approx(saliency[region].sum() / saliency.sum(),
                                                  rel=REBATCHED)
            out = sess.run(None, {"x": model_input(_deleted(pixels, saliency, DELETION))})[0]
            # one float32 sigmoid score (≤ 1), onnxruntime run at another batch size than the
            # audit's: REBATCHED (tests/tolerance.py)
            assert np.allclose(got["deletion"], out[:, 4 + c, a], rtol=0, atol=REBATCHED), name



def test_detection_audit_takes_the_head_overrides_as_explain_does(tmp_path):
    """``ort-cam audit --objectness`` (and ``--head-layout``) reach the audit's target as
    explain's do: each record's anchor, y and energy are what ``ort-cam explain`` gives with
    the same override for the annotated box and class, and differ from the audit without
    it, which in turn agrees with explain without it; audit.json records the overrides, so
    a resume with others is refused."""
    data = obj_data(tmp_path / "d")
    view = ["--layer", tm.MODELS["detector"].layer, "--preprocess", "raw", "--scale",
            str(1 / 64), "--mean", "2,2,2", "--target-kind", "detection", "--steps",
            str(STEPS), "--methods", ",".join(METHODS), "--no-cache"]

    def audit(out: Path, *extra: str) -> dict:
        res = CliRunner().invoke(main, [
            "audit", str(data["model"]), str(data["coco"]), *view, "--label-map",
            str(data["map"]), "--deletion-steps", str(DELETION), "--no-report", "--out",
            str(out), *extra])
        assert res.exit_code == 0, res.output
        return {r["key"]: r for r in read_results(out / "results.jsonl")}

    def explain(i: int, out: Path, *extra: str) -> tuple[dict, dict]:
        c, box = data["boxes"][i]
        res = CliRunner().invoke(main, [
            "explain", str(data["model"]), str(data["dir"] / f"{i}.png"), *view, "--target",
            str(c), "--box", ",".join(map(str, box)), "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        rec = json.loads((out / "results.jsonl").read_text())
        return rec, dict(np.load(out / f"{i}.npz"))

    overrides = ("--objectness", "--head-layout", "channels")
    with_obj, without = audit(tmp_path / "obj", *overrides), audit(tmp_path / "plain")
    settings = json.loads((tmp_path / "obj" / "audit.json").read_text())
    assert settings["target_head"] == {"objectness": True, "layout": "channels"}
    assert "target_head" not in json.loads((tmp_path / "plain" / "audit.json").read_text())
    for i in range(2):
        c, (x0, y0, x1, y1) = data["boxes"][i]
        region = np.zeros((32, 32), bool)
        region[y0:y1, x0:x1] = True
        for rec, extra in ((with_obj[f"{i}.png"], overrides), (without[f"{i}.png"], ())):
            told, maps = explain(i, tmp_path / f"e{i}{len(extra)}", *extra)
            assert rec["status"] == "ok" and rec["target"] == told["target"] == c
            assert rec["target_record"]["anchors"] == told["target_record"]["anchors"]
            # one float32 score (≤ 1, a sigmoid or a product of two), onnxruntime run at
            # another batch size than the audit's: REBATCHED (tests/tolerance.py)
            assert abs(rec["y"] - told["score"]) <= REBATCHED
            for name in METHODS:
                saliency = maps[f"{name}_map"]
                assert rec["methods"][name]["energy"] == pytest.approx(
                    saliency[region].sum() / saliency.sum(), rel=REBATCHED)
        # obj · cls of two classes, not the class score of three: far beyond the tolerance
        assert abs(with_obj[f"{i}.png"]["y"] - without[f"{i}.png"]["y"]) > 100 * REBATCHED
    # resumed with --objectness alone: the same reading, but not the same settings given
    res = CliRunner().invoke(main, [
        "audit", str(data["model"]), str(data["coco"]), *view, "--label-map", str(data["map"]),
        "--deletion-steps", str(DELETION), "--no-report", "--out", str(tmp_path / "obj"),
        "--objectness"])
    assert res.exit_code == 1 and "other settings (target_head.layout)" in res.output, res.output

# --- bad inputs -------------------------------------------------------------------------------
def _edit(doc: dict, case: str, d: Path) -> dict:
    if case == "unknown image":
        doc["annotations"][0]["image_id"] = 99
    elif case == "rle size":
        doc["annotations"][1]["segmentation"]["size"] = [8, 8]
    elif case == "empty mask":
        doc["annotations"][0]["segmentation"] = [[2, 2, 2.2, 2, 2.2, 2.2]]
    elif case == "no mask":
        del doc["annotations"][0]["segmentation"]
    elif case == "unmapped category":
        (d / "map.json").write_text(json.dumps({"bird": 1}))
    return doc


@pytest.mark.parametrize("case,message", [
    ("unknown image", "unknown image_id 99"),
    ("rle size", "its RLE mask is 8x8 (height x width); its image is 16x16"),
    ("empty mask", "the mask of its cat is empty"),
    ("no mask", "0.png: its cat has no mask; a segment audit needs masks"),
    ("unmapped category", "none of the dataset's labels (cat, dog) is a class of the model"),
    ("metrics", "--metrics applies to class targets"),
    ("no pycocotools", "pip install 'ort_cam[coco]'"),
])
def test_bad_inputs_are_refused_in_one_line(tmp_path, monkeypatch, case, message):
    data = seg_data(tmp_path / "d")
    doc = _edit(json.loads(data["coco"].read_text()), case, data["dir"])
    data["coco"].write_text(json.dumps(doc))
    if case == "no pycocotools":
        monkeypatch.setitem(sys.modules, "pycocotools", None)
    args = ["audit", str(data["model"]), str(data["coco"]), "--target-kind", "segment",
            "--layer", tm.MODELS["segmenter"].layer, "--label-map", str(data["map"]),
            "--preprocess", "raw", "--steps", "2", "--methods", "gradcam", "--no-cache",
            "--no-report", "--out", str(tmp_path / "out"),
            *(["--metrics", "road"] if case == "metrics" else [])]
    res = CliRunner().invoke(main, args)
    lines = [line for line in res.output.strip().splitlines() if not line.startswith("ort_cam:")]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]


def test_voc_png_of_another_size_than_its_image_is_refused(tmp_path):
    root = tmp_path / "voc"
    palette_png(root / "SegmentationClass" / "a.png", np.ones((8, 8)))
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (16, 16)).save(root / "JPEGImages" / "a.jpg")
    with pytest.raises(OrtCamError, match=r"a.png is 8x8 \(width x height\); its image a.jpg "
                                          r"is 16x16"):
        open_dataset(root)
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(OrtCamError, match="a.png has no image"):
        open_dataset(root)


def test_mask_size_other_than_the_image_file_is_skipped_with_why(tmp_path):
    """The COCO entry says 16x16, the file is 12x16: its mask cannot be laid on it."""
    data = seg_data(tmp_path / "d")
    Image.new("RGB", (12, 16)).save(data["dir"] / "0.png")
    records = _audit(data, "segment", tmp_path / "out", "segmenter")
    assert records[0]["skip"] == "mask size"
    assert records[0]["reason"] == "the cat mask is 16x16; the image is 12x16"
    assert [r["status"] for r in records[1:]] == ["ok", "ok"]


def test_each_label_of_an_image_is_its_own_target(tmp_path):
    """``--targets labels``: a record per image and label, each with its label's mask (the
    union of its objects); the default takes the label of the largest area."""
    data = seg_data(tmp_path / "d")
    doc = json.loads(data["coco"].read_text())
    doc["annotations"] += [  # image 0 gets two dogs: 2x3 and 3x3 pixels, 15 in all
        {"id": 4, "image_id": 0, "category_id": 2, "bbox": [10, 10, 2, 3],
         "segmentation": [[10, 10, 12, 10, 12, 13, 10, 13]]},
        {"id": 5, "image_id": 0, "category_id": 2, "bbox": [12, 0, 3, 3],
         "segmentation": [[12, 0, 15, 0, 15, 3, 12, 3]]}]
    data["coco"].write_text(json.dumps(doc))
    audit_model(data["model"], data["coco"], tmp_path / "out",
                layer=tm.MODELS["segmenter"].layer,
                spec=AuditSpec(steps=2, methods=("gradcam",), deletion_steps=2,
                               targets="labels"),
                label_map=data["map"], preprocess=PRE,
                runtime={"target_kind": "segment", "quiet": True, "cache": False},
                html_page=False, progress=False)
    got = {r["key"]: (r["target"], r["target_record"]["mask_area"], r["target_objects"])
           for r in read_results(tmp_path / "out" / "results.jsonl")}
    assert got == {"0.png#cat": (1, 36, 1), "0.png#dog": (2, 15, 2), "1.png#dog": (2, 64, 1),
                   "2.png#cat": (1, 64, 1)}
    records = _audit(data, "segment", tmp_path / "top", "segmenter")
    assert records[0]["label"] == "cat"  # 36 pixels against the dogs' 15


# --- the embedding audit ----------------------------------------------------------------------
def test_embedding_audit_curves_are_the_cosine_of_the_deleted_images(tmp_path):
    data = emb_data(tmp_path / "d")
    layer = tm.MODELS["embedding"].layer
    audit_model(data["model"], data["coco"], tmp_path / "out", layer=layer,
                spec=AuditSpec(steps=STEPS, methods=METHODS, deletion_steps=DELETION,
                               concepts=read_concepts(data["concepts"])),
                preprocess=PRE, html_page=False, progress=False,
                runtime={"target_kind": "embedding", "quiet": True, "cache": False})
    records = read_results(tmp_path / "out" / "results.jsonl")
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert "concepts_sha256" in json.loads((tmp_path / "out" / "audit.json").read_text())
    sess = session_for(onnx.load(data["model"]))
    ex = Explainer(data["model"], layer, preprocess=PRE, quiet=True, cache=False,
                   target_kind="embedding")
    for i, rec in enumerate(records):
        v, region = data["vectors"][data["labels"][i]], data["regions"][i]
        assert rec["label"] == data["labels"][i] and rec["target"] is None
        assert rec["p"] == rec["y"] and rec["saturated"] is False
        pixels = np.asarray(Image.open(data["dir"] / f"{i}.png").convert("RGB"))
        r = ex.explain(pixels, target={"concept": v}, steps=STEPS, methods=list(METHODS))
        for name in METHODS:
            got, saliency = rec["methods"][name], r[name].map
            assert got["energy"] == pytest.approx(saliency[region].sum() / saliency.sum(),
                                                  rel=REBATCHED)
            out = sess.run(None, {"x": model_input(_deleted(pixels, saliency, DELETION))})[0]
            e = out.astype(np.float64)
            cos = e @ v / np.linalg.norm(e, axis=1) / np.linalg.norm(v)
            # a cosine (≤ 1) of a float32 embedding, onnxruntime run at another batch size
            # than the audit's: REBATCHED (tests/tolerance.py)
            assert np.allclose(got["deletion"], cos, rtol=0, atol=REBATCHED), (name, got, cos)


@pytest.mark.parametrize("case,message", [
    ("no concepts", "an embedding audit needs a concept per label: --concepts FILE.npz"),
    ("short concept", "the concept 'cat' has 3 values; the embedding has 320"),
    ("concepts on a segmenter", "--concepts applies to an embedding audit"),
])
def test_embedding_bad_inputs_are_refused_in_one_line(tmp_path, case, message):
    data = emb_data(tmp_path / "d")
    if case == "short concept":
        np.savez(data["concepts"], cat=np.ones(3), dog=np.ones(tm.EMBED_DIM))
    model, kind = data["model"], "embedding"
    if case == "concepts on a segmenter":
        model, kind = seg_data(tmp_path / "s")["model"], "segment"
    args = ["audit", str(model), str(data["coco"]), "--target-kind", kind,
            "--layer", tm.MODELS["embedding"].layer, "--preprocess", "raw", "--steps", "2",
            "--methods", "gradcam", "--no-cache", "--no-report", "--out", str(tmp_path / "o"),
            *(["--concepts", str(data["concepts"])] if case != "no concepts" else [])]
    res = CliRunner().invoke(main, args)
    lines = [line for line in res.output.strip().splitlines() if not line.startswith("ort_cam:")]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
