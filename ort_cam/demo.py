"""The bundled demo: a small CNN trained on generated scenes whose object boxes are exact
(built by tools/train_demo_model.py), and a handful of its images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import OrtCamError
from .files import refuse_overwrite

MARKER = ".ort-cam-demo"


@dataclass
class DemoSample:
    path: Path
    label: str
    cls: int
    box: tuple[int, int, int, int]


def demo_dir() -> Path:
    """Where the demo model and samples are: the installed data package ``ort_cam.demo_data``
    (pyproject maps models/demo there), else the source tree's models/demo."""
    here = Path(__file__).resolve().parent
    for d in (here / "demo_data", here.parent / "models" / "demo"):
        if (d / "demo_cnn.onnx").is_file():
            return d
    raise OrtCamError("the bundled demo model is missing; rebuild it with "
                      "`python tools/train_demo_model.py`")


def demo_samples(d: Path) -> list[DemoSample]:
    boxes = json.loads((d / "samples" / "boxes.json").read_text())
    return [DemoSample(d / "samples" / name, v["label"], int(v["class"]), tuple(v["box"]))
            for name, v in sorted(boxes.items())]


def claim_output(out: Path, force: bool) -> None:
    """Use ``out`` for demo output: fine if new, empty, or written by an earlier demo run
    (it holds our marker); anything else of the user's is never overwritten without force."""
    refuse_overwrite(out, force, marker=MARKER, writer="ort-cam demo",
                     fix="pass --out elsewhere or --force")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by ort-cam demo; safe to delete\n")
    (out / "results.jsonl").unlink(missing_ok=True)
