"""The one refuse-to-overwrite rule (ort_cam.files): what counts as the user's, the one-line
errors, and ``force``; and that every writing command goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ort_cam.errors import OrtCamError
from ort_cam.files import refuse_overwrite

PACKAGE = Path(__file__).resolve().parents[1] / "ort_cam"


def test_named_files_in_a_folder(tmp_path):
    refuse_overwrite(tmp_path / "new", names=["a.png"])  # a folder that does not exist
    for name in ("a.png", "b.npz", "c.png", "d.npz", "e.png"):
        (tmp_path / name).write_text("mine")
    refuse_overwrite(tmp_path, names=["x.png", "y.npz"])  # none of ours is there
    with pytest.raises(OrtCamError) as err:
        refuse_overwrite(tmp_path, names=["x.png", "b.npz"])
    assert str(err.value) == f"{tmp_path} already holds b.npz; pass --force to overwrite"
    with pytest.raises(OrtCamError) as err:  # four named, then " …"
        refuse_overwrite(tmp_path, names=["a.png", "b.npz", "c.png", "d.npz", "e.png"])
    assert str(err.value) == (f"{tmp_path} already holds a.png, b.npz, c.png, d.npz …; "
                              "pass --force to overwrite")
    refuse_overwrite(tmp_path, True, names=["a.png"])


def test_a_folder_we_own_whole(tmp_path):
    out = tmp_path / "out"
    refuse_overwrite(out, marker=".ours")  # new
    out.mkdir()
    refuse_overwrite(out, marker=".ours")  # empty
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OrtCamError) as err:
        refuse_overwrite(out, marker=".ours", writer="ort-cam demo", fix="use another --out")
    assert str(err.value) == (f"{out} is not empty and holds no .ours (not written by ort-cam "
                              "demo); use another --out")
    with pytest.raises(OrtCamError, match=r"out is not empty; pass --force to overwrite$"):
        refuse_overwrite(out)
    (out / ".ours").write_text("")
    refuse_overwrite(out, marker=".ours")  # an earlier run of ours claimed it
    refuse_overwrite(tmp_path / "out" / "notes.txt", force=True)


def test_one_file(tmp_path):
    path = tmp_path / "model.onnx"
    refuse_overwrite(path)
    path.write_bytes(b"")
    with pytest.raises(OrtCamError) as err:
        refuse_overwrite(path)
    assert str(err.value) == f"{path} exists; pass --force to overwrite"
    refuse_overwrite(path, force=True)


def test_no_other_overwrite_check_in_the_package():
    """Only ort_cam/files.py decides what may be overwritten: no command tests ``.exists()``
    next to a ``force`` flag on its own."""
    own = re.compile(r"if .*\.exists\(\).*force|force.*\.exists\(\)|any\(.*iterdir\(\)\)")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
             if p.name != "files.py"
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
             if own.search(line)]
    assert not found, f"overwrite checks outside ort_cam/files.py: {found}"
