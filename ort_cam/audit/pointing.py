"""The grid pointing game (Böhle et al. 2021, CoDA-Nets §5; Rao et al. 2022, "Towards Better
Understanding Attribution Methods" §4): photos of different classes tiled in a grid, each cell
an exact box for its class, the map of each class in turn scored against its cell.

Two scores per map, on the raw map bilinearly upsampled to the model's input (``maps.upsample``,
the grid the boxes are mapped to), before any normalisation:

- ``pointing_energy``: the share of the map's positive energy in the true cell,
  Σ_cell max(L, 0) / Σ max(L, 0) (Böhle's and Rao's localisation score; 1/cells is chance for
  a map spread evenly);
- ``pointing_hit``: 1 when the map's maximum (its first pixel in row-major order, on ties)
  lies in the true cell, else 0 (Zhang et al.'s pointing game, on one cell of the grid).

A map with no positive value points nowhere: it scores 0 on both.
"""

from __future__ import annotations

import numpy as np

from ..errors import OrtCamError
from ..maps import upsample

#: summary name -> the record field it is read from (as ``summary.METRICS``).
METRICS: dict[str, str] = {"pointing_energy": "pointing_energy", "pointing_hit": "pointing_hit"}
#: Rows of the report's table and the short names of the printed summary.
ROWS = [("pointing_energy", "Pointing game: positive energy in the true cell"),
        ("pointing_hit", "Pointing game: map maximum in the true cell (hit rate)")]
SHOWN = [("pg-energy", "pointing_energy"), ("pg-hit", "pointing_hit")]
#: The CSV column that marks a dataset as a grid ("2x2" on every row).
GRID_COLUMN = "grid"


def pointing_scores(raw: np.ndarray, cell: np.ndarray) -> dict[str, float]:
    """Both scores of the raw h×w map ``raw`` against the boolean H×W mask ``cell`` (the true
    cell on the model's input grid)."""
    up = upsample(raw, cell.shape)
    pos = np.maximum(up, 0.0)
    total = float(pos.sum())
    if total <= 0.0:
        return {"pointing_energy": 0.0, "pointing_hit": 0.0}
    hit = bool(cell.reshape(-1)[int(np.argmax(up))])
    return {"pointing_energy": float(pos[cell].sum()) / total, "pointing_hit": float(hit)}


def parse_grid(text: str, where: str) -> tuple[int, int]:
    """``"2x2"`` (rows x columns) to (2, 2)."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise OrtCamError(f"{where}: grid {text!r} is not ROWSxCOLUMNS, e.g. 2x2")
    return int(parts[0]), int(parts[1])
