"""Dataset readers on small files written here (VOC XML, COCO JSON, CSV), label maps and the
RSI paper's filters, with boxes worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ort_cam.audit.datasets import (
    Obj,
    Sample,
    chosen_filters,
    label_map_for,
    label_map_from_names,
    open_dataset,
    pre_model_skip,
    read_label_map,
)
from ort_cam.errors import OrtCamError

VOC_XML = """<annotation>
  <filename>{name}</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJ = ("<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
           "<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def write_voc(root, files: dict[str, list[tuple]]):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, objs in files.items():
        objects = "".join(VOC_OBJ.format(label=o[0], x0=o[1], y0=o[2], x1=o[3], y1=o[4])
                          for o in objs)
        (root / "Annotations" / f"{name}.xml").write_text(
            VOC_XML.format(name=f"{name}.jpg", objects=objects))
    return root


def test_voc_boxes_are_one_based_inclusive(tmp_path):
    root = write_voc(tmp_path / "voc", {"b": [("dog", 1, 1, 10, 20)],
                                        "a": [("bus", 84.5, 20, 435, 373), ("car", 409, 167,
                                                                            500, 266)]})
    ds = open_dataset(root)
    assert ds.format == "voc"
    assert [s.key for s in ds.samples] == ["JPEGImages/a.jpg", "JPEGImages/b.jpg"]
    a, b = ds.samples
    # xmin = 1 is the first pixel: edges 0..10 (10 pixels wide), 0..20
    assert b.objects == [Obj("dog", (0.0, 0.0, 10.0, 20.0))]
    assert a.objects[0] == Obj("bus", (83.5, 19.0, 435.0, 373.0))
    assert a.size == (500, 375) and a.path == root / "JPEGImages" / "a.jpg"


def test_coco_bbox_is_xywh(tmp_path):
    doc = {"images": [{"id": 7, "file_name": "imgs/x.png", "width": 40, "height": 30},
                      {"id": 8, "file_name": "imgs/y.png", "width": 40, "height": 30}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 3, 10, 5]},
                           {"id": 2, "image_id": 7, "category_id": 4, "bbox": [0, 0, 1, 1]}],
           "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "dog"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    ds = open_dataset(tmp_path)  # the folder's single .json
    assert ds.format == "coco" and [s.key for s in ds.samples] == ["imgs/x.png", "imgs/y.png"]
    x, y = ds.samples
    assert x.objects == [Obj("cat", (2.0, 3.0, 12.0, 8.0)), Obj("dog", (0.0, 0.0, 1.0, 1.0))]
    assert y.objects == [] and x.size == (40, 30)
    assert x.path == tmp_path / "imgs" / "x.png"
    other = open_dataset(tmp_path / "ann.json", images=tmp_path / "elsewhere")
    assert other.samples[0].path == tmp_path / "elsewhere" / "imgs" / "x.png"


def test_csv_rows_group_per_image(tmp_path):
    (tmp_path / "b.csv").write_text("image,label,x0,y0,x1,y1\nq.png,cat,1,2,3,4\n"
                                    "p.png,dog,0,0,5,5\nq.png,dog,5,6,7,8.5\n")
    ds = open_dataset(tmp_path / "b.csv")
    assert [s.key for s in ds.samples] == ["p.png", "q.png"]
    assert ds.samples[1].objects == [Obj("cat", (1, 2, 3, 4)), Obj("dog", (5, 6, 7, 8.5))]
    assert ds.samples[1].size is None


def test_fingerprint_follows_keys_and_boxes_not_the_root(tmp_path):
    text = "image,label,x0,y0,x1,y1\nq.png,cat,1,2,3,4\n"
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "b.csv").write_text(text)
    one, two = (open_dataset(tmp_path / d / "b.csv").fingerprint() for d in ("one", "two"))
    assert one == two and one["images"] == 1
    (tmp_path / "two" / "b.csv").write_text(text.replace("3,4", "3,5"))
    assert open_dataset(tmp_path / "two" / "b.csv").fingerprint() != one


@pytest.mark.parametrize("name,text,message", [
    ("bad.csv", "image,label,x0,y0\na.png,cat,1,2\n", "missing column(s) x1, y1"),
    ("bad.csv", "image,label,x0,y0,x1,y1\na.png,cat,1,two,3,4\n", "line 2 y0: 'two' is not"),
    ("bad.csv", "image,label,x0,y0,x1,y1\na.png,cat,5,2,3,4\n", "line 2: empty box"),
    ("bad.json", "{not json", "cannot read COCO annotations"),
    ("bad.json", '{"images": [], "annotations": []}', "is not COCO detection JSON"),
    ("bad.json", json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "categories": [],
                             "annotations": [{"id": 5, "image_id": 2, "category_id": 1,
                                              "bbox": [0, 0, 1, 1]}]}),
     "annotation 0 (id 5): unknown image_id 2"),
])
def test_bad_annotation_files_are_one_line_errors(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(OrtCamError) as err:
        open_dataset(tmp_path / name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_voc_files(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("dog", 1, 1, "x", 20)]})
    with pytest.raises(OrtCamError, match=r"a.xml, object 1 <xmax>: 'x' is not a number"):
        open_dataset(root)
    (root / "Annotations" / "a.xml").write_text("<annotation><filename>")
    with pytest.raises(OrtCamError, match="cannot read VOC annotation"):
        open_dataset(root)
    with pytest.raises(OrtCamError, match="dataset not found"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OrtCamError, match="exactly one"):
        open_dataset(tmp_path / "empty")


def test_label_maps(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"_why": "comments are skipped", "Bus": [779, 874, 654],
                                "car": 817}))
    assert read_label_map(path, 1000) == {"bus": [654, 779, 874], "car": [817]}
    path.write_text(json.dumps({"bus": 5, "car": 817}))
    with pytest.raises(OrtCamError, match="'car' maps to 817, outside the model's 0..799"):
        read_label_map(path, 800)
    path.write_text(json.dumps({"car": "sports car"}))
    with pytest.raises(OrtCamError, match="must map to an index or a list"):
        read_label_map(path)
    assert label_map_from_names(["Cat", "dog", "cat"]) == {"cat": [0, 2], "dog": [1]}


def test_label_map_source_file_then_names(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Bus": 2}))
    assert label_map_for(path, ["bus", "car", "van"], 3) == {"bus": [2]}  # the file wins
    assert label_map_for(None, ["bus", "car", "Bus"], 3) == {"bus": [0, 2], "car": [1]}
    with pytest.raises(OrtCamError, match="pass --label-map or --labels"):
        label_map_for(None, None, 3)
    with pytest.raises(OrtCamError, match="outside the model's 0..1"):
        label_map_for(path, None, 2)


def test_chosen_filters():
    assert chosen_filters() == ()
    assert chosen_filters(small_box=True, correct=True) == ("correct", "small_box")
    assert chosen_filters(one_box=True, rsi=True) == ("correct", "one_box", "small_box")


def sample(*objs):
    return Sample("k", Path("k"), [Obj(label, box) for label, box in objs])


def test_filters_before_the_model():
    lm = {"dog": [1], "bus": [2, 3]}
    size = (100, 50)  # area 5000
    assert pre_model_skip(sample(), lm, (), size) == ("no box",
                                                       "the annotation lists no object")
    assert pre_model_skip(sample(("person", (0, 0, 5, 5))), lm, (), size) == (
        "no mapped label", "labels person map to no class")
    two = sample(("dog", (0, 0, 5, 5)), ("person", (0, 0, 5, 5)))
    assert pre_model_skip(two, lm, (), size) is None
    assert pre_model_skip(two, lm, ("one_box",), size) == ("not one box", "2 boxes")
    half = sample(("Dog", (0, 0, 50, 50)))  # 2500 of 5000 pixels: exactly 50% is too large
    assert pre_model_skip(half, lm, ("small_box",), size) == (
        "large box", "a Dog box covers 50% of the image")
    just_under = sample(("dog", (0, 0, 49, 50)))
    assert pre_model_skip(just_under, lm, ("small_box", "one_box"), size) is None
    beyond = sample(("dog", (-50, -50, 49, 50)))  # clipped to the image: 49 x 50
    assert pre_model_skip(beyond, lm, ("small_box",), size) is None
