"""The cascading model-parameter randomisation test (Adebayo et al. 2018) on EfficientNet-Lite0
with its real ImageNet weights, for docs/audits.md.

The model is exported by tools/export_efficientnet_lite0.py with ``--keep-batchnorm`` (each
BatchNorm a layer of its own, as torch and Quantus have them: 49 Conv, 49 BatchNorm, 1 Gemm),
explained at its last MBConv block (``LAYER``, 320×7×7) for Grad-CAM, IG-CAM, RSI-Grad-CAM
with each selection (guided, positive, none), Score-CAM and Eigen-CAM, on real photos from
scikit-image, each for the class the trained model predicts. The layers are randomised from
the output down as Quantus's MPRT does (``ort_cam.audit.randomise``), and after every
``--every`` K-th layer (and the last) each photo is explained again and each map compared
with the trained model's (Spearman with absolute values, SSIM, HOG). Prints the table of
docs/audits.md and writes the curves and the gallery of the first photo's maps to ``--out``.

    python tools/sanity_effnet.py [--photos 8] [--steps 16] [--every 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
#: The last MBConv block's output (BatchNorm kept: its _bn2's), [N, 320, 7, 7].
LAYER = "/_blocks.15/_bn2/BatchNormalization_output_0"
#: scikit-image's photographs (the grey ones as RGB), in this order.
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "camera", "clock",
          "coins")
#: (name shown, methods of one explain call, its options): one walk of the path serves the
#: first five; RSI's other selections are walks of their own.
RUNS = [(("gradcam", "igcam", "rsi", "eigencam", "scorecam"), {}),
        (("rsi",), {"rsi_selection": "positive"}), (("rsi",), {"rsi_selection": "none"})]
NAMES = {("gradcam", 0): "Grad-CAM", ("igcam", 0): "IG-CAM", ("rsi", 0): "RSI, guided",
         ("eigencam", 0): "Eigen-CAM", ("scorecam", 0): "Score-CAM",
         ("rsi", 1): "RSI, positive", ("rsi", 2): "RSI, none"}
SEED = 42


def photo(name: str) -> np.ndarray:
    from skimage import data

    a = getattr(data, name)()
    a = a[0] if isinstance(a, tuple) else a  # stereo_motorcycle: (left, right, disparity)
    return np.stack([a] * 3, axis=-1) if a.ndim == 2 else a[..., :3]


def export_model(path: Path) -> Path:
    """EfficientNet-Lite0 with its BatchNorms kept, exported once to ``path``."""
    if not path.exists():
        spec = importlib.util.spec_from_file_location("export_lite0",
                                                      ROOT / "export_efficientnet_lite0.py")
        assert spec is not None and spec.loader is not None
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        tool.export(path, keep_batchnorm=True, quiet=True)
    return path


def maps_of(ex, image: np.ndarray, target: int, steps: int) -> tuple[dict, np.ndarray]:
    """Every map of NAMES for ``target`` with whether it is dark, and the image the maps lie
    on (the model's crop)."""
    out = {}
    for k, (methods, options) in enumerate(RUNS):
        r = ex.explain(image, target=target, steps=steps, methods=list(methods), **options)
        out.update({NAMES[(m, k)]: (r[m].map, bool(r[m].dark)) for m in methods})
    return out, r.pixels


def cascade(model: Path, photos: list[str], steps: int, every: int, seed: int = SEED) -> dict:
    """The test: per step (layers randomised, last layer) the similarities per method and
    photo, and the first photo's maps at each step."""
    import onnx

    from ort_cam import Explainer
    from ort_cam.audit.randomise import randomised_models
    from ort_cam.audit.sanity import compare

    ex = Explainer(model, LAYER, quiet=True, cache=False)
    images = [photo(p) for p in photos]
    targets = [int(ex.explain(im, steps=1, methods=["gradcam"]).target) for im in images]
    originals = [maps_of(ex, im, c, steps)[0] for im, c in zip(images, targets)]
    result: dict = {"photos": photos, "targets": targets, "layer": LAYER, "steps": steps,
                    "every": every, "seed": seed, "cascade": [],
                    "pixels": maps_of(ex, images[0], targets[0], 1)[1],
                    "gallery": [("original", originals[0])]}
    for n, layer, proto in randomised_models(onnx.load(model), "cascade", seed, every):
        t0 = time.perf_counter()
        rx = Explainer(proto, LAYER, preprocess=ex.preprocess, quiet=True, cache=False)
        sims: dict[str, list[dict]] = {}
        for i, (im, c) in enumerate(zip(images, targets)):
            now = maps_of(rx, im, c, steps)[0]
            if i == 0:
                result["gallery"].append((layer.name, now))
            for name, m in now.items():
                sims.setdefault(name, []).append(compare(originals[i][name], m))
        result["cascade"].append({"randomised": n, "layer": layer.name, "similarity": sims})
        print(f"  {n} layers random (to {layer.name}): {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    return result


def means(result: dict, measure: str) -> dict[str, list[float]]:
    """Per method the mean of ``measure`` over the photos at each step (NaN left out)."""
    out: dict[str, list[float]] = {}
    for step in result["cascade"]:
        for name, sims in step["similarity"].items():
            v = np.array([s[measure] for s in sims], dtype=np.float64)
            out.setdefault(name, []).append(float(np.nanmean(v)) if np.isfinite(v).any()
                                            else float("nan"))
    return out


def table(result: dict) -> str:
    """Markdown: per method the mean Spearman (abs) as the cascade goes down, then SSIM and
    HOG once all layers are random, and the flag."""
    from ort_cam.audit.sanity_report import SIMILAR_ABOVE

    sp, ss, hg = (means(result, k) for k in ("spearman_abs", "ssim", "hog"))
    cols = [s["randomised"] for s in result["cascade"]]
    dark = {name: [sum(v["dark"] for v in step["similarity"][name])
                   for step in result["cascade"]] for name in sp}
    n = len(result["photos"])
    head = " | ".join(f"{k} random" for k in cols)
    lines = [f"| method | Spearman (abs) after: {head} | median over the steps: Spearman | "
             "SSIM | HOG | dark maps, all random | flagged |", "|---" * (len(cols) + 7) + "|"]
    for name in sp:
        median = _median(sp[name])
        flag = "**yes**" if median >= SIMILAR_ABOVE else "no"
        cells = [_num(v) + (f" ({d} dark)" if d else "") for v, d in zip(sp[name], dark[name])]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_num(median)} | "
                     f"{_num(_median(ss[name]))} | {_num(_median(hg[name]))} | "
                     f"{dark[name][-1]}/{n} | {flag} |")
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    """The median of the steps' means that are defined (NaN when none is)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _num(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.2f}"


def figure(result: dict, path: Path) -> None:
    """The Spearman curves and the first photo's maps down the cascade."""
    from matplotlib.figure import Figure

    from ort_cam.render import overlay

    sp = means(result, "spearman_abs")
    cols = [0] + [s["randomised"] for s in result["cascade"]]
    gallery = result["gallery"]
    fig = Figure(figsize=(1.25 * len(gallery) + 1, 1.3 * (len(sp) + 2.4)), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4, len(sp)])
    ax = top.subplots()
    for name, ys in sp.items():
        ax.plot(cols, [1.0, *ys], "o-", ms=3, label=name)
    ax.set(xlabel="layers randomised, from the output down", ylim=(-0.6, 1.05),
           ylabel="mean Spearman (abs)")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.legend(fontsize=6, ncol=4)
    ax.grid(alpha=0.3)
    axes = bottom.subplots(len(sp), len(gallery), squeeze=False)
    pixels = result["pixels"]
    for row, name in zip(axes, sp):
        for a, (_, maps) in zip(row, gallery):
            a.imshow(overlay(pixels, maps[name][0]))
            a.set_xticks([])
            a.set_yticks([])
        row[0].set_ylabel(name, fontsize=6)
    for a, (title, _) in zip(axes[0], gallery):
        a.set_title("/".join(title.split("/")[1:3]) if "/" in title else title, fontsize=5)
    fig.savefig(path, dpi=80)


def reprint(folder: Path) -> None:
    """The table again from ``folder``/results.json (``--table``)."""
    print(table(json.loads((folder / "results.json").read_text())))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("sanity-effnet"))
    ap.add_argument("--table", action="store_true",
                    help="print the table of an earlier run in --out and stop")
    args = ap.parse_args(argv)
    if args.table:
        reprint(args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    model = export_model(args.out / "efficientnet_lite0_bn.onnx")
    t0 = time.perf_counter()
    result = cascade(model, list(PHOTOS[:args.photos]), args.steps, args.every)
    shown = {k: result.pop(k) for k in ("gallery", "pixels")}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    result.update(shown)
    figure(result, args.out / "sanity_effnet_lite0.png")
    print(f"photos {', '.join(result['photos'])}; classes {result['targets']}; m = "
          f"{args.steps}; {time.perf_counter() - t0:.0f} s")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
