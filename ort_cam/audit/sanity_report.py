"""The sanity checks in the summary and the report: per method and step the mean and 95% CI of
each similarity to the audited model's maps, the methods flagged, the printed lines, and the
report's section (the similarity curves as layers are randomised, Adebayo et al.'s Fig. 2
gallery of one image's maps down the cascade, the table).

A dark map (range below ε: a network whose signal died out gives one) has no similarity:
its records hold NaN and ``dark``, the means leave it out and count it apart.
A method is flagged when its maps stay similar as the weights are randomised: the median,
over the steps that give maps, of the mean Spearman rank correlation (absolute values,
Quantus's default) of its maps with the audited model's is at least ``SIMILAR_ABOVE`` (the
cascade's last steps alone would not do: deep networks with every layer redrawn give dark
maps), or that correlation for the model trained on shuffled labels. SSIM is not used to
flag: two maps that are both flat over most of the image score near 1 there whatever their
peaks.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .similarity import NAMES
from .store import SANITY, SANITY_GALLERY, SANITY_ORIGINAL, SANITY_RESULTS, read_results
from .summary import mean_ci

SIMILAR_ABOVE = 0.5
LABELS = {"spearman_abs": "Spearman rank correlation (absolute values)",
          "spearman": "Spearman rank correlation", "ssim": "SSIM", "hog": "HOG similarity"}
#: The gallery shows at most this many steps (evenly spread, the last always among them).
GALLERY_STEPS = 10


def read_sanity(out: Path) -> list[dict]:
    return read_results(out / SANITY / SANITY_RESULTS)


def summarize_sanity(settings: dict, records: list[dict]) -> dict:
    """summary.json's ``sanity``: per step the similarities' mean and CI per method, and the
    checks' verdicts."""
    methods = settings["methods"]
    by_step: dict[int, list[dict]] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    steps = []
    for k in sorted(by_step):
        recs = by_step[k]
        steps.append({"step": k, "layer": recs[0]["layer"], "op": recs[0]["op"],
                      "randomised": recs[0].get("randomised"), "images": len(recs),
                      "methods": {m: _step_stats(recs, m) for m in methods}})
    mode = settings["sanity"]["mode"]
    checks = {}
    randomised = [s for s in steps if s["op"] != "data"]
    if randomised:
        checks["parameters"] = _verdict(randomised, methods, True)
    data = [s for s in steps if s["op"] == "data"]
    if data:
        checks["data"] = _verdict(data, methods, False)
    return {"mode": mode, "seed": settings["sanity"]["seed"],
            "every": settings["sanity"].get("every", 1), "similar_above": SIMILAR_ABOVE,
            "steps": steps, "checks": checks}


def _step_stats(recs: list[dict], m: str) -> dict:
    """Mean and CI of each similarity of method ``m`` over the images of a step (dark maps,
    which have none, left out) and how many of its maps were dark."""
    mine = [r["methods"][m] for r in recs if m in r["methods"]]
    return {**{n: mean_ci([v[n] for v in mine], (-1.0, 1.0)) for n in NAMES},
            "dark": sum(bool(v.get("dark")) for v in mine)}


def _verdict(steps: list[dict], methods: list[str], median: bool) -> dict:
    """The final similarities per method (the last step's means, or the median of the steps'
    means) and the methods flagged."""
    final: dict[str, dict[str, float | None]] = {}
    for m in methods:
        final[m] = {}
        for n in (*NAMES, "dark"):
            means = [s["methods"][m][n] if n == "dark" else s["methods"][m][n]["mean"]
                     for s in steps]
            finite = [v for v in means if v is not None]
            if median:
                final[m][n] = float(np.median(finite)) if finite else None
            else:
                final[m][n] = means[-1]
    flagged = [m for m in methods if (final[m]["spearman_abs"] or -1.0) >= SIMILAR_ABOVE]
    return {"final": final, "flagged": flagged,
            "over": f"median over the {len(steps)} steps" if median else steps[-1]["layer"]}


def sanity_lines(sanity: dict | None, titles: dict[str, str]) -> list[str]:
    """The printed summary of the checks."""
    if not sanity:
        return []
    lines = []
    for check, v in sanity["checks"].items():
        what = ("model-parameter randomisation, " + sanity["mode"]) if check == "parameters" \
            else "data randomisation"
        lines.append(f"sanity ({what}; {v['over']}): similarity to the audited maps")
        for m, f in v["final"].items():
            vals = "  ".join(f"{n} {_fmt(f[n])}" for n in NAMES)
            vals += f"  dark {f['dark']:g}" if f["dark"] else ""
            flag = "  FLAGGED: maps stay similar" if m in v["flagged"] else ""
            lines.append(f"  {titles.get(m, m)}: {vals}{flag}")
    return lines


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _png(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


def plot_curves(sanity: dict, methods: list[str], style: dict) -> str:
    """Mean similarity per method against the step (the audited model first, at 1)."""
    from matplotlib.figure import Figure

    steps = sanity["steps"]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    x = np.arange(len(steps) + 1)
    names = ["original", *(_short(s["layer"]) for s in steps)]
    every = max(1, len(names) // 24)
    for ax, n in zip(fig.subplots(1, len(NAMES)), NAMES):
        for m in methods:
            y = [1.0] + [np.nan if s["methods"][m][n]["mean"] is None
                         else s["methods"][m][n]["mean"] for s in steps]
            ax.plot(x, y, "o-", ms=3, color=style[m][1], label=style[m][0])
        ax.axhline(SIMILAR_ABOVE if n == "spearman_abs" else 0.0, color="gray", lw=0.8, ls=":")
        ax.set_xticks(x[::every], names[::every], rotation=90, fontsize=6)
        ax.set(ylim=(-0.2, 1.05))
        ax.set_title(f"{LABELS[n]} (mean over images)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    return _png(fig)


def _short(layer: str) -> str:
    return layer if len(layer) <= 28 else "…" + layer[-27:]


def gallery_steps(sanity: dict) -> list[int]:
    """The steps the gallery shows: SANITY_ORIGINAL, then at most GALLERY_STEPS evenly spread."""
    ks = [s["step"] for s in sanity["steps"]]
    if len(ks) > GALLERY_STEPS:
        picks = np.linspace(0, len(ks) - 1, GALLERY_STEPS).round().astype(int)
        ks = [ks[i] for i in sorted(set(picks))]
    return [SANITY_ORIGINAL, *ks]


def plot_gallery(out: Path, sanity: dict, methods: list[str], style: dict) -> str | None:
    """The first image's maps (rows: methods) as the model is randomised (columns)."""
    from matplotlib.figure import Figure

    from ..render import overlay

    folder = out / SANITY / SANITY_GALLERY
    ks = [k for k in gallery_steps(sanity) if (folder / f"{k}.npz").exists()]
    if SANITY_ORIGINAL not in ks or len(ks) < 2:
        return None
    layer = {s["step"]: s["layer"] for s in sanity["steps"]}
    panels = {k: np.load(folder / f"{k}.npz") for k in ks}
    pixels = panels[SANITY_ORIGINAL]["pixels"]
    fig = Figure(figsize=(1.3 * len(ks) + 1, 1.4 * len(methods) + 0.6), layout="constrained")
    axes = fig.subplots(len(methods), len(ks), squeeze=False)
    for row, m in zip(axes, methods):
        for ax, k in zip(row, ks):
            if m in panels[k]:
                ax.imshow(overlay(pixels, panels[k][m] / 255.0))
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(style[m][0], fontsize=7)
    for ax, k in zip(axes[0], ks):
        ax.set_title("original" if k == SANITY_ORIGINAL else _short(layer[k]), fontsize=6)
    return _png(fig)


def sanity_table(sanity: dict, methods: list[str], style: dict) -> str:
    rows = []
    for check, v in sanity["checks"].items():
        what = (f"parameters randomised ({sanity['mode']}, seed {sanity['seed']}): "
                f"{v['over']}") if check == "parameters" else f"data randomised: {v['over']}"
        head = "".join(f"<th>{LABELS[n]}</th>" for n in NAMES)
        rows.append(f"<tr><th class=l>{html.escape(what)}</th>{head}<th>dark maps "
                    f"(no similarity)</th><th>flag</th></tr>")
        for m in methods:
            cells = "".join(f"<td>{_fmt(v['final'][m][n])}</td>" for n in NAMES)
            cells += f"<td>{v['final'][m]['dark']:g}</td>"
            flag = (f"maps stay similar (Spearman ≥ {SIMILAR_ABOVE})"
                    if m in v["flagged"] else "")
            rows.append(f"<tr><th class=l>{html.escape(style[m][0])}</th>{cells}"
                        f"<td>{flag}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def sanity_section(out: Path, sanity: dict | None, methods: list[str],
                   style: dict[str, tuple[str, str | None]]) -> list[str]:
    """The report's section (``style``: method -> (title, colour))."""
    if not sanity or not sanity["steps"]:
        return []
    parts = ["<h2>Sanity checks (Adebayo et al. 2018): similarity of each method's maps to "
             "the audited model's as the model is randomised</h2>",
             sanity_table(sanity, methods, style),
             f"<img src='data:image/png;base64,{plot_curves(sanity, methods, style)}'>"]
    png = plot_gallery(out, sanity, methods, style)
    if png:
        parts += ["<h3>One image's maps down the randomisation</h3>",
                  f"<img src='data:image/png;base64,{png}'>"]
    return parts
