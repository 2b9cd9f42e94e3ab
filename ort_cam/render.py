"""Pictures: heat-map overlays and the per-image panel (input + one overlay per method)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .methods import METHODS
from .result import COMPLETENESS_GAP, GAP_NOTATION_ABOVE, Explanation

COLORMAP = "jet"
#: Panels per row: more methods than fit (the input takes one) wrap onto further rows.
PANEL_COLUMNS = 6


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.5,
            cmap: str = COLORMAP) -> np.ndarray:
    """Blend a normalised map over an H×W×3 uint8 image with a matplotlib colormap (the image
    alone where the map is NaN: outside what the model saw)."""
    import matplotlib

    missing = np.isnan(heat)
    colors = matplotlib.colormaps[cmap](np.clip(np.where(missing, 0.0, heat), 0.0, 1.0))[..., :3]
    weight = np.where(missing, 0.0, alpha)[..., None] if missing.any() else alpha
    out = (1 - weight) * pixels.astype(np.float64) / 255.0 + weight * colors
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def class_text(r: Explanation) -> str:
    """'label (index), score' with a saturated probability written as 1 − (1 − p); for a
    target of another kind, the kind, its class where it has one, and its value."""
    name = f"{r.label} ({r.target})" if r.label else f"class {r.target}"
    if r.target_record is not None:
        what = r.target_kind if r.target is None else f"{r.target_kind} {name}"
        return f"{what}, {r.score_mode} Σ {r.score:.4g}"
    if r.score_mode == "probability" and r.score > GAP_NOTATION_ABOVE:
        # near 1: 1 − p says how far, where 4 digits would only show "1"
        gap = 1 - r.score
        return f"{name}, p = 1 − {gap:.1e}" if gap > 0 else f"{name}, p = 1 (to float32)"
    return f"{name}, {r.score_mode} {r.score:.4g}"


def extra_text(name: str, value: float) -> str:
    """A method's extra scalar as its panel shows it: the completeness gap in percent."""
    if name == COMPLETENESS_GAP:
        return f"completeness gap {100 * value:.2g}%"
    return f"{name.replace('_', ' ')} {value:.4g}"


def preload() -> None:
    """Import what the panel draws with (matplotlib, ~0.6 s) in a background thread, so that
    it is done by the time the first panel is drawn: the explanation runs meanwhile, mostly
    inside onnxruntime, which releases the GIL. Python's import lock makes the panel's own
    import wait for this one; a failed import here is left for that one to report."""
    import threading

    def load() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except Exception:  # noqa: BLE001, S110 (the panel's own import reports it)
            pass

    threading.Thread(target=load, name="ort-cam-preload", daemon=True).start()


def save_panel(r: Explanation, path: Path, title: str | None = None,
               box: tuple[int, int, int, int] | None = None, original: bool = False) -> Path:
    """The input and one overlay per method side by side, with class, score and the method's
    extras (e.g. RSI's completeness gap); dark maps are marked; ``box`` (x0, y0, x1, y1) is
    outlined on each. With ``original``: the original image and the maps on it
    (``Explanation.photo_map``) instead of the model's input."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if r.pixels is None:
        raise ValueError("the explanation has no pixel image (it came from explain_array)")
    names = list(r.methods)
    fig, axes = _panel_axes(Figure, 1 + len(names))
    image = np.asarray(r.photo) if original else r.pixels
    axes[0].imshow(image)
    axes[0].set_title(f"input\n{class_text(r)}\n", fontsize=9)
    for ax, name in zip(axes[1:], names):
        res = r.methods[name]
        ax.imshow(overlay(image, r.photo_map(name) if original else res.map))
        notes = [extra_text(k, v) for k, v in res.extras.items()]
        if res.dark:
            notes.append("dark map (max − min < ε)")
        lines = [METHODS[name].title, class_text(r), ", ".join(notes)]
        ax.set_title("\n".join(lines), fontsize=9, color="firebrick" if res.dark else "black")
    for ax in axes:
        if box is not None:
            _outline(ax, box, "white", "--")
        if not original:
            _draw_target(ax, r, image.shape[:2])
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.5, 0.01, title or f"{r.layer}  (m = {r.steps})", fontsize=8, ha="center",
             va="bottom", color="dimgray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    return path


def _outline(ax, box, color: str, style: str = "-") -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                           edgecolor=color, linewidth=1.5, linestyle=style))


def _draw_target(ax, r: Explanation, size: tuple[int, int]) -> None:
    """The target chosen at x on a panel of the model's input: a segment target's mask as a
    contour (its grid stretched to the input, nearest), a detection's boxes."""
    if r.target_mask is not None and r.target_mask.any() and not r.target_mask.all():
        mask = r.target_mask.astype(np.float64)
        rows = (np.arange(size[0]) * mask.shape[0] // size[0]).clip(0, mask.shape[0] - 1)
        cols = (np.arange(size[1]) * mask.shape[1] // size[1]).clip(0, mask.shape[1] - 1)
        ax.contour(mask[np.ix_(rows, cols)], levels=[0.5], colors="white", linewidths=1.2)
    if r.target_boxes is not None:
        for b in r.target_boxes:
            _outline(ax, b, "white")


def _panel_axes(figure: type, n: int) -> tuple:
    """A figure of ``n`` panels (one row up to ``PANEL_COLUMNS``, else rows of that many,
    the unused places blank) and the first ``n`` axes."""
    if n <= PANEL_COLUMNS:
        fig = figure(figsize=(3.2 * n, 4.2), dpi=100)
        return fig, fig.subplots(1, n)
    rows = -(-n // PANEL_COLUMNS)
    fig = figure(figsize=(3.2 * PANEL_COLUMNS, 4.2 * rows), dpi=100)
    axes = fig.subplots(rows, PANEL_COLUMNS).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]
