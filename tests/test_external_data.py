"""External data stays inside the model's folder: a model whose tensors point outside it
(``../secret.bin``, an absolute path, a symbolic link) is refused in one line before any byte
of that file is read, and every model ort_cam saves writes only into the folder it was given
(external data locations are bare file names beside the model)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models
from click.testing import CliRunner
from onnx import helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors, uses_external_data

import ort_cam
from ort_cam.cli import main
from ort_cam.errors import ModelLoadError, OrtCamError
from ort_cam.grad import list_layers, split_models
from ort_cam.graph import load_model
from ort_cam.graph.digest import model_digest
from ort_cam.graph.load import read_model
from ort_cam.graph.save import data_file, save_model


def _external(source: Path, folder: Path, location: str) -> Path:
    """``source`` saved into ``folder`` as m.onnx with every tensor in the file
    ``folder/location``; returns the model's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save(onnx.load(str(source)), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location=location, size_threshold=0)
    return path


def _relocate(path: Path, location: str) -> None:
    """Point every external tensor of the model at ``path`` to ``location``."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in _get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


def _locations(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {e.value for t in _get_all_tensors(model) if uses_external_data(t)
            for e in t.external_data if e.key == "location"}


@pytest.fixture
def source(tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    return tiny_models.conv_net(tmp_path / "src")


@pytest.fixture
def outside(tmp_path, source) -> dict[str, Path]:
    """Models whose data lies outside their folder, each one way: the data file is a copy
    of a valid one, so only where it lies is wrong."""
    good = _external(source, tmp_path / "good", "m.data")
    secret = tmp_path / "secret.bin"
    shutil.copy(good.parent / "m.data", secret)
    cases = {}
    for name, location in [("parent", "../secret.bin"), ("absolute", str(secret)),
                           ("nested", "sub/../../secret.bin")]:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(good, folder / "m.onnx")
        _relocate(folder / "m.onnx", location)
        cases[name] = folder / "m.onnx"
    link = tmp_path / "link"  # the data file itself is a link out
    link.mkdir()
    shutil.copy(good, link / "m.onnx")
    os.symlink(secret, link / "m.data")
    cases["link"] = link / "m.onnx"
    linked_dir = tmp_path / "linked_dir"  # a folder inside is a link out
    linked_dir.mkdir()
    shutil.copy(good, linked_dir / "m.onnx")
    _relocate(linked_dir / "m.onnx", "data/secret.bin")
    os.symlink(tmp_path, linked_dir / "data")
    cases["linked_dir"] = linked_dir / "m.onnx"
    return cases


CASES = ["parent", "absolute", "nested", "link", "linked_dir"]
WHY = {"parent": "outside the model's folder", "absolute": "outside the model's folder",
       "nested": "outside the model's folder", "link": "a symbolic link",
       "linked_dir": "a symbolic link"}


def test_data_inside_the_folder_loads(tmp_path, source):
    # the check refuses nothing legitimate: a data file beside the model, or in a subfolder
    expected = [info.as_dict() for info in list_layers(load_model(source))]
    for location in ("m.data", "weights/m.data"):
        path = _external(source, tmp_path / location.replace("/", "_"), location)
        assert [info.as_dict() for info in list_layers(load_model(path))] == expected
        assert model_digest(path) is not None


@pytest.mark.parametrize("case", CASES)
def test_data_outside_the_folder_is_refused_by_the_api(outside, case):
    with pytest.raises(ModelLoadError) as info:
        read_model(outside[case])
    message = str(info.value)
    assert "\n" not in message and WHY[case] in message and str(outside[case]) in message
    # the cache key is computed first and reads the data files: it refuses before reading
    with pytest.raises(ModelLoadError, match=WHY[case]):
        model_digest(outside[case])
    with pytest.raises(OrtCamError, match=WHY[case]):
        ort_cam.Explainer(outside[case], "relu1_out", preprocess="raw", quiet=True)


@pytest.mark.parametrize("case", CASES)
def test_data_outside_the_folder_is_refused_by_the_cli(outside, case):
    result = CliRunner().invoke(main, ["layers", str(outside[case])])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # the error boundary, not a traceback
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and WHY[case] in lines[0]
    assert "Traceback" not in result.output


def test_in_memory_model_with_external_data_is_refused(tmp_path, source):
    path = _external(source, tmp_path / "good", "m.data")
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ModelLoadError, match="pass the model's path") as info:
        read_model(proto)
    assert "\n" not in str(info.value)
    assert read_model(onnx.load(str(path))).graph.initializer  # with its data it is fine


def test_split_writes_only_into_its_folder(tmp_path, source):
    # the source's data sits in a subfolder; the split models' data goes beside them, under
    # bare file names, whatever the source named
    src = _external(source, tmp_path / "model", "weights/m.data")
    out = tmp_path / "cut"
    out.mkdir()
    before = {p for p in tmp_path.rglob("*")}
    models = split_models(load_model(src), "relu1_out", score="logit")
    written = save_model(models.prefix, out / "prefix.onnx", limit=0)
    written += save_model(models.head, out / "head.onnx", limit=0)
    assert written == [out / "prefix.onnx", data_file(out / "prefix.onnx"),
                       out / "head.onnx", data_file(out / "head.onnx")]
    assert {p for p in tmp_path.rglob("*")} - before == set(written)
    assert _locations(out / "prefix.onnx") == {"prefix.onnx.data"}
    assert _locations(out / "head.onnx") == {"head.onnx.data"}


def test_cli_split_writes_only_into_its_folder(tmp_path, source):
    src = _external(source, tmp_path / "model", "m.data")
    before = {p for p in tmp_path.rglob("*")}
    result = CliRunner().invoke(main, ["split", str(src), "--layer", "relu1_out",
                                       "--out", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    new = {p for p in tmp_path.rglob("*")} - before
    assert new == {tmp_path / "cut", *(tmp_path / "cut" / n for n in
                                       ("prefix.onnx", "head.onnx", "manifest.json"))}


def test_save_ignores_a_location_the_model_carries(tmp_path):
    # A Constant's tensor that names "../evil.bin" as its external file, its bytes in memory:
    # save_as_external_data renames initializers only, so onnx would write this one to
    # ../evil.bin (CVE-2025-51480; onnx >= 1.21 refuses with a traceback instead).
    value = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "c")
    value.data_location = onnx.TensorProto.EXTERNAL
    value.external_data.add(key="location", value="../evil.bin")
    nodes = [helper.make_node("Constant", [], ["c"], value=value),
             helper.make_node("Add", ["c", "w"], ["y"])]
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")  # goes to the data file
    graph = helper.make_graph(nodes, "g", [],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    out = tmp_path / "out"
    out.mkdir()
    written = save_model(model, out / "m.onnx", limit=0)
    assert written == [out / "m.onnx", data_file(out / "m.onnx")]
    assert sorted(tmp_path.rglob("*")) == sorted([out, *written])  # no evil.bin anywhere
    back = onnx.load(str(out / "m.onnx"))
    np.testing.assert_array_equal(numpy_helper.to_array(back.graph.node[0].attribute[0].t),
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def test_save_refuses_a_tensor_whose_data_is_not_in_memory(tmp_path, source):
    path = _external(source, tmp_path / "good", "m.data")
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ModelLoadError, match="not in memory"):
        save_model(proto, tmp_path / "out.onnx", limit=0)
    assert not (tmp_path / "out.onnx").exists()
