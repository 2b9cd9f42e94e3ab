"""The audit's summary: mean and 95% confidence interval of every metric per method, over all
audited images and split into saturated (p > 0.99, ``result.SATURATED_ABOVE``) and unsaturated
ones; written as summary.json and summary.csv, and told in a few lines (``summary_lines``).

The interval is Student's t: mean ± t(0.975, n − 1) · s / √n (s the sample standard deviation;
for 0/1 metrics such as Increase in Confidence this is the usual normal-approximation interval),
clipped to 0..1 for the metrics that are shares or probabilities (all but the raw map mean), and
to 0..∞ for the completeness gap. Each method's extra scalars (``METHODS[name].extras``, e.g.
RSI's completeness gap) are summarised in its block under their own names.
Images where a metric is undefined (NaN: e.g. IoR when no pixel passes the threshold) are left
out of that metric's n.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from ..methods import METHODS
from ..result import COMPLETENESS_GAP
from .metrics import DARK_EPS, EXTRA_METRICS, MASK_TOP, THRESHOLDS
from .pointing import METRICS as POINTING
from .pointing import SHOWN as POINTING_SHOWN

#: t(0.975, df) for df = 1..30, then 40, 60, 120, ∞ (interpolated in 1/df in between).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
_T975_TAIL = [(30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960)]

SPLITS = ("all", "saturated", "unsaturated")
#: summary name -> the record field it is read from (report_html.table_rows names the rows).
METRICS: dict[str, str] = {
    "average_drop_soft": "drop_soft", "increase_soft": "increase_soft",
    "average_drop_mask": "drop_mask", "increase_mask": "increase_mask",
    "energy": "energy", "bbox": "bbox",
    **{f"{m}@{t}": m for m in ("iou", "iob", "ior") for t in THRESHOLDS},
    "deletion_auc": "deletion_auc", "insertion_auc": "insertion_auc",
    "raw_mean": "raw_mean", "dark": "dark",
}
#: Metrics outside 0..1; every other one is a share or a probability, and its interval is
#: clipped to 0..1.
UNBOUNDED = ("raw_mean",)
#: Also outside 0..1 where the audit re-scores a segment or detection target's y = Σ W ⊙ S
#: (a sum over a mask, of logits where the target reads them): its explanation maps' scores
#: and curves.
UNBOUNDED_Y = ("average_drop_soft", "average_drop_mask", "deletion_auc", "insertion_auc")
#: Range of the methods' extra scalars where they have one (the rest are not clipped).
EXTRA_BOUNDS: dict[str, tuple[float, float]] = {COMPLETENESS_GAP: (0.0, math.inf)}
#: Ranges of the opt-in metrics (``--metrics``; their summary names are their record fields):
#: ROAD's score changes are differences of probabilities, its combined score half of one;
#: complexity, coherency and ARCC lie in 0..1.
EXTRA_RANGES: dict[str, tuple[float, float]] = {
    "road_morf": (-1.0, 1.0), "road_lerf": (-1.0, 1.0), "road_combined": (-0.5, 0.5),
    "arcc_road": (-0.5, 0.5), "entropy_complexity": (0.0, math.inf),
    "faithfulness_correlation": (-1.0, 1.0), "random_logit": (-1.0, 1.0)}
#: Their rows in the report's table and short names in the printed summary.
EXTRA_ROWS = [("road_morf", "ROAD MoRF: score change, most relevant removed (lower is better)"),
              ("road_lerf", "ROAD LeRF: score change, least relevant removed (higher is better)"),
              ("road_combined", "ROAD combined: (LeRF − MoRF) / 2 (higher is better)"),
              ("complexity", "ARCC complexity: mean of the map (lower is better)"),
              ("coherency", "ARCC coherency: (ρ + 1)/2 with the map of E = L ⊙ I"),
              ("arcc_road", "ARCC's ROAD combined (percentiles 20..80)"),
              ("arcc", "ARCC: harmonic mean (higher is better)"),
              ("sparseness", "Sparseness: Gini index of |L| (Quantus; higher is sparser)"),
              ("entropy_complexity", "Complexity: entropy of |L|'s shares (Quantus; lower is "
                                     "simpler)"),
              ("faithfulness_correlation", "Faithfulness correlation (Quantus; higher is "
                                           "better)"),
              ("random_logit", "Random logit: SSIM to another class's map (Quantus; lower "
                               "is better)")]
EXTRA_SHOWN = [("road", "road_combined"), ("arcc", "arcc"), ("sparse", "sparseness"),
               ("entropy", "entropy_complexity"), ("faith", "faithfulness_correlation"),
               ("rlogit", "random_logit")]
PERCENT = ("average_drop_soft", "increase_soft", "average_drop_mask", "increase_mask")


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= 30:
        return _T975[df - 1]
    for (d0, t0), (d1, t1) in zip(_T975_TAIL, _T975_TAIL[1:]):
        if df <= d1:
            f = (1 / d0 - 1 / df) / (1 / d0 - (0 if d1 == math.inf else 1 / d1))
            return t0 + f * (t1 - t0)
    return 1.960


def mean_ci(values, bounds: tuple[float, float] | None = None) -> dict:
    """{"n", "mean", "ci95": [low, high]} over the finite values (None/NaN left out); the
    interval is clipped to ``bounds`` when the metric has a range (e.g. 0..1)."""
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"n": 0, "mean": None, "ci95": [None, None]}
    mean = float(v.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "ci95": [None, None]}
    half = t975(n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"n": n, "mean": mean, "ci95": [lo, hi]}


def metric_values(records: list[dict], method: str, name: str) -> list:
    """Per-image values of summary metric ``name`` for ``method``."""
    field = {**METRICS, **POINTING}.get(name, name)  # the opt-in ones: the record's field
    out = []
    for r in records:
        m = r["methods"].get(method)
        if m is None:
            continue
        v = m.get(field)
        if "@" in name:
            v = v[THRESHOLDS.index(float(name.split("@")[1]))] if v else None
        out.append(float(v) if isinstance(v, bool) else v)
    return out


def split_records(records: list[dict]) -> dict[str, list[dict]]:
    ok = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: r["key"])
    return {"all": ok, "saturated": [r for r in ok if r["saturated"]],
            "unsaturated": [r for r in ok if not r["saturated"]]}


def summarize(settings: dict, records: list[dict]) -> dict:
    """summary.json: image counts, then per split the metrics per method and dark counts."""
    skipped = Counter(r.get("skip") for r in records if r.get("status") == "skipped")
    return {"images": {"in_dataset": settings["dataset"]["images"],
                       "shard": settings["shard"], "lines": len(records),
                       "audited": sum(r.get("status") == "ok" for r in records),
                       "skipped": dict(sorted(skipped.items()))},
            "splits": {split: split_block(recs, settings["methods"],
                                          bool(settings["dataset"].get("grid")),
                                          extra_metric_names(settings),
                                          "target_kind" in settings)
                       for split, recs in split_records(records).items()}}


def extra_metric_names(settings: dict) -> tuple[str, ...]:
    """The summary metrics of the audit's opt-in metrics (``--metrics``; none when absent)."""
    return tuple(f for m in settings.get("metrics", ()) for f in EXTRA_METRICS[m])


def split_block(recs: list[dict], methods: list[str], pointing: bool = False,
                opt_in: tuple[str, ...] = (), target_y: bool = False) -> dict:
    """One split of summary.json: its image count, the share correct, and per method every
    metric (with the percent forms and the method's extras; the pointing game's scores when
    ``pointing``; the opt-in metrics ``opt_in``) and the dark counts per ε. ``target_y``:
    the scores are a segment or detection target's y (``UNBOUNDED_Y``), not probabilities."""
    metrics: dict[str, dict] = {}
    dark_counts: dict[str, dict[str, int]] = {}
    unbounded = UNBOUNDED + (UNBOUNDED_Y if target_y else ())
    for method in methods:
        ms = {name: mean_ci(metric_values(recs, method, name),
                            None if name in unbounded else (0.0, 1.0))
              for name in [*METRICS, *(POINTING if pointing else ())]}
        ms.update({name: mean_ci(metric_values(recs, method, name),
                                 EXTRA_RANGES.get(name, (0.0, 1.0))) for name in opt_in})
        for name in PERCENT:
            ms[f"{name}_pct"] = _scaled(ms[name], 100.0)
        for extra in _extras_of(method):
            ms[extra] = mean_ci([r.get(extra) for r in recs], EXTRA_BOUNDS.get(extra))
        metrics[method] = ms
        ranges = [r["methods"][method]["raw_max"] - r["methods"][method]["raw_min"]
                  for r in recs if method in r["methods"]]
        dark_counts[method] = {f"{e:.0e}": int(sum(x < e for x in ranges)) for e in DARK_EPS}
    return {"images": len(recs), "correct": mean_ci([float(r["correct"]) for r in recs
                                                     if r.get("correct") is not None]),
            "metrics": metrics, "dark_counts": dark_counts}


def _extras_of(method: str) -> tuple[str, ...]:
    """The extra scalars ``method`` reports (a record holds each under its own name)."""
    return METHODS[method].extras if method in METHODS else ()


def _scaled(stat: dict, k: float) -> dict:
    f = lambda x: None if x is None else x * k
    return {"n": stat["n"], "mean": f(stat["mean"]), "ci95": [f(x) for x in stat["ci95"]]}


def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "method", "metric", "n", "mean", "ci95_low", "ci95_high"])
        for split, block in summary["splits"].items():
            for method, ms in block["metrics"].items():
                for name, s in ms.items():
                    w.writerow([split, method, name, s["n"], _num(s["mean"]),
                                _num(s["ci95"][0]), _num(s["ci95"][1])])


def _num(x) -> str:
    return "" if x is None else f"{x:.6g}"


def shown_metrics(top: float = MASK_TOP) -> list[tuple[str, str]]:
    """(short name, summary metric) of what ``summary_lines`` tells per method; the mask
    metrics are named by the mask's share (``drop%@15`` for the top 15%)."""
    at = f"@{100 * top:g}"
    return [("drop%", "average_drop_soft_pct"), ("inc%", "increase_soft_pct"),
            (f"drop%{at}", "average_drop_mask_pct"), (f"inc%{at}", "increase_mask_pct"),
            ("energy", "energy"), ("bbox", "bbox"), ("del", "deletion_auc"),
            ("ins", "insertion_auc")]


def summary_lines(summary: dict, methods: list[str], top: float = MASK_TOP) -> list[str]:
    """Per split its image count, then a line per method with the means of
    ``shown_metrics`` (``-`` where undefined); what ``ort-cam audit`` prints."""
    lines = []
    for split in SPLITS:
        block = summary["splits"][split]
        lines.append(f"{split}: {block['images']} images")
        for m in methods:
            ms = block["metrics"][m]
            vals = [(short, ms[name]["mean"]) for short, name in shown_metrics(top)
                    + [(k, n) for k, n in POINTING_SHOWN + EXTRA_SHOWN if n in ms]]
            lines.append(f"  {METHODS[m].title:22s} " + "  ".join(
                f"{k} {'-' if v is None else f'{v:.3g}'}" for k, v in vals))
    return lines
