"""Pictures: heat-map overlays and the per-image panel (input + one overlay per method).

Drawn with PIL (already loaded to read the images): the panel costs no matplotlib import. The
colours are matplotlib's ``jet``, rebuilt here from its definition (the same 256 colours)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .methods import METHODS
from .result import COMPLETENESS_GAP, GAP_NOTATION_ABOVE, Explanation

COLORMAP = "jet"
#: Panels per row: more methods than fit (the input takes one) wrap onto further rows.
PANEL_COLUMNS = 6
#: One panel's cell in pixels (matplotlib's 3.2 × 4.2 inches at 100 dpi, as before).
CELL_W, CELL_H = 320, 420
#: matplotlib's ``jet`` (``matplotlib._cm._jet_data``): per channel, (x, value) knots.
_JET = {"red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
        "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0),
                  (1.0, 0.0)),
        "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0))}
_N = 256
TITLE_PX, FOOTER_PX, LINE_PX = 13, 11, 15
FIREBRICK, DIMGRAY = (178, 34, 34), (105, 105, 105)


@lru_cache(maxsize=1)
def jet_table() -> np.ndarray:
    """The 256 RGB colours (float64 in [0, 1]) of matplotlib's ``jet``, computed as
    matplotlib's ``_create_lookup_table`` computes them (gamma 1)."""
    xind = (_N - 1) * np.linspace(0.0, 1.0, _N)
    channels = []
    for c in ("red", "green", "blue"):
        x, y = (np.array(v, dtype=float) for v in zip(*_JET[c]))
        x = x * (_N - 1)
        ind = np.searchsorted(x, xind)[1:-1]
        distance = (xind[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
        lut = np.concatenate([[y[0]], distance * (y[ind] - y[ind - 1]) + y[ind - 1], [y[-1]]])
        channels.append(np.clip(lut, 0.0, 1.0))
    return np.stack(channels, axis=1)


def colormap(values: np.ndarray, cmap: str = COLORMAP) -> np.ndarray:
    """RGB colours in [0, 1] of ``values`` in [0, 1]: ``jet`` as matplotlib picks its colours
    (index floor(256·v), 1 itself the last), another name through matplotlib."""
    if cmap != COLORMAP:
        import matplotlib

        return matplotlib.colormaps[cmap](values)[..., :3]
    index = np.minimum((values * _N).astype(np.int64), _N - 1)
    return jet_table()[index]


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.5,
            cmap: str = COLORMAP) -> np.ndarray:
    """Blend a normalised map over an H×W×3 uint8 image with a colormap (the image alone
    where the map is NaN: outside what the model saw)."""
    missing = np.isnan(heat)
    colors = colormap(np.clip(np.where(missing, 0.0, heat), 0.0, 1.0), cmap)
    weight = np.where(missing, 0.0, alpha)[..., None] if missing.any() else alpha
    out = (1 - weight) * pixels.astype(np.float64) / 255.0 + weight * colors
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def value_text(r: Explanation) -> str:
    """The target's value y at x as the panel and the CLI's line name it: a class's score
    (its reading: probability, sigmoid, logit, ReST score), a binary target's ±logit, an
    embedding's cosine, Σ w·output for weights given, else the sum over what was chosen (a
    mask's pixels, anchors, kept steps) of the scores S."""
    kind, v = r.target_kind, f"{r.score:.4g}"
    if kind == "binary":  # y = +z for class 1, −z for class 0
        return f"{'+' if r.target == 1 else '−'}logit {v}"
    if kind == "embedding":
        return f"cosine {v}"
    if kind == "any":
        return f"Σ w·output {v}"
    if kind == "class":
        return f"{'ReST score' if r.score_mode == 'rest' else r.score_mode} {v}"
    what = "score" if r.score_mode in ("output", "objectness") else r.score_mode
    return f"Σ {what} {v}"


def class_text(r: Explanation) -> str:
    """'label (index), score' with a saturated probability written as 1 − (1 − p); for a
    target of another kind, the kind, its class where it has one, and its value."""
    name = f"{r.label} ({r.target})" if r.label else f"class {r.target}"
    if r.target_record is not None:
        what = r.target_kind if r.target is None else f"{r.target_kind} {name}"
        return f"{what}, {value_text(r)}"
    if r.score_mode == "probability" and r.score > GAP_NOTATION_ABOVE:
        # near 1: 1 − p says how far, where 4 digits would only show "1"
        gap = 1 - r.score
        return f"{name}, p = 1 − {gap:.1e}" if gap > 0 else f"{name}, p = 1 (to float32)"
    return f"{name}, {value_text(r)}"


def extra_text(name: str, value: float) -> str:
    """A method's extra scalar as its panel shows it: the completeness gap in percent ("n/a"
    where it is not defined: NaN, y at x equals y at the baseline)."""
    if name == COMPLETENESS_GAP:
        return ("completeness gap n/a (y(x) = y(x0))" if np.isnan(value)
                else f"completeness gap {100 * value:.2g}%")
    return f"{name.replace('_', ' ')} {value:.4g}"


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (the font matplotlib draws with, from its data folder: found without
    importing it) at ``size`` pixels, else PIL's own default font."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def save_panel(r: Explanation, path: Path, title: str | None = None,
               box: tuple[int, int, int, int] | None = None, original: bool = False) -> Path:
    """The input and one overlay per method side by side, with class, score and the method's
    extras (e.g. RSI's completeness gap); dark maps are marked; ``box`` (x0, y0, x1, y1) is
    outlined on each. With ``original``: the original image and the maps on it
    (``Explanation.photo_map``) instead of the model's input. One row of cells (3.2 × 4.2
    inches at 100 dpi each) up to ``PANEL_COLUMNS``, else rows of that many."""
    if r.pixels is None:
        raise ValueError("the explanation has no pixel image (it came from explain_array)")
    image = np.asarray(r.photo) if original else r.pixels
    cells = [(image, ["input", class_text(r), ""], (0, 0, 0))]
    for name, res in r.methods.items():
        notes = [extra_text(k, v) for k, v in res.extras.items()]
        if res.dark:
            notes.append("dark map (max − min < ε)")
        cells.append((overlay(image, r.photo_map(name) if original else res.map),
                      [METHODS[name].title, class_text(r), ", ".join(notes)],
                      FIREBRICK if res.dark else (0, 0, 0)))
    columns = min(len(cells), PANEL_COLUMNS)
    rows = -(-len(cells) // PANEL_COLUMNS)
    canvas = Image.new("RGB", (CELL_W * columns, CELL_H * rows), "white")
    draw = ImageDraw.Draw(canvas)
    target = None if original else r
    for i, (pixels, lines, color) in enumerate(cells):
        _draw_cell(canvas, draw, (CELL_W * (i % columns), CELL_H * (i // columns)),
                   _with_target(pixels, target), lines, color, box)
    footer = title or f"{r.layer}  (m = {r.steps})"
    _centred(draw, footer, canvas.width / 2, canvas.height - FOOTER_PX - 4, FOOTER_PX, DIMGRAY,
             canvas.width - 8)
    canvas.save(path, compress_level=1)
    return path


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, at: tuple[int, int],
               pixels: np.ndarray, lines: list[str], color: tuple[int, int, int],
               box: tuple[int, int, int, int] | None) -> None:
    """One cell: the title lines centred at the top, the picture below, scaled to fit."""
    x, y = at
    for k, line in enumerate(lines):
        _centred(draw, line, x + CELL_W / 2, y + 6 + k * LINE_PX, TITLE_PX, color, CELL_W - 6)
    top = y + 6 + len(lines) * LINE_PX + 4
    h, w = pixels.shape[:2]
    scale = min((CELL_W - 20) / w, (y + CELL_H - FOOTER_PX - 14 - top) / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    left = x + (CELL_W - size[0]) // 2
    # as matplotlib's imshow: nearest pixels when enlarged 3 times or more, else smoothed
    resample = Image.Resampling.NEAREST if scale >= 3 else Image.Resampling.BILINEAR
    canvas.paste(Image.fromarray(pixels).resize(size, resample), (left, top))
    draw.rectangle((left - 1, top - 1, left + size[0], top + size[1]), outline="black")
    if box is not None:
        _dashed_rectangle(draw, _scaled(box, left, top, scale))


def _scaled(box, left: int, top: int, scale: float) -> tuple[float, float, float, float]:
    """Box (x0, y0, x1, y1) in image pixels, as drawn on the canvas (edges on pixel edges)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (left + x0 * scale, top + y0 * scale, left + x1 * scale - 1, top + y1 * scale - 1)


def _with_target(pixels: np.ndarray, r: Explanation | None) -> np.ndarray:
    """The picture with the target chosen at x drawn on it in white (on the model's input,
    ``r``; None draws nothing): a segment target's mask as its outline (its grid stretched
    to the input, nearest), a detection's boxes as rectangles."""
    if r is None or (r.target_boxes is None and (
            r.target_mask is None or not r.target_mask.any() or r.target_mask.all())):
        return pixels
    out = pixels.copy()
    h, w = out.shape[:2]
    if r.target_mask is not None and r.target_mask.any() and not r.target_mask.all():
        mask = r.target_mask.astype(bool)
        rows = (np.arange(h) * mask.shape[0] // h).clip(0, mask.shape[0] - 1)
        cols = (np.arange(w) * mask.shape[1] // w).clip(0, mask.shape[1] - 1)
        big = mask[np.ix_(rows, cols)]
        edge = np.zeros_like(big)
        edge[:-1] |= big[:-1] != big[1:]
        edge[:, :-1] |= big[:, :-1] != big[:, 1:]
        out[edge] = 255
    for b in r.target_boxes if r.target_boxes is not None else []:
        x0, y0, x1, y1 = (int(round(float(v))) for v in b)
        x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))
        y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
        out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = 255
        out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = 255
    return out


def _centred(draw: ImageDraw.ImageDraw, text: str, cx: float, y: float, size: int,
             color: tuple[int, int, int], width: float) -> None:
    """``text`` centred on ``cx`` at ``y``, in a smaller size where it would pass ``width``."""
    if not text:
        return
    f = font(size)
    while size > 7 and f.getlength(text) > width:
        size -= 1
        f = font(size)
    draw.text((cx - f.getlength(text) / 2, y), text, fill=color, font=f)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float],
                      dash: float = 6.0, gap: float = 4.0) -> None:
    """A white dashed outline (the bounding box of a localisation audit)."""
    x0, y0, x1, y1 = box
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)),
                 ((x0, y1), (x0, y0))):
        length = float(np.hypot(b[0] - a[0], b[1] - a[1]))
        t = 0.0
        while t < length:
            s, e = t / length, min(t + dash, length) / length
            draw.line([(a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1])),
                       (a[0] + e * (b[0] - a[0]), a[1] + e * (b[1] - a[1]))],
                      fill="white", width=2)
            t += dash + gap
