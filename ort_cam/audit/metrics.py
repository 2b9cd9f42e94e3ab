"""Audit metrics (METHODS.md "Metrics"): pure functions over maps, images and boxes.

Boxes are ``(x0, y0, x1, y1)`` in pixels of the map's grid, x1/y1 exclusive. Where a box is
taken, an H×W boolean mask (e.g. the union of several boxes, ``boxes_mask``) may be given instead.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence

import numpy as np

from .similarity import pearson, ssim

#: A box's four numbers (a sequence or an array); where a region is taken, also an H×W bool mask.
Box = Sequence[float] | np.ndarray
#: Per-image scores or a curve's points: a sequence or a 1-D array.
Values = Sequence[float] | np.ndarray

#: Share of the map's pixels the ``mask`` explanation map keeps (Integrated Grad-CAM paper's
#: Table 1: the top 15%); ``top_label`` names it in tables and printouts.
MASK_TOP = 0.15
#: Steps of the deletion and insertion curves (s = 0..steps), unless asked otherwise.
DELETION_STEPS = 16


def top_label(top: float = MASK_TOP) -> str:
    """"top-15%" for ``top`` = 0.15: the mask explanation map's name."""
    return f"top-{100 * top:g}%"


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Boolean H×W mask of ``box`` clipped to the grid."""
    h, w = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros((h, w), dtype=bool)
    mask[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
    return mask


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """Boolean H×W mask of the union of ``boxes``."""
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask |= box_mask(shape, box)
    return mask


def _region(shape: tuple[int, int], box: Box) -> np.ndarray:
    if isinstance(box, np.ndarray) and box.dtype == bool:
        if box.shape != tuple(shape):
            raise ValueError(f"region mask has shape {box.shape}, the map {tuple(shape)}")
        return box
    return box_mask(shape, box)


def pixel_energy(saliency: np.ndarray, box: Box) -> float:
    """Energy-based pointing game: Σ_B L / Σ L (nan for an all-zero map)."""
    total = float(saliency.sum())
    if total <= 0:
        return float("nan")
    return float(saliency[_region(saliency.shape, box)].sum()) / total


def region_scores(saliency: np.ndarray, box: Box,
                  thresholds: Sequence[float] = tuple(np.round(np.arange(0.1, 1.0, 0.1), 1))
                  ) -> dict[str, list[float]]:
    """IoU, IoB and IoR of R = {L > t} against the box B, for each threshold t.

    IoU = |R∩B|/|R∪B|, IoB = |R∩B|/|B|, IoR = |R∩B|/|R| (nan when R is empty)."""
    b = _region(saliency.shape, box)
    nb = int(b.sum())
    out: dict[str, list[float]] = {"iou": [], "iob": [], "ior": []}
    for t in thresholds:
        r = saliency > t
        inter, union, nr = int((r & b).sum()), int((r | b).sum()), int(r.sum())
        out["iou"].append(inter / union if union else float("nan"))
        out["iob"].append(inter / nb if nb else float("nan"))
        out["ior"].append(inter / nr if nr else float("nan"))
    return out


def bbox_score(saliency: np.ndarray, box: Box) -> float:
    """Schulz et al. 2020: with n = |B|, the share of the n highest pixels inside B
    (ties broken by pixel order, so the count is always exactly n)."""
    b = _region(saliency.shape, box).reshape(-1)
    n = int(b.sum())
    if n == 0:
        return float("nan")
    top = np.argsort(-saliency.reshape(-1), kind="stable")[:n]
    return float(b[top].sum()) / n


def explanation_map(pixels: np.ndarray, saliency: np.ndarray, kind: str = "soft",
                    top: float = MASK_TOP) -> np.ndarray:
    """E in pixel space: ``soft`` = L ⊙ I per channel (RSI paper); ``mask`` = I on the top
    ``top`` share of pixels of L, black elsewhere (Integrated Grad-CAM paper's Table 1)."""
    img = pixels.astype(np.float64)
    if kind == "soft":
        return img * saliency[..., None]
    if kind != "mask":
        raise ValueError(f"unknown explanation map {kind!r}; use soft or mask")
    flat = saliency.reshape(-1)
    k = int(round(top * flat.size))
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return img * keep.reshape(saliency.shape)[..., None]


def confidence_drop(y: float, o: float) -> float:
    """One image's term of Average Drop, max(0, Y_c − O_c) / Y_c (Y_c: p_c of the image, O_c:
    of its explanation map); Average Drop is its mean over the images, (1/N) Σ, which the
    audit's summary takes (×100 for %)."""
    return max(0.0, y - o) / y


def confidence_increase(y: float, o: float) -> bool:
    """One image's term of Increase in Confidence, 1(Y_c < O_c); its mean over the images is
    the Increase in Confidence."""
    return bool(y < o)


#: IoU/IoB/IoR thresholds t of the papers' localisation metrics.
THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))
DARK_EPS = tuple(10.0 ** -k for k in range(2, 13))


def dark_counts(raw_maps: Sequence[np.ndarray], eps: Sequence[float] = DARK_EPS
                ) -> dict[float, int]:
    """How many maps are dark at each ε (max L − min L < ε, §4.3.2)."""
    ranges = np.array([float(m.max() - m.min()) for m in raw_maps])
    return {float(e): int((ranges < e).sum()) for e in eps}


def deletion_insertion_orders(saliency: np.ndarray, steps: int) -> list[np.ndarray]:
    """Masks (True = pixel taken from the image) for RISE-style curves: step s keeps the
    ceil(s/steps · N) most salient pixels, s = 0..steps (ties by pixel order)."""
    flat = saliency.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    masks = []
    for s in range(steps + 1):
        k = int(np.ceil(s / steps * flat.size))
        m = np.zeros(flat.size, dtype=bool)
        m[order[:k]] = True
        masks.append(m.reshape(saliency.shape))
    return masks


def curve_auc(values: Values) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    v = np.asarray(values, float)
    return float(((v[1:] + v[:-1]) / 2).sum() / (len(v) - 1))


def deletion_insertion_images(pixels: np.ndarray, saliency: np.ndarray, steps: int,
                              deleted: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """RISE-style image sequences (s = 0..steps, float pixels): ``deletion[s]`` is the image
    with its ceil(s/steps · N) most salient pixels set to ``deleted``; ``insertion[s]`` is a
    ``deleted`` canvas with those pixels taken from the image."""
    img = pixels.astype(np.float64)
    masks = np.stack(deletion_insertion_orders(saliency, steps))[..., None]
    deletion = np.where(masks, deleted, img[None])
    insertion = np.where(masks, img[None], deleted)
    return deletion, insertion


# --- ROAD and ARCC (the metrics of pytorch-grad-cam that the audit lacked) -----------------
#: The audit's opt-in metrics (``ort-cam audit --metrics``, ``AuditSpec.metrics``) and the
#: record fields (also the summary's metric names) each adds per method. ROAD: MoRF, LeRF and
#: combined at ``ROAD_PERCENTILES``; ARCC: complexity, coherency, ROAD combined at
#: ``ARCC_ROAD_PERCENTILES`` and their harmonic mean.
EXTRA_METRICS: dict[str, tuple[str, ...]] = {
    "road": ("road_morf", "road_lerf", "road_combined"),
    "arcc": ("complexity", "coherency", "arcc_road", "arcc"),
    # Quantus's (quantus_metrics, below)
    "sparseness": ("sparseness",),
    "complexity": ("entropy_complexity",),
    "faithfulness_correlation": ("faithfulness_correlation",),
    "random_logit": ("random_logit",),
}
#: ROAD's percentiles (pytorch-grad-cam's ROADCombined default) and ARCC's.
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ARCC_ROAD_PERCENTILES = (20, 40, 60, 80)
#: The noisy linear imputation's neighbours (ROAD, Rong et al. 2022): the 4 edge neighbours
#: weigh 1/6, the 4 diagonal ones 1/12.
_NEIGHBOURS = tuple(((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def road_removed(saliency: np.ndarray, percentile: float, most_relevant: bool) -> np.ndarray:
    """The pixels ROAD removes at ``percentile`` p (True = removed), as pytorch-grad-cam:
    MoRF removes L ≥ the p-th percentile of L (the most relevant 100 − p %); LeRF does the
    same on 1 − L (the least relevant)."""
    s = saliency if most_relevant else 1.0 - saliency
    return s >= np.percentile(s, percentile)


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = a[y + dy, x + dx], 0 outside the grid."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = \
        a[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    return out


def _neighbour_sum(a: np.ndarray) -> np.ndarray:
    """Σ_n w_n a[y + dy_n, x + dx_n] over ``_NEIGHBOURS`` (0 outside the grid)."""
    out = np.zeros_like(a)
    for (dy, dx), w in _NEIGHBOURS:
        out += w * _shift(a, dy, dx)
    return out


def noisy_linear_impute(image: np.ndarray, removed: np.ndarray, noise: float = 0.0,
                        rng: np.random.Generator | None = None, solver: str = "auto",
                        tol: float = 1e-8) -> np.ndarray:
    """ROAD's noisy linear imputation: every removed pixel becomes the weighted mean of its
    in-grid neighbours (``_NEIGHBOURS``), removed neighbours being unknowns of the same
    sparse linear system, solved for all at once; then ``noise`` · N(0, 1) is added to them.
    ``image`` H×W or H×W×C, in any space: the imputation is affine-equivariant per channel,
    the noise is in the image's units.

    ``solver``: ``direct`` (SciPy's sparse LU, as pytorch-grad-cam; a second or two at 224²),
    ``cg`` (NumPy only: conjugate gradients to ``tol`` relative residual from the solution on
    a grid half the size; slower on large removed regions), ``auto`` (direct when SciPy is
    installed, which ort_cam does not require)."""
    img = np.asarray(image, np.float64)
    img3 = img[..., None] if img.ndim == 2 else img
    unknown = removed.astype(bool)
    out = _impute(img3, unknown, road_solver(solver), tol)
    if noise and unknown.any():
        gen = rng if rng is not None else np.random.default_rng(0)
        out = out + unknown[..., None] * noise * gen.standard_normal(out.shape)
    return out[..., 0] if img.ndim == 2 else out


def road_solver(solver: str = "auto") -> str:
    """The solver ``noisy_linear_impute`` uses for ``solver``: ``auto`` is ``direct`` where
    SciPy imports, else ``cg`` (audit.json records which, as ``road_solver``)."""
    if solver not in ("auto", "direct", "cg"):
        raise ValueError(f"unknown solver {solver!r}; use auto, direct or cg")
    if solver != "auto":
        return solver
    return "direct" if importlib.util.find_spec("scipy") is not None else "cg"


def _impute(img: np.ndarray, unknown: np.ndarray, solver: str, tol: float) -> np.ndarray:
    """The noiseless imputation of H×W×C ``img`` at ``unknown``."""
    if not unknown.any() or unknown.all():
        fill = img[~unknown].mean(axis=0) if (~unknown).any() else np.zeros(img.shape[-1])
        return np.where(unknown[..., None], fill, img)
    known = np.where(unknown[..., None], 0.0, img)
    total = _neighbour_sum(np.ones(unknown.shape))[..., None]  # in-grid weight
    rhs = _neighbour_sum(known)
    if solver == "direct":
        return _direct(known, unknown, total[..., 0], rhs)
    mask = unknown[..., None].astype(np.float64)

    def apply(v: np.ndarray) -> np.ndarray:  # (D − W_uu) v on the unknowns
        return mask * (total * v - _neighbour_sum(v))

    start = mask * _coarse_guess(img, unknown, tol)
    return known + _conjugate_gradients(apply, mask * rhs, start, tol)


def _direct(known: np.ndarray, unknown: np.ndarray, total: np.ndarray,
            rhs: np.ndarray) -> np.ndarray:
    """The same system, assembled sparse and solved by SciPy's LU."""
    sparse = importlib.import_module("scipy.sparse")  # optional: no static import
    spsolve = importlib.import_module("scipy.sparse.linalg").spsolve
    h, w = unknown.shape
    index = np.full((h, w), -1)
    ys, xs = np.nonzero(unknown)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, vals = [np.arange(len(ys))], [np.arange(len(ys))], [total[ys, xs]]
    for (dy, dx), wgt in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ok[ok] &= unknown[ny[ok], nx[ok]]
        rows.append(np.flatnonzero(ok))
        cols.append(index[ny[ok], nx[ok]])
        vals.append(np.full(int(ok.sum()), -wgt))
    a = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(len(ys), len(ys))).tocsc()
    solved = spsolve(a, rhs[ys, xs])
    out = known.copy()
    out[ys, xs] = solved.reshape(len(ys), -1)
    return out


def _coarse_guess(img: np.ndarray, unknown: np.ndarray, tol: float) -> np.ndarray:
    """The imputation on the grid of 2×2 blocks (a block is known where any of its pixels
    is, with their mean), repeated back to full size: a start near the solution, so that the
    conjugate gradients need few steps even for large removed regions."""
    h, w = unknown.shape
    if min(h, w) < 8:
        return np.zeros_like(img)
    hh, ww = (h + 1) // 2, (w + 1) // 2
    pad = ((0, 2 * hh - h), (0, 2 * ww - w))
    k = np.pad(~unknown, pad).reshape(hh, 2, ww, 2).astype(np.float64)
    v = np.pad(np.where(unknown[..., None], 0.0, img), (*pad, (0, 0)))
    count = k.sum(axis=(1, 3))
    sums = v.reshape(hh, 2, ww, 2, -1).sum(axis=(1, 3))
    coarse = _impute(sums / np.maximum(count, 1)[..., None], count == 0, "cg", tol)
    return coarse.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]


def _conjugate_gradients(apply: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray,
                         start: np.ndarray, tol: float) -> np.ndarray:
    """Solve apply(v) = rhs (symmetric positive definite on the unknowns) from ``start``."""
    v = start.copy()
    r = rhs - apply(v)
    p = r.copy()
    rr = float((r * r).sum())
    stop = tol * tol * max(float((rhs * rhs).sum()), np.finfo(float).tiny)
    for _ in range(10 * r.size):
        if rr <= stop:
            break
        ap = apply(p)
        step = rr / float((p * ap).sum())
        v += step * p
        r -= step * ap
        rr, rr_old = float((r * r).sum()), rr
        p = r + (rr / rr_old) * p
    return v


def road_scores(score: Callable[[np.ndarray], np.ndarray], image: np.ndarray, saliency: np.ndarray,
                percentiles: Sequence[float] = ROAD_PERCENTILES, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> dict[str, float]:
    """ROAD (Rong, Leemann, Borisov, Kasneci, Kasneci 2022, "A Consistent and Efficient
    Evaluation Strategy for Attribution Methods", ICML), as pytorch-grad-cam's ROADCombined.

    ``score(images)`` gives the class score of each image of a batch [n, H, W, C]. For each
    percentile, MoRF and LeRF impute their removed pixels (``noisy_linear_impute``) and
    record score(imputed) − score(image); ``morf``/``lerf`` are the means over the
    percentiles (lower MoRF, higher LeRF: better), ``combined`` = (lerf − morf)/2.
    ``road_imputed`` and ``road_from_scores`` are its two halves, for scoring in one batch."""
    base = float(np.asarray(score(image[None]))[0])
    morf, lerf = road_imputed(image, saliency, percentiles, noise, rng)
    return road_from_scores(base, score(morf), score(lerf))


def road_imputed(image: np.ndarray, saliency: np.ndarray,
                 percentiles: Sequence[float] = ROAD_PERCENTILES, noise: float = 0.0,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ROAD's images: (MoRF, LeRF), each [len(percentiles), H, W, C], one per percentile."""
    return tuple(np.stack([noisy_linear_impute(image, road_removed(saliency, p, most), noise,
                                               rng) for p in percentiles])
                 for most in (True, False))  # type: ignore[return-value]


def road_from_scores(base: float, morf: Values, lerf: Values) -> dict[str, float]:
    """ROAD from the scores of the image (``base``) and of its MoRF and LeRF images."""
    out = {key: float(np.mean(np.asarray(v, float) - base))
           for key, v in (("morf", morf), ("lerf", lerf))}
    out["combined"] = (out["lerf"] - out["morf"]) / 2
    return out


def complexity(saliency: np.ndarray) -> float:
    """ARCC's complexity: the mean |L| over the pixels (0: an empty map, 1: all ones)."""
    return float(np.abs(saliency).mean())


def coherency(saliency: np.ndarray, saliency_again: np.ndarray) -> float:
    """ARCC's coherency: (ρ + 1)/2, ρ the Pearson correlation (ddof 1, ε = 1e-8 in the
    denominator, as pytorch-grad-cam) of the map and the map the same method gives for the
    input multiplied by that map."""
    a = saliency.reshape(-1) - saliency.mean()
    b = saliency_again.reshape(-1) - saliency_again.mean()
    n = a.size - 1
    rho = (a * b).sum() / n / (np.sqrt((a * a).sum() / n) * np.sqrt((b * b).sum() / n) + 1e-8)
    return float((rho + 1) / 2)


def arcc(complexity_value: float, coherency_value: float, road_combined: float) -> float:
    """ARCC (Domeniconi, Stramiglio, Lombardi, Salti 2026, "How to Evaluate and Refine your
    CAM", arXiv:2605.14641): the harmonic mean of coherency, 1 − complexity and ROAD
    rescaled to [0, 1] (clip(2·combined, 0, 1); combined lies in [−1/2, 1/2] for
    probabilities), each with ε = 1e-8 as pytorch-grad-cam."""
    road = min(max(2 * road_combined, 0.0), 1.0)
    return 3 / (1 / (coherency_value + 1e-8) + 1 / ((1 - complexity_value) + 1e-8)
                + 1 / (road + 1e-8))


# --- The metrics of Quantus that the audit lacked (Hedström et al. 2023, quantus 0.6.0) ------
#: Quantus's Sparseness adds this to the map before its Gini index (keeps an empty map finite).
SPARSENESS_EPS = 1e-7
#: Quantus's Complexity: log(share + this).
ENTROPY_EPS = 1e-12
#: FaithfulnessCorrelation's defaults: 100 random subsets of 224 input features each.
FAITHFULNESS_RUNS, FAITHFULNESS_SUBSET = 100, 224
#: RandomLogit's default seed (its other class is drawn after np.random.seed(seed)).
RANDOM_LOGIT_SEED = 42
#: The seed of the faithfulness correlation's subsets (drawn again for every image).
FAITHFULNESS_SEED = 0


def _by_max(saliency: np.ndarray) -> np.ndarray:
    """Quantus's ``normalise_by_max``: L / max |L| (an all-zero map as it is)."""
    a = np.asarray(saliency, np.float64)
    m = float(np.abs(a).max())
    return a if m == 0 else a / m


def sparseness(saliency: np.ndarray) -> float:
    """Sparseness (Chalasani et al. 2020), as ``quantus.Sparseness``: the Gini index of the
    map's absolute values (normalised by their maximum, plus SPARSENESS_EPS), from 0 (all
    equal) to 1 (one pixel holds everything)."""
    a = np.sort(np.abs(_by_max(saliency)).reshape(-1) + SPARSENESS_EPS)
    n = a.size
    k = np.arange(1, n + 1)
    return float(((2 * k - n - 1) * a).sum() / (n * a.sum()))


def entropy_complexity(saliency: np.ndarray) -> float:
    """Complexity (Bhatt et al. 2020), as ``quantus.Complexity``: the entropy of the pixels'
    shares |L| / Σ|L| (log(share + ENTROPY_EPS)); log N for a flat map of N pixels, lower is
    simpler."""
    a = np.abs(_by_max(saliency)).reshape(-1)
    total = a.sum()
    if total == 0:
        return float("nan")
    p = a / total
    return float(-(p * np.log(p + ENTROPY_EPS)).sum())


def faithfulness_subsets(n_features: int, runs: int = FAITHFULNESS_RUNS,
                         subset: int = FAITHFULNESS_SUBSET,
                         rng: np.random.RandomState | None = None) -> np.ndarray:
    """The random subsets of FaithfulnessCorrelation, [runs, subset] feature indices, drawn
    as Quantus draws them (``choice(n, subset, replace=False)``, one per run)."""
    gen = rng if rng is not None else np.random.RandomState(0)
    return np.stack([gen.choice(n_features, subset, replace=False) for _ in range(runs)])


def faithfulness_correlation(score: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                             saliency: np.ndarray, subsets: np.ndarray,
                             chunk: int = 16) -> float:
    """Faithfulness correlation (Bhatt et al. 2020), as ``quantus.FaithfulnessCorrelation``:
    the Pearson correlation, over the random ``subsets`` of input features, between the map's
    sum over a subset and how much ``score`` drops when the subset is set to the image's
    minimum (Quantus's "black").

    ``image`` H×W×C; its features are numbered channel first (index c·H·W + y·W + x, as
    Quantus flattens [C, H, W] inputs), each weighing the map at its pixel. ``score`` gives
    the class score of each image of a batch [k, H, W, C]; ``chunk`` images are scored at a
    time."""
    img = np.asarray(image, np.float64)
    h, w, c = img.shape
    chw = img.transpose(2, 0, 1).reshape(-1)
    weights = np.broadcast_to(np.asarray(saliency, np.float64)[None], (c, h, w)).reshape(-1)
    base = float(np.asarray(score(img[None]))[0])
    black = chw.min()
    drops: list[float] = []
    for i in range(0, len(subsets), chunk):
        batch = np.repeat(chw[None], len(subsets[i:i + chunk]), axis=0)
        for row, idx in zip(batch, subsets[i:i + chunk]):
            row[idx] = black
        imgs = batch.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        drops.extend(base - np.asarray(score(imgs), np.float64))
    return pearson(weights[subsets].sum(axis=1), np.asarray(drops))


def other_class(target: int, n_classes: int, seed: int = RANDOM_LOGIT_SEED) -> int:
    """RandomLogit's other class for an image explained for ``target``, drawn as
    ``quantus.RandomLogit`` draws it for a batch of one: after ``np.random.seed(seed)``, index
    randint(0, C − 1) among the classes other than ``target`` (the same index for every image
    with one seed)."""
    index = int(np.random.RandomState(seed).randint(0, n_classes - 1))
    return index + (index >= target)


def random_logit(saliency: np.ndarray, other: np.ndarray) -> float:
    """Random logit (Sixt et al. 2020), as ``quantus.RandomLogit``: SSIM of the map for the
    explained class and the map for another class (``other_class``), each normalised by its
    maximum, with the data range of the two; high means the map ignores the class. As in
    Quantus, the maps are flattened row by row first, so the SSIM is that of two 1-D
    signals (windows of 7 consecutive pixels of a row, or across a row's end)."""
    a, b = _by_max(saliency).reshape(-1), _by_max(other).reshape(-1)
    both = np.concatenate([a, b])
    return ssim(a, b, data_range=float(abs(both.max() - both.min())))


def quantus_metrics(names: Sequence[str], saliency: np.ndarray, image: np.ndarray,
                    score: Callable[[np.ndarray], np.ndarray],
                    explain_other: Callable[[int], np.ndarray], n_classes: int,
                    target: int) -> dict[str, float]:
    """Those of Quantus's metrics in ``names`` (``--metrics``: sparseness, complexity,
    faithfulness_correlation, random_logit) for one map of ``image`` (H×W×C pixels), explained
    for ``target``: ``score`` scores a batch of pixel images, ``explain_other(k)`` gives the
    same method's map for class k."""
    out: dict[str, float] = {}
    if "sparseness" in names:
        out["sparseness"] = sparseness(saliency)
    if "complexity" in names:
        out["entropy_complexity"] = entropy_complexity(saliency)
    if "faithfulness_correlation" in names:
        subsets = faithfulness_subsets(image.size, rng=np.random.RandomState(FAITHFULNESS_SEED))
        out["faithfulness_correlation"] = faithfulness_correlation(score, image, saliency,
                                                                   subsets)
    if "random_logit" in names and n_classes > 1:
        other = explain_other(other_class(target, n_classes))
        out["random_logit"] = random_logit(saliency, other)
    return out
