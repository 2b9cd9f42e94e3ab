"""A tiny audit dataset for the tests: random 16×16 images with CSV boxes, for the tiny conv
net of tiny_models (8×8 input, 5 classes), plus one unreadable image and one image whose only
label maps to no class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from PIL import Image

import ort_cam.audit.image as image_audit

LAYER = "relu1_out"
LABELS = "abcde"
#: Pixel scale for the "raw" preset at which the tiny net's top probability spans roughly
#: 0.7..0.999, so both saturated (> 0.99) and unsaturated images occur.
SCALE = 0.3
#: The audit of one image, as the package defines it (before any test patches it).
_AUDIT_IMAGE = image_audit.audit_image


def make_dataset(d: Path, n: int = 12, seed: int = 0) -> dict:
    """Write model, images, boxes.csv and labels.json under ``d``; return their paths."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "imgs").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["image,label,x0,y0,x1,y1"]
    for i in range(n):
        img = (rng.integers(0, 256, (16, 16, 3)) * rng.uniform(0.1, 1.0)).astype(np.uint8)
        Image.fromarray(img).save(d / "imgs" / f"im{i:03d}.png")
        x0, y0 = (int(v) for v in rng.integers(0, 9, 2))
        label = "person" if i == 1 else LABELS[i % 5]
        rows.append(f"imgs/im{i:03d}.png,{label},{x0},{y0},{x0 + 7},{y0 + 6}")
        if i == 2:  # a second box for the same image
            rows.append(f"imgs/im{i:03d}.png,{LABELS[(i + 1) % 5]},0,0,4,4")
    (d / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    rows.append("imgs/broken.png,a,0,0,4,4")
    (d / "boxes.csv").write_text("\n".join(rows) + "\n")
    (d / "labels.json").write_text(json.dumps(
        {"_note": "c is ambiguous on purpose", "a": 0, "b": 1, "c": [2, 3], "d": 3, "e": 4}))
    return {"dir": d, "model": tiny_models.conv_net(d), "csv": d / "boxes.csv",
            "label_map": d / "labels.json", "n": n + 1}


def cli_args(data: dict, out: Path, *extra) -> list[str]:
    return [str(a) for a in ("audit", data["model"], data["csv"], "--layer", LAYER,
                             "--label-map", data["label_map"], "--preprocess", "raw",
                             "--scale", SCALE, "--steps", 4, "--deletion-steps", 4,
                             "--no-report", "--out", out, *extra)]


DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
#: The demo samples' flips and transposition, with their boxes: (name, image op, box op) on a
#: W×H image and a box (x0, y0, x1, y1), x1/y1 exclusive.
VARIANTS = [
    ("id", lambda a: a, lambda b, w, h: b),
    ("hflip", lambda a: a[:, ::-1], lambda b, w, h: (w - b[2], b[1], w - b[0], b[3])),
    ("vflip", lambda a: a[::-1], lambda b, w, h: (b[0], h - b[3], b[2], h - b[1])),
    ("rot180", lambda a: a[::-1, ::-1], lambda b, w, h: (w - b[2], h - b[3], w - b[0], h - b[1])),
    ("transpose", lambda a: a.transpose(1, 0, 2), lambda b, w, h: (b[1], b[0], b[3], b[2])),
]


def demo_dataset(d: Path, n: int = 40) -> dict:
    """``n`` images from the demo model's 8 samples and their flips (the model was trained
    with flips), boxes moved with them, in ``d/boxes.csv``; the last one an unreadable file.
    Returns the paths and the CLI arguments' start (model, CSV)."""
    (d / "imgs").mkdir(parents=True, exist_ok=True)
    boxes = json.loads((DEMO / "samples" / "boxes.json").read_text())
    rows = ["image,label,x0,y0,x1,y1"]
    for i in range(n - 1):
        name, info = list(boxes.items())[i % len(boxes)]
        vname, op, box_op = VARIANTS[(i // len(boxes)) % len(VARIANTS)]
        a = np.asarray(Image.open(DEMO / "samples" / name).convert("RGB"))
        out = f"imgs/{i:03d}_{vname}_{name}"
        Image.fromarray(np.ascontiguousarray(op(a))).save(d / out)
        rows.append(",".join([out, info["label"],
                              *map(str, box_op(info["box"], a.shape[1], a.shape[0]))]))
    (d / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    rows.append("imgs/broken.png,circle,0,0,4,4")
    (d / "boxes.csv").write_text("\n".join(rows) + "\n")
    return {"model": DEMO / "demo_cnn.onnx", "csv": d / "boxes.csv", "n": n}


def watch_audits(monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> list[str]:
    """Patch ``audit.image.audit_image`` so that each call appends its image's key to the list
    returned; with ``stop_after``, the call after that many raises KeyboardInterrupt (a Ctrl-C
    mid-audit) instead. Watching again replaces the watch (the real function is wrapped)."""
    calls: list[str] = []

    def watched(*args, **kw):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(args[1].key)
        return _AUDIT_IMAGE(*args, **kw)

    monkeypatch.setattr(image_audit, "audit_image", watched)
    return calls
