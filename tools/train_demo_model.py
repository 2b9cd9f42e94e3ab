"""Train and export the demo model that ``ort-cam demo`` explains: a small CNN that tells six
shapes apart on cluttered backgrounds, with held-out sample images whose object boxes are known
to the pixel.

    python tools/train_demo_model.py                # writes models/demo/, never overwrites
    python tools/train_demo_model.py --force --seed 0 --epochs 8

Everything is generated here, offline and seeded: ``make_sample(rng, size)`` draws one image
(a shape of random colour, size, position and rotation on a textured background with
distractor fragments) and returns the exact bounding box of the drawn object. Training runs on
CPU with torch (2 threads, a few minutes); the model is exported with ``torch.onnx.export``
(opset 17, dynamic batch) and carries its preprocessing, labels and recommended layer in the
ONNX metadata. torch is needed only here; ort_cam itself never imports it.

Outputs (under ``--out``, default ``models/demo``):
    demo_cnn.onnx            input "image" [N,3,96,96] float32, output "logits" [N,6]
    samples/<name>.png       held-out images, some saturated (p > 0.999), some not (p < 0.99)
    samples/boxes.json       {"<name>.png": {"label", "class", "box": [x0, y0, x1, y1]}}
    README.md                how the model was made, accuracy, the samples table
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "cross", "ring", "star")
SIZE = 96
#: x = (pixel / 255 - MEAN) / STD, per RGB channel (roughly the generated images' statistics).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
LAYER_NAME = "block4_out"
ROOT = Path(__file__).resolve().parent.parent


# --- the data --------------------------------------------------------------------------------
def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float H×W×3 background in 0..255: a gradient, then stripes, soft blobs and
    low-frequency noise, each with random strength."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    theta = rng.uniform(0, 2 * np.pi)
    t = (np.cos(theta) * xx + np.sin(theta) * yy)
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    img = a + (b - a) * t[..., None]
    for _ in range(rng.integers(0, 3)):  # stripes
        phi = rng.uniform(0, np.pi)
        freq = rng.uniform(3, 14)
        wave = np.sin(2 * np.pi * freq * (np.cos(phi) * xx + np.sin(phi) * yy)
                      + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:
            wave = np.sign(wave)
        m = rng.uniform(0.15, 0.5) * (0.5 + 0.5 * wave)[..., None]
        img = img * (1 - m) + m * np.array(_colour(rng), float)
    for _ in range(rng.integers(1, 6)):  # blobs
        cx, cy = rng.uniform(0, 1, 2)
        s = rng.uniform(0.05, 0.25)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))[..., None]
        img = img * (1 - 0.8 * g) + 0.8 * g * np.array(_colour(rng), float)
    coarse = rng.normal(0, rng.uniform(0, 30), (8, 8, 3))  # low-frequency noise
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8))
    low = np.asarray(coarse_img.resize((size, size), Image.BICUBIC), float) - 128
    return img + low


def _distractors(rng: np.random.Generator, size: int, draw: ImageDraw.ImageDraw) -> None:
    """Fragments that are not class objects: open polylines, short arcs, dots, thin bars."""
    for _ in range(rng.integers(2, 8)):
        kind = rng.integers(0, 4)
        col = _colour(rng)
        if kind == 0:  # open polyline
            n = rng.integers(2, 5)
            start = rng.uniform(0, size, 2)
            pts = [tuple(start)]
            for _ in range(n):
                start = start + rng.normal(0, size / 6, 2)
                pts.append(tuple(start))
            draw.line(pts, fill=col, width=int(rng.integers(1, 4)))
        elif kind == 1:  # arc of at most 150 degrees (never a ring)
            r = rng.uniform(5, 20)
            cx, cy = rng.uniform(0, size, 2)
            a0 = rng.uniform(0, 360)
            draw.arc([cx - r, cy - r, cx + r, cy + r], a0, a0 + rng.uniform(30, 150), fill=col,
                     width=int(rng.integers(1, 4)))
        elif kind == 2:  # a few dots
            for _ in range(rng.integers(3, 12)):
                x, y = rng.uniform(0, size, 2)
                r = rng.uniform(0.5, 2.0)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=col)
        else:  # thin bar
            x, y = rng.uniform(0, size, 2)
            ang = rng.uniform(0, np.pi)
            length = rng.uniform(8, 30)
            dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
            draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=col, width=int(rng.integers(2, 4)))


def _rotated(points, cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, cx: float, cy: float, r: float,
                angle: float, rng: np.random.Generator) -> None:
    """Draw class ``cls`` (filled, value 255) into a mode-"L" mask, circumradius ``r``."""
    name = CLASSES[cls]
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif name == "ring":
        w = r * rng.uniform(0.28, 0.42)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        draw.ellipse([cx - r + w, cy - r + w, cx + r - w, cy + r - w], fill=0)
    elif name == "square":
        h = r / math.sqrt(2)
        draw.polygon(_rotated([(-h, -h), (h, -h), (h, h), (-h, h)], cx, cy, angle), fill=255)
    elif name == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (-np.pi / 2 + k * 2 * np.pi / 3
                                                              for k in range(3))]
        draw.polygon(_rotated(pts, cx, cy, angle), fill=255)
    elif name == "cross":
        a = r * rng.uniform(0.22, 0.32)  # half arm width
        b = math.sqrt(max(r * r - a * a, 1.0))  # arm length (corners on the circumcircle)
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
               (-b, a), (-b, -a), (-a, -a)]
        draw.polygon(_rotated(pts, cx, cy, angle), fill=255)
    elif name == "star":
        inner = r * rng.uniform(0.38, 0.5)
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else inner
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        draw.polygon(_rotated(pts, cx, cy, angle), fill=255)
    else:  # pragma: no cover
        raise ValueError(name)


def make_sample(rng: np.random.Generator, size: int = SIZE, cls: int | None = None
                ) -> tuple[np.ndarray, int, tuple[int, int, int, int]]:
    """One image: (H×W×3 uint8, class index, box (x0, y0, x1, y1) with x1/y1 exclusive).

    The box is the pixel-exact bounding box of the drawn object (its mask is drawn without
    anti-aliasing, on top of everything but the final pixel noise)."""
    if cls is None:
        cls = int(rng.integers(len(CLASSES)))
    bg = _background(rng, size)
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    _distractors(rng, size, ImageDraw.Draw(canvas))
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    img = np.asarray(canvas, float)

    scale = size / 96
    r = rng.uniform(9, 22) * scale
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    mask_img = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask_img), cls, cx, cy, r, rng.uniform(0, 2 * np.pi), rng)
    mask = np.asarray(mask_img) > 0

    # object colour: random, with a random (sometimes small) contrast to what lies under it
    under = img[mask].mean(axis=0)
    want = rng.uniform(45, 200)
    for _ in range(20):
        col = np.array(_colour(rng), float)
        if np.linalg.norm(col - under) >= want:
            break
    shade = 1 + rng.uniform(-0.25, 0.25) * (np.mgrid[0:size, 0:size][1] - cx) / max(r, 1)
    obj = np.clip(col[None, None, :] * shade[..., None], 0, 255)
    img = np.where(mask[..., None], obj, img)
    img = img + rng.normal(0, rng.uniform(0, 14), img.shape)  # pixel noise
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), cls, box


def make_set(seed, n: int, size: int = SIZE):
    """``n`` samples with balanced classes from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    boxes = np.empty((n, 4), np.int64)
    for i in range(n):
        images[i], labels[i], boxes[i] = make_sample(rng, size, cls=i % len(CLASSES))
    return images, labels, boxes


def preprocess():
    """The preprocessing stored in the model (and used in training)."""
    from ort_cam.preprocess import Preprocess

    return Preprocess(size=(SIZE, SIZE), resize="stretch", scale=1 / 255, mean=MEAN, std=STD,
                      channels="RGB", layout="NCHW")


# --- the model -------------------------------------------------------------------------------
def build_model(width: tuple[int, ...] = (24, 32, 64, 96, 96)):
    """Five Conv3x3+BN+ReLU blocks: a stride-2 stem (96 -> 48), then blocks 1 and 2 each
    followed by 2x2 max-pooling (48 -> 24 -> 12), blocks 3 and 4 at 12x12; global average
    pooling, linear. ``block4``'s ReLU output [N, 96, 12, 12] is the layer to explain."""
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1, pool: bool = False):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

        def forward(self, x):
            return self.pool(self.relu(self.bn(self.conv(x))))

    class DemoCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Block(3, width[0], stride=2)
            self.block1 = Block(width[0], width[1], pool=True)
            self.block2 = Block(width[1], width[2], pool=True)
            self.block3 = Block(width[2], width[3])
            self.block4 = Block(width[3], width[4])
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width[-1], len(CLASSES))

        def forward(self, x):
            x = self.block4(self.block3(self.block2(self.block1(self.stem(x)))))
            return self.fc(self.gap(x).flatten(1))

    return DemoCNN()


def to_input(images: np.ndarray):
    """uint8 N×H×W×3 -> float32 NCHW tensor, ``x = (pixel/255 - MEAN) / STD``."""
    import torch

    writable = np.require(images, requirements="W")  # PIL arrays are read-only
    x = torch.from_numpy(writable).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def predict(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities (float64) of the torch model, in eval mode."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.softmax(model(to_input(images[i:i + batch])).double(), 1).numpy())
    return np.concatenate(out)


def train(seed: int, epochs: int, n_train: int, batch: int = 32, lr: float = 2e-3,
          log=print):
    """Train on ``n_train`` generated images; returns (model, seconds)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    ss = np.random.SeedSequence(seed)
    data_seed, shuffle_seed = ss.spawn(2)
    t0 = time.perf_counter()
    images, labels, _ = make_set(data_seed, n_train)
    log(f"generated {n_train} training images in {time.perf_counter() - t0:.0f} s")
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (n_train // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.2)
    rng = np.random.default_rng(shuffle_seed)
    y_all = torch.from_numpy(labels)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n_train)
        total, correct, n = 0.0, 0, 0
        for i in range(n_train // batch):
            idx = order[i * batch:(i + 1) * batch]
            x, y = to_input(images[idx]), y_all[idx]
            flips = rng.integers(0, 4, len(idx))  # the classes are flip-invariant
            x[flips % 2 == 1] = x[flips % 2 == 1].flip(3)
            x[flips >= 2] = x[flips >= 2].flip(2)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            n += len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / n:.4f}, train accuracy "
            f"{correct / n:.4f} ({time.perf_counter() - t0:.0f} s)")
    return model.eval(), time.perf_counter() - t0


# --- export ----------------------------------------------------------------------------------
def export(model, path: Path) -> str:
    """Write the ONNX model with metadata; returns the sha256 of the file."""
    import onnx
    import torch

    from ort_cam.preprocess import write_metadata

    model.eval()
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(tmp), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load(str(tmp))
    tmp.unlink()
    relu = [n for n in proto.graph.node if n.op_type == "Relu" and n.name.startswith("/block4/")]
    if len(relu) != 1:
        raise RuntimeError(f"expected one Relu in block4, found {[n.name for n in relu]}")
    old = relu[0].output[0]
    for node in proto.graph.node:
        node.input[:] = [LAYER_NAME if t == old else t for t in node.input]
        node.output[:] = [LAYER_NAME if t == old else t for t in node.output]
    for vi in proto.graph.value_info:
        if vi.name == old:
            vi.name = LAYER_NAME
    write_metadata(proto, preprocess())
    proto.metadata_props.add(key="ort_cam.labels", value=json.dumps(list(CLASSES)))
    proto.metadata_props.add(key="ort_cam.layer", value=LAYER_NAME)
    proto.producer_name = "ort_cam tools/train_demo_model.py"
    proto.doc_string = ("Demo CNN: six shapes on cluttered backgrounds, 96x96 RGB; "
                        "see models/demo/README.md")
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def check_export(model, path: Path, images: np.ndarray) -> float:
    """Max |ORT logits - torch logits| over ``images`` (also checks the layer's shape)."""
    import onnxruntime as ort
    import torch

    x = to_input(images)
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": x.numpy()})[0]
    pre = preprocess().normalize(images)  # the stored preprocessing gives the same input
    if float(np.abs(pre - x.numpy()).max()) > 1e-5:
        raise RuntimeError("Preprocess.normalize disagrees with the training normalisation")
    return float(np.abs(got - ref).max())


# --- samples ---------------------------------------------------------------------------------
#: (class, kind) of the bundled samples; "saturated": correct and p > 0.999, "unsaturated":
#: correct and p < 0.99. Every class appears; a saturated entry takes the most confident
#: candidate of its class, an unsaturated one the first that fits.
SAMPLE_PLAN = (("circle", "saturated"), ("square", "unsaturated"), ("triangle", "saturated"),
               ("cross", "unsaturated"), ("ring", "saturated"), ("star", "unsaturated"),
               ("cross", "saturated"), ("ring", "unsaturated"))


def pick_samples(model, seed, n_candidates: int = 2400):
    """Generate held-out candidates and pick one for each entry of SAMPLE_PLAN."""
    images, labels, boxes = make_set(seed, n_candidates)
    prob = predict(model, images)
    top, pred = prob.max(1), prob.argmax(1)
    used: set[int] = set()
    chosen = []
    for label, kind in SAMPLE_PLAN:
        cls = CLASSES.index(label)
        ok = (labels == cls) & (pred == cls)
        ok &= (top > 0.999) if kind == "saturated" else (top < 0.99)
        idx = [int(i) for i in np.flatnonzero(ok) if int(i) not in used]
        if not idx:
            raise RuntimeError(f"no {kind} {label} among {n_candidates} candidates")
        # saturated: the most confident candidate (1 - p smallest); unsaturated: the first one
        i = min(idx, key=lambda j: 1 - top[j]) if kind == "saturated" else idx[0]
        used.add(i)
        chosen.append(dict(name=f"{label}_{kind}.png", label=label, cls=cls, kind=kind,
                           prob=float(top[i]), box=[int(v) for v in boxes[i]], image=images[i]))
    return chosen


def energy_in_box(model_path: Path, samples_dir: Path, boxes: dict, steps: int = 50) -> list:
    """For each sample and method: Σ_box L_norm / Σ L_norm (printed, not tuned)."""
    import ort_cam

    explainer = ort_cam.Explainer(str(model_path), LAYER_NAME, quiet=True)
    rows = []
    for name, entry in boxes.items():
        res = explainer.explain(samples_dir / name, steps=steps)
        x0, y0, x1, y1 = entry["box"]
        row = dict(name=name, label=res.label, p=res.score, gap=res.completeness_gap)
        for method, mres in res.methods.items():
            total = float(mres.map.sum())
            row[method] = float(mres.map[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0
            row[f"{method}_dark"] = mres.dark
        row["box_frac"] = (x1 - x0) * (y1 - y0) / (SIZE * SIZE)
        rows.append(row)
    return rows


# --- the script ------------------------------------------------------------------------------
def write_readme(out: Path, info: dict, samples: list) -> None:
    rows = "\n".join(
        f"| `{s['name']}` | {s['label']} ({s['cls']}) | {s['kind']} | {s['prob']:.6f} | "
        f"{1 - s['prob']:.1e} | {s['box']} |" for s in samples)
    text = f"""# Demo model: shapes on clutter

`demo_cnn.onnx` is a small CNN trained by `tools/train_demo_model.py` on procedurally
generated 96×96 RGB images, each with one object of six classes:
{", ".join(CLASSES)}.
The object has random colour, size (circumradius 9–22 px), position and rotation; the
background is cluttered (colour gradient, stripes, soft blobs, low-frequency and pixel noise,
blur) with distractor fragments (open polylines, arcs of at most 150°, dots, thin bars) that
are not class objects. The object is drawn without anti-aliasing, so its bounding box is known
to the pixel.

Rebuild (offline, CPU, about 5 minutes on two idle cores):

    python tools/train_demo_model.py --force --seed {info['seed']} --epochs {info['epochs']}

The same seed gives bit-identical `demo_cnn.onnx` and samples on one machine and torch build
(checked with three runs, two of them on a heavily loaded machine); another CPU or torch build
may differ in the last bits. This README also records the training time, which varies.

## Model

- Input `image` [N, 3, 96, 96] float32, `x = (pixel/255 − {MEAN[0]}) / {STD[0]}` per RGB
  channel, resize `stretch` (metadata key `ort_cam.preprocess`); output `logits` [N, 6].
- Five blocks Conv3×3 (no bias) + BatchNorm + ReLU: `stem` (stride 2, 24 channels, 96 → 48),
  `block1` (32) and `block2` (64) each followed by max-pool 2×2 (48 → 24 → 12), `block3` and
  `block4` (96 each) at 12×12; global average pooling, linear 96 → 6. {info['params']:,}
  parameters; the export folds BatchNorm into the convolutions.
- Recommended layer (metadata `ort_cam.layer`): `{LAYER_NAME}`, block 4's ReLU output
  [N, 96, 12, 12]. Class names in `ort_cam.labels`.
- Training: {info['epochs']} epochs on {info['n_train']:,} images, AdamW, one-cycle LR (max
  {info['lr']}), batch 32, random flips, plain cross-entropy; {info['train_s']:.0f} s wall
  time on 2 CPU threads (this build, on a shared machine).
- Held-out accuracy: **{info['test_acc']:.4f}** on {info['n_test']:,} new images;
  {info['test_sat']:.1%} of them are correct with top probability > 0.999.
- ONNX opset 17, float32, {info['size_kb']:.0f} kB; ORT vs torch logits max
  |Δ| = {info['ort_err']:.1e}; sha256
  `{info['sha256']}`.

## Samples (`samples/`, boxes in `samples/boxes.json`)

Held out (a separate seed stream of 2,400 candidates): *saturated* = the most confident
correctly classified candidate of its class (p > 0.999), *unsaturated* = the first correctly
classified candidate of its class with p < 0.99. Boxes are `[x0, y0, x1, y1]` in pixels,
x1/y1 exclusive. p is the torch model's softmax, in float64 from float32 logits.

| file | class | kind | p(top) | 1 − p | box |
|---|---|---|---|---|---|
{rows}
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--n-test", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ap.add_argument("--no-check", action="store_true", help="skip the ort_cam energy check")
    return ap.parse_args(argv)


def _held_out(model, test_ss: np.random.SeedSequence, n_test: int
              ) -> tuple[np.ndarray, float, float]:
    """Held-out images, accuracy and share correct with p > 0.999 (printed as they come)."""
    test_images, test_labels, _ = make_set(test_ss, n_test)
    prob = predict(model, test_images)
    test_acc = float((prob.argmax(1) == test_labels).mean())
    test_sat = float(((prob.max(1) > 0.999) & (prob.argmax(1) == test_labels)).mean())
    print(f"held-out accuracy {test_acc:.4f} on {n_test} images; "
          f"{test_sat:.1%} correct with p > 0.999")
    per_class = {c: float((prob.argmax(1)[test_labels == i] == i).mean())
                 for i, c in enumerate(CLASSES)}
    print("per class: " + ", ".join(f"{c} {a:.3f}" for c, a in per_class.items()))
    return test_images, test_acc, test_sat


def _write_samples(samples: list, samples_dir: Path) -> dict:
    """The sample PNGs (replacing the folder's old files) and boxes.json; returns the boxes."""
    if samples_dir.exists():
        for old in samples_dir.glob("*"):
            old.unlink()
    samples_dir.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for s in samples:
        Image.fromarray(s["image"]).save(samples_dir / s["name"])
        boxes[s["name"]] = {"label": s["label"], "class": s["cls"], "box": s["box"]}
        print(f"  {s['name']:24s} class {s['cls']} {s['label']:9s} p {s['prob']:.6f} "
              f"(1-p {1 - s['prob']:.1e}, {s['kind']}) box {s['box']}")
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in boxes.items()]
    (samples_dir / "boxes.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return boxes


def _print_energy(model_path: Path, samples_dir: Path, boxes: dict) -> None:
    print("energy in the true box, Σ_B L_norm / Σ L_norm (m = 50, probability score):")
    print(f"  {'sample':24s} {'1-p':>9s} {'box%':>5s} {'gradcam':>8s} {'igcam':>8s} "
          f"{'rsi':>8s}  gap")
    for r in energy_in_box(model_path, samples_dir, boxes):
        dark = "".join(" dark:" + m for m in ("gradcam", "igcam", "rsi") if r[f"{m}_dark"])
        print(f"  {r['name']:24s} {1 - r['p']:9.1e} {r['box_frac']:5.1%} {r['gradcam']:8.3f} "
              f"{r['igcam']:8.3f} {r['rsi']:8.3f}  {r['gap']:.1e}{dark}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)

    import torch

    torch.set_num_threads(2)
    out: Path = args.out
    model_path, samples_dir = out / "demo_cnn.onnx", out / "samples"
    existing = [p for p in (model_path, samples_dir, out / "README.md") if p.exists()]
    if existing and not args.force:
        print(f"refusing to overwrite {', '.join(map(str, existing))}; pass --force",
              file=sys.stderr)
        return 2

    train_ss, test_ss, sample_ss = np.random.SeedSequence([args.seed, 1]).spawn(3)
    train_seed = int(train_ss.generate_state(1)[0])
    model, train_s = train(train_seed, args.epochs, args.n_train, lr=args.lr)
    test_images, test_acc, test_sat = _held_out(model, test_ss, args.n_test)

    out.mkdir(parents=True, exist_ok=True)
    sha = export(model, model_path)
    err = check_export(model, model_path, test_images[:64])
    print(f"wrote {model_path} ({model_path.stat().st_size / 1024:.0f} kB, sha256 {sha[:16]}…); "
          f"ORT vs torch logits max |diff| {err:.2e}")
    if err > 1e-4:
        raise RuntimeError(f"ORT and torch disagree by {err:.2e} > 1e-4")

    samples = pick_samples(model, sample_ss)
    boxes = _write_samples(samples, samples_dir)
    info = dict(seed=args.seed, epochs=args.epochs, n_train=args.n_train, n_test=args.n_test,
                lr=args.lr, train_s=train_s, test_acc=test_acc, test_sat=test_sat, sha256=sha,
                size_kb=model_path.stat().st_size / 1024, ort_err=err,
                params=sum(p.numel() for p in model.parameters()))
    write_readme(out, info, samples)
    print(f"wrote {samples_dir}/ and {out / 'README.md'}")
    if not args.no_check:
        _print_energy(model_path, samples_dir, boxes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
