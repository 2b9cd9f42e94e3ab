"""report.html: one self-contained page (plots embedded as base64 PNGs) with the summary
tables, the RSI paper's plots (Figs 13, 15, 16–21), threshold and deletion/insertion curves,
and a gallery of the best and worst images per method."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from ..methods import METHODS
from .metrics import DARK_EPS, MASK_TOP, THRESHOLDS, top_label
from .pointing import ROWS as POINTING_ROWS
from .sanity_report import sanity_section
from .store import THUMBS
from .summary import EXTRA_ROWS, SPLITS, split_records

#: Rows of the summary tables: (summary name, label); ``table_rows`` names the mask rows by the
#: mask's share and adds the methods' extras.
TABLE = [("average_drop_soft_pct", "Average Drop %, soft map E = L ⊙ I (lower is better)"),
         ("increase_soft_pct", "Increase in Confidence %, soft map (higher is better)"),
         ("average_drop_mask_pct", "Average Drop %, {top} mask (IG-CAM paper's Drop%)"),
         ("increase_mask_pct", "Increase in Confidence %, {top} mask (Increase%)"),
         ("energy", "Pixel energy in box (EBPG)"), ("bbox", "Bbox score"),
         ("iou@0.5", "IoU at t = 0.5"), ("iob@0.5", "IoB at t = 0.5"),
         ("ior@0.5", "IoR at t = 0.5"),
         ("deletion_auc", "Deletion AUC (lower is better)"),
         ("insertion_auc", "Insertion AUC (higher is better)"),
         ("raw_mean", "Mean of the raw map"), ("dark", "Share of dark maps (engine ε)")]
#: Figs 16–21: metric against predicted probability (summary name, axis label).
ROLLING = [("energy", "pixel energy"), ("bbox", "Bbox score"), ("iou@0.5", "IoU (t=0.5)"),
           ("iob@0.5", "IoB (t=0.5)"), ("ior@0.5", "IoR (t=0.5)"),
           ("average_drop_soft", "Average Drop (soft)"), ("increase_soft", "Increase (soft)"),
           ("insertion_auc", "insertion AUC")]
GALLERY = 4
#: Probabilities are drawn on a logit axis (saturated images crowd next to 1); p = 1 in float32
#: is drawn at 1 − P_CLIP.
P_CLIP = 1e-7


def window_size(n: int) -> int:
    """Rolling window of Figs 16–21: the paper's 1000 images of 12,525 is 8%; here 8% of
    the audited images, at least 5 and at most 1000 (and never more than there are)."""
    return max(1, min(n, 1000, max(5, round(0.08 * n))))


def rolling(x: np.ndarray, y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort by x; means of x and of the finite y over each window of ``w`` consecutive images."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    ok = np.isfinite(y)
    cs = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    cn = np.concatenate([[0], np.cumsum(ok)])
    cx = np.concatenate([[0.0], np.cumsum(x)])
    counts = cn[w:] - cn[:-w]
    with np.errstate(invalid="ignore", divide="ignore"):
        ym = (cs[w:] - cs[:-w]) / counts
    return (cx[w:] - cx[:-w]) / w, ym


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _values(recs, method, name) -> np.ndarray:
    from .summary import metric_values

    return np.array([np.nan if v is None else v for v in metric_values(recs, method, name)],
                    dtype=np.float64)


def plot_thresholds(recs, methods) -> str:
    fig = _figure(12, 3.2)
    for ax, m in zip(fig.subplots(1, 3), ("IoU", "IoB", "IoR")):
        for method in methods:
            means = [_nanmean(_values(recs, method, f"{m.lower()}@{t}")) for t in THRESHOLDS]
            ax.plot(THRESHOLDS, means, "o-", color=_color(method), label=_title(method))
        ax.set(xlabel="threshold t on the normalised map", ylabel=f"mean {m}",
               title=f"{m} against t", ylim=(0, 1))
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_raw_means(split_recs, methods) -> str:
    """Fig 13: boxplots of the mean raw map value per method, per split."""
    fig = _figure(12, 3.6)
    axes = fig.subplots(1, len(SPLITS), sharey=True)
    positive = [v for recs in split_recs.values() for m in methods
                for v in _values(recs, m, "raw_mean") if v > 0]
    for ax, split in zip(axes, SPLITS):
        data = [_values(split_recs[split], m, "raw_mean") for m in methods]
        data = [d[np.isfinite(d)] for d in data]
        if any(len(d) for d in data):
            ax.boxplot([d if len(d) else [np.nan] for d in data],
                       tick_labels=[_short(m) for m in methods])
        else:
            _no_images(ax)
        ax.set_title(f"{split} ({len(split_recs[split])} images)")
        if positive:
            ax.set_yscale("symlog", linthresh=min(positive))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean of the raw map (symlog)")
    return _png(fig)


def plot_dark(summary, methods) -> str:
    """Fig 15: dark-map counts against ε, log x, symlog y (so 0 shows)."""
    fig = _figure(12, 3.4)
    for ax, split in zip(fig.subplots(1, len(SPLITS), sharey=True), SPLITS):
        block = summary["splits"][split]
        for method in methods:
            counts = block["dark_counts"][method]
            ax.plot(DARK_EPS, [counts[f"{e:.0e}"] for e in DARK_EPS], "o-",
                    color=_color(method), label=_title(method))
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, max(1, summary["splits"]["all"]["images"]) * 1.5)  # y is shared
        ax.invert_xaxis()
        ax.set(xlabel="ε (max L − min L < ε)", title=f"{split} ({block['images']} images)")
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.axes[0].set_ylabel("dark maps")
    return _png(fig)


def plot_rolling(recs, methods, w: int) -> str:
    """Figs 16–21: metric against predicted probability, rolling means over ``w`` images."""
    p = np.array([r["p"] for r in recs], dtype=np.float64)
    fig = _figure(12, 6.4)
    axes = fig.subplots(2, 4).ravel()
    for ax, (name, label) in zip(axes, ROLLING):
        for method in methods:
            if len(p) >= w:
                x, y = rolling(p, _values(recs, method, name), w)
                ax.plot(np.clip(x, P_CLIP, 1 - P_CLIP), y, "-" if len(x) > 20 else "o-", ms=3,
                        color=_color(method), label=_title(method))
        _logit_axis(ax, p)
        ax.set(xlabel="p (window mean)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def plot_curves(recs, methods) -> str:
    fig = _figure(10, 3.4)
    for ax, kind in zip(fig.subplots(1, 2), ("deletion", "insertion")):
        for method in methods:
            curves = [r["methods"][method][kind] for r in recs if method in r["methods"]]
            if curves:
                c = np.array(curves, dtype=np.float64)
                ax.plot(np.linspace(0, 1, c.shape[1]), _nanmean(c, axis=0), "o-", ms=3,
                        color=_color(method), label=_title(method))
        ax.set(xlabel=f"share of pixels {'deleted' if kind == 'deletion' else 'inserted'}",
               ylabel="mean p of the predicted class", title=f"{kind} curve", ylim=(0, 1))
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def gallery_records(out: Path, recs, method) -> list[tuple[str, list[tuple[float, dict]]]]:
    """[("best", [(energy, record), ...]), ("worst", ...)] for ``method``: at most GALLERY
    each, never the same image twice, among the records whose thumbnail exists."""
    scored = [(r["methods"][method]["energy"], r) for r in recs
              if r.get("thumb") and method in r["methods"]
              and r["methods"][method]["energy"] is not None
              and (out / THUMBS / r["thumb"]).exists()]
    scored.sort(key=lambda t: (-t[0], t[1]["key"]))
    best = min(GALLERY, (len(scored) + 1) // 2)
    worst = min(GALLERY, len(scored) - best)
    rows = [("best", scored[:best]), ("worst", scored[::-1][:worst])]
    return [row for row in rows if row[1]]


def plot_gallery(out: Path, rows, method: str) -> str | None:
    """Overlays of the ``gallery_records`` rows, with the boxes."""
    from matplotlib.patches import Rectangle

    from ..render import overlay

    if not rows:
        return None
    best = len(rows[0][1])
    fig = _figure(2.2 * best, 2.6 * len(rows))
    axes = fig.subplots(len(rows), best, squeeze=False)
    for row, (kind, items) in zip(axes, rows):
        for ax, (energy, r) in zip(row, items):
            z = np.load(out / THUMBS / r["thumb"])
            ax.imshow(overlay(z["pixels"], z[method] / 255.0))
            sx, sy = z["scale"]
            for x0, y0, x1, y1 in r["boxes"]:
                ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0) * sx,
                                       (y1 - y0) * sy, fill=False, edgecolor="white", lw=1.2,
                                       ls="--"))
            name = Path(r["key"]).name
            ax.set_title(f"{kind}: {name[:18]}\n{r['label'] or r['target']} p={r['p']:.3f}\n"
                         f"energy {energy:.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(items):]:
            ax.axis("off")
    return _png(fig)


def _logit_axis(ax, p: np.ndarray) -> None:
    """A logit x axis over the probabilities ``p`` with a few readable ticks."""
    lo = float(np.clip(p.min(), P_CLIP, 0.5)) if len(p) else 0.1
    hi = float(np.clip(p.max(), 0.5, 1 - P_CLIP)) if len(p) else 0.9
    lo, hi = min(lo, 0.1), max(hi, 0.9)
    ax.set_xscale("logit")
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1 - 1e-5, 1 - 1e-6)
             if lo <= t <= hi]
    ax.set_xticks(ticks, [f"{t:.6g}" for t in ticks], fontsize=7, rotation=35)
    ax.minorticks_off()


def _no_images(ax) -> None:
    ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes,
            color="gray")
    ax.set_xticks([])


def _title(method: str) -> str:
    return METHODS[method].title if method in METHODS else method


def _short(method: str) -> str:
    return METHODS[method].short if method in METHODS else method


def _color(method: str) -> str | None:
    """The method's colour; None (matplotlib's cycle) for a method no longer registered."""
    return METHODS[method].color if method in METHODS else None


def table_rows(top: float = MASK_TOP) -> list[tuple[str, str]]:
    """TABLE with the mask named by its share ``top`` ("top-15% mask"), then a row per extra
    scalar of the registered methods ("RSI completeness gap")."""
    extras: dict[str, str] = {}
    for cls in METHODS.values():
        for e in cls.extras:  # the first method reporting an extra names its row
            extras.setdefault(e, f"{cls.short} {e.replace('_', ' ')}")
    return [(name, label.format(top=top_label(top))) for name, label in TABLE] + list(
        extras.items())


def _cell(stat: dict | None, images: int) -> str:
    if not stat or stat["mean"] is None:
        return "<td>–</td>"
    lo, hi = stat["ci95"]
    ci = f"<br><small>[{lo:.3g}, {hi:.3g}]</small>" if lo is not None else ""
    n = f"<small> n={stat['n']}</small>" if stat["n"] != images else ""
    return f"<td>{stat['mean']:.3g}{n}{ci}</td>"


def summary_table(summary: dict, methods: list[str], top: float = MASK_TOP) -> str:
    """One table: a row per metric; per split (all, saturated, unsaturated) a column per
    method with the mean and its 95% CI (n shown where it differs from the split's count);
    ``top``: the mask explanation map's share."""
    blocks = [summary["splits"][s] for s in SPLITS]
    heads = "".join(
        f"<th colspan={len(methods)}>{s}: {b['images']} images"
        + (f", correct {100 * b['correct']['mean']:.0f}%" if b["correct"]["mean"] is not None
           else "") + "</th>" for s, b in zip(SPLITS, blocks))
    names = "".join(f"<th>{html.escape(_title(m))}</th>" for m in methods) * len(SPLITS)
    rows = []
    present = blocks[0]["metrics"][methods[0]] if methods else {}
    for name, label in table_rows(top) + [r for r in POINTING_ROWS + EXTRA_ROWS
                                          if r[0] in present]:
        cells = "".join(_cell(b["metrics"][m].get(name), b["images"])
                        for b in blocks for m in methods)
        rows.append(f"<tr><th class=l>{html.escape(label)}</th>{cells}</tr>")
    return (f"<table><tr><th rowspan=2></th>{heads}</tr><tr>{names}</tr>"
            f"{''.join(rows)}</table>")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:center;font-size:13px}th.l{text-align:left;font-weight:normal}small{color:#666}
img{max-width:100%}h2{border-bottom:1px solid #ddd;margin-top:1.6em}.meta td{text-align:left}
.split{display:inline-block;vertical-align:top;margin-right:1.5em}"""


def write_html(out: Path, settings: dict, summary: dict, records: list[dict]) -> set[str]:
    """Write report.html; returns the thumbnails its gallery shows."""
    methods = settings["methods"]
    splits = split_records(records)
    recs = splits["all"]
    w = window_size(len(recs))
    about = settings.get("about", {})
    parts = [f"<h1>ort_cam audit: {html.escape(str(about.get('model', '')))}</h1>",
             "<table class=meta>" + "".join(
                 f"<tr><th class=l>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                 for k, v in meta_rows(settings, summary, w)) + "</table>",
             "<h2>Summary: mean and [95% CI]</h2>",
             summary_table(summary, methods, settings["explanation_top"])]
    shown: set[str] = set()
    if recs:
        parts += plot_sections(splits, summary, methods, w)
        for method in methods:
            rows = gallery_records(out, recs, method)
            shown |= {r["thumb"] for _, items in rows for _, r in items}
            png = plot_gallery(out, rows, method)
            if png:
                parts.append(f"<h3>{html.escape(_title(method))}</h3>"
                             f"<img src='data:image/png;base64,{png}'>")
    else:
        parts.append("<p>No image was audited yet.</p>")
    parts += sanity_section(out, summary.get("sanity"), methods,
                            {m: (_title(m), _color(m)) for m in methods})
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>ort_cam audit</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")
    return shown


def meta_rows(settings: dict, summary: dict, w: int) -> list[tuple[str, str]]:
    """The report's first table: what was audited, and how (``w``: the rolling window)."""
    about = settings.get("about", {})
    imgs = summary["images"]
    skipped = ", ".join(f"{k}: {v}" for k, v in imgs["skipped"].items()) or "none"
    return [
        ("model", f"{about.get('model', '?')} (sha256 {settings['model_sha256'][:12]}…)"),
        ("layer", settings["layer"]), ("score differentiated", settings["score"]),
        ("preprocessing", json.dumps(settings["preprocess"])),
        ("dataset", f"{about.get('dataset_path', '?')} ({settings['dataset']['format']}, "
                    f"{imgs['in_dataset']} images)"),
        ("shard", "/".join(map(str, imgs["shard"]))
         + (f" (merged from shards {about['merged_shards']})"
            if about.get("merged_shards") else "")),
        ("audited", f"{imgs['audited']} images; skipped: {skipped}"),
        ("filters", ", ".join(settings["filters"]) or "none"),
        ("path", f"steps {settings['steps']}, baseline {settings['baseline']}, "
                 f"options {json.dumps(settings['options'])}"),
        ("deletion / insertion", f"{settings['deletion_steps']} steps; deleted pixels "
         "and the insertion canvas are black (pixel value 0, the black baseline); ties "
         "in the map are ordered by pixel position"),
        ("probabilities", "every Y_c, O_c and curve value is the softmax probability of "
         "the predicted class c, whatever score is differentiated"),
        ("saturated", f"top probability > {settings['saturated_above']}"),
        ("rolling window", f"{w} images (8% of {imgs['audited']}, between 5 and 1000; "
                           "the paper used 1000 of 12,525)")] + grid_rows(settings)


def grid_rows(settings: dict) -> list[tuple[str, str]]:
    """Meta rows of a grid dataset (the pointing game) and of ``--targets labels``."""
    rows = []
    grid = settings["dataset"].get("grid")
    if grid:
        rows.append(("pointing game", f"{grid[0]}x{grid[1]} grids, one class per cell; "
                     "scores on the raw map upsampled to the model's input: positive "
                     "energy in the true cell, and whether the maximum lies there"))
    if settings.get("targets") == "labels":
        rows.append(("targets", "each labelled class of an image in turn (a line per image "
                     "and label, keyed image#label); c is that class, not the predicted one"))
    return rows


def plot_sections(splits: dict[str, list[dict]], summary: dict, methods: list[str],
                  w: int) -> list[str]:
    """The plots, each under its heading, up to the gallery."""
    recs = splits["all"]

    def img(png: str) -> str:
        return f"<img src='data:image/png;base64,{png}'>"

    return [
        "<h2>IoU, IoB and IoR against the threshold</h2>", img(plot_thresholds(recs, methods)),
        "<h2>Mean raw map values (RSI paper Fig 13)</h2>", img(plot_raw_means(splits, methods)),
        "<h2>Dark maps against ε (Fig 15)</h2>", img(plot_dark(summary, methods)),
        f"<h2>Metrics against predicted probability p (logit axis), rolling mean over {w} "
        "images (Figs 16–21)</h2>", img(plot_rolling(recs, methods, w)),
        "<h2>Deletion and insertion curves (mean over images)</h2>",
        img(plot_curves(recs, methods)),
        "<h2>Best and worst images per method (by pixel energy in the box)</h2>"]


def prune_thumbs(out: Path, keep: set[str]) -> None:
    """Delete the thumbnails the gallery does not show. Safe as results only grow (resume,
    merge): an image outside the best and worst GALLERY of a set stays outside them in any
    larger set, so no later gallery needs it."""
    folder = out / THUMBS
    if folder.is_dir():
        for p in folder.glob("*.npz"):
            if p.name not in keep:
                p.unlink()


def _nanmean(v: np.ndarray, axis=None):
    """Mean of the finite values (NaN where there are none), without RuntimeWarnings."""
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, v, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)
