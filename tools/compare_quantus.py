"""ort_cam's metrics against Quantus 0.6.0's, in numbers (the table of docs/audits.md).

The setting of tests/test_quantus.py: a torchvision resnet18 (seeded random weights) on three
64x64 photos-like images, Grad-CAM maps from ort_cam (layer3.1, probability score) fed to
Quantus. Quantus scores with the same onnxruntime session (``OrtModule``: any difference is
the metric's), and with the torch network itself (float32 kernels of another engine).

    python tools/compare_quantus.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.simplefilter("ignore")


def _row(name: str, ours, ort, torch_=None) -> str:
    ours, ort = np.atleast_1d(np.asarray(ours, float)), np.atleast_1d(np.asarray(ort, float))
    cells = [name, ", ".join(f"{v:.6f}" for v in ours), ", ".join(f"{v:.6f}" for v in ort),
             f"{np.abs(ours - ort).max():.1e}"]
    if torch_ is not None:
        t = np.atleast_1d(np.asarray(torch_, float))
        cells.append(f"{np.abs(ours - t).max():.1e}")
    else:
        cells.append("–")
    return "| " + " | ".join(cells) + " |"


def _random_logit(s, T, quantus, kw) -> str:
    from ort_cam.audit import metrics as M

    ex = s["ex"]

    def explain(model, inputs, targets, **_):
        pix = np.asarray(inputs).transpose(0, 2, 3, 1).round().astype(np.uint8)
        return np.stack([ex.explain(p, target=int(t), steps=4, methods=["gradcam"])[
            "gradcam"].map for p, t in zip(pix, targets)])[:, None]

    ours, theirs = [], []
    for p, c, m in zip(s["photos"], s["targets"], s["maps"]):
        other = explain(None, T._x(p[None]), [M.other_class(int(c), 1000)])[0, 0]
        ours.append(M.random_logit(m, other))
        theirs.append(quantus.RandomLogit(num_classes=1000, seed=42, **kw)(
            model=s["model"], x_batch=T._x(p[None]), y_batch=np.array([c]),
            a_batch=m[None, None].copy(), explain_func=explain)[0])
    return _row("Random logit (SSIM)", ours, theirs)


def _region_perturbation(s, T, quantus, kw, torch_model) -> str:
    """MoRF with 1-pixel regions against ort_cam's deletion curve at 1/16..3/16 of the
    pixels: p(x) − p(x without them)."""
    from ort_cam.audit import metrics as M

    photo, c, m = s["photos"][0], int(s["targets"][0]), s["maps"][0]
    n = m.size
    curve = T._score(s, c)(M.deletion_insertion_images(photo, m, 16)[0])
    flat = np.sort(m.reshape(-1))[::-1]
    at = [int(np.ceil(k / 16 * n)) - 1 for k in range(1, 4)]
    # where the k-th pixel ties with the next, the two remove different (equal) pixels: left out
    kept = [k for k, i in zip(range(1, 4), at) if flat[i] != flat[i + 1]]
    ours = [curve[0] - curve[k] for k in kept]
    at = [int(np.ceil(k / 16 * n)) - 1 for k in kept]
    out = []
    for model in (s["model"], torch_model):
        q = quantus.RegionPerturbation(patch_size=1, order="morf", regions_evaluation=3 * n // 16,
                                       **kw)(model=model, x_batch=T._x(photo[None]),
                                             y_batch=np.array([c]), a_batch=m[None, None].copy(),
                                             softmax=True)[0]
        out.append([q[i] for i in at])
    return _row(f"Region perturbation MoRF = deletion, at {kept}/16 of the pixels (of 1..3/16; "
                "the others end on a tie)", ours, *out)


def main() -> int:
    import quantus
    import test_quantus as T

    from ort_cam.audit import metrics as M
    from ort_cam.audit.pointing import pointing_scores
    from ort_cam.maps import upsample

    s = T.setup.__wrapped__(None)
    torch_model = T._pixels_net(s["net"])
    x, y, a = T._x(s["photos"]), s["targets"], s["maps"][:, None]
    kw = dict(disable_warnings=True)
    rows = ["| metric | ort_cam (per image) | Quantus, same model | max diff | max diff, "
            "Quantus on the torch model |", "|---|---|---|---|---|"]
    rows.append(_row("Sparseness", [M.sparseness(m) for m in s["maps"]],
                     quantus.Sparseness(**kw)(model=s["model"], x_batch=x, y_batch=y,
                                              a_batch=a.copy())))
    rows.append(_row("Complexity", [M.entropy_complexity(m) for m in s["maps"]],
                     quantus.Complexity(**kw)(model=s["model"], x_batch=x, y_batch=y,
                                              a_batch=a.copy())))
    up = np.stack([upsample(r, (T.SIZE, T.SIZE)) for r in s["raw"]])
    ours_pg, theirs_pg = [], []
    for box in [(0, 0, 32, 32), (32, 0, 64, 32), (0, 32, 64, 64), (16, 16, 48, 48)]:
        cell = np.stack([M.box_mask((T.SIZE, T.SIZE), box)] * len(up))
        ours_pg += [pointing_scores(r, c)["pointing_hit"] for r, c in zip(s["raw"], cell)]
        theirs_pg += list(quantus.PointingGame(**kw)(
            model=s["model"], x_batch=x, y_batch=y, a_batch=up[:, None].copy(),
            s_batch=cell[:, None].astype(np.float32)))
    rows.append(_row("Pointing game (4 boxes × 3 images)", ours_pg, theirs_pg))
    ours, ort, tor = [], [], []
    for i, (p, c, m) in enumerate(zip(s["photos"], y, s["maps"])):
        subsets = T._quantus_subsets(100 + i, p.size, 100, 224)
        ours.append(M.faithfulness_correlation(T._score(s, int(c)), p, m, subsets))
        for model, out in ((s["model"], ort), (torch_model, tor)):
            np.random.seed(100 + i)
            out.append(quantus.FaithfulnessCorrelation(return_aggregate=False, **kw)(
                model=model, x_batch=T._x(p[None]), y_batch=np.array([c]),
                a_batch=m[None, None].copy(), softmax=True)[0])
    rows.append(_row("Faithfulness correlation (100 × 224 features)", ours, ort, tor))
    rows.append(_random_logit(s, T, quantus, kw))
    rows.append(_region_perturbation(s, T, quantus, kw, torch_model))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
