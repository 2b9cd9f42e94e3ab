"""What ``ort-cam explain`` writes per image: <stem>.png, <stem>.npz and a results.jsonl line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import refuse_overwrite
from .methods import METHODS, extra_names
from .render import save_panel
from .result import COMPLETENESS_GAP, Explanation

RESULTS = "results.jsonl"
#: results.jsonl's and the .npz's field that says why the completeness gap is not given.
GAP_UNDEFINED_KEY = "completeness_gap_undefined"


def output_paths(out_dir: Path, stem: str) -> tuple[Path, Path]:
    return out_dir / f"{stem}.png", out_dir / f"{stem}.npz"


def claim_outputs(out_dir: Path, stems: list[str], force: bool) -> None:
    """Make ``out_dir`` ready for the outputs of ``stems``: refuse, before any work, to
    overwrite what a user already has (unless ``force``); with ``force``, start results.jsonl
    afresh (``write_outputs`` appends to it)."""
    names = [p.name for s in stems for p in output_paths(out_dir, s)] + [RESULTS]
    refuse_overwrite(out_dir, force, names=names)
    (out_dir / RESULTS).unlink(missing_ok=True)


def npz_arrays(r: Explanation, original: bool = False) -> dict[str, np.ndarray]:
    """The .npz contract: target, scores_path, <M>_raw and <M>_map per method explained, and
    <M>_<extra> for every extra of every registered method (e.g. rsi_completeness_gap), NaN
    when M was not explained; with ``original``, <M>_map_original too: the map on the
    original image's pixel grid (``Explanation.photo_map``). A target of another kind than
    class adds target_kind, target_weights-free records of what was chosen: target_mask (on
    the output's grid), target_boxes (x0, y0, x1, y1), target_anchors, target_steps,
    target_tokens, where the kind chose them; ``target`` is -1 where it has no class. Where
    the completeness gap is not defined (NaN), completeness_gap_undefined says why."""
    arrays = {"target": np.array(-1 if r.target is None else r.target),
              "scores_path": r.scores_path}
    if r.target_record is not None:
        arrays["target_kind"] = np.array(r.target_kind)
        if r.target_mask is not None:
            arrays["target_mask"] = r.target_mask
        if r.target_boxes is not None:
            arrays["target_boxes"] = np.asarray(r.target_boxes, np.float64)
        for key in ("anchors", "steps", "tokens"):
            if key in r.target_record:
                arrays[f"target_{key}"] = np.asarray(r.target_record[key], np.int64)
    for name, res in r.methods.items():
        arrays[f"{name}_raw"] = res.raw
        arrays[f"{name}_map"] = res.map
        if original:
            arrays[f"{name}_map_original"] = r.photo_map(name)
    for name, cls in METHODS.items():
        found = r.methods.get(name)
        for extra in cls.extras:
            value = found.extras[extra] if found is not None else np.nan
            arrays[f"{name}_{extra}"] = np.array(value)
    if r.completeness_gap_undefined is not None:  # the gap is NaN: say why
        arrays[GAP_UNDEFINED_KEY] = np.array(r.completeness_gap_undefined)
    return arrays


def extras_record(r: Explanation) -> dict[str, float | str | None]:
    """Every extra any registered method reports, by name: the value of the first method of
    ``r`` that reports it, else None (results.jsonl and the audit's records); a gap that is
    not defined is None, with why under ``completeness_gap_undefined`` (else None)."""
    values = {name: r.extra(name) for name in extra_names()}
    rec: dict[str, float | str | None] = {
        name: None if value is not None and np.isnan(value) else value
        for name, value in values.items()}
    if COMPLETENESS_GAP in values:
        rec[GAP_UNDEFINED_KEY] = r.completeness_gap_undefined
    return rec


def target_fields(r: Explanation) -> dict:
    """results.jsonl's target_kind and target_record; a class target's record holds its
    class, label, reading (``score``) and value, a binary target's the sign of its ±logit
    (``sign``: +1 for class 1, −1 for class 0); both add the top-5 classes."""
    if r.target_record is not None:
        return {"target_kind": r.target_kind, "target_record": r.target_record}
    rec: dict = {"kind": r.target_kind, "class": r.target, "label": r.label,
                 "value": r.score}
    if r.target_kind == "binary":
        rec["sign"] = 1 if r.target == 1 else -1
    else:
        rec["score"] = r.score_mode
    return {"top5": [int(i) for i in np.argsort(-r.scores)[:5]],
            "target_kind": r.target_kind, "target_record": rec}


def record(r: Explanation, image: str, stem: str) -> dict:
    """One results.jsonl line."""
    return {
        "image": image, "stem": stem, "target": r.target, "label": r.label,
        "score_mode": r.score_mode, "score": r.score,
        "y0": r.y0 if r.steps else None,  # no path walked: only x was run
        "ym": r.ym, "steps": r.steps,
        "layer": r.layer, **extras_record(r), **target_fields(r),
        "methods": {name: {"dark": res.dark, "raw_min": float(res.raw.min()),
                           "raw_max": float(res.raw.max())}
                    for name, res in r.methods.items()},
        "timings": {k: round(v, 4) for k, v in r.timings.items()},
    }


def write_outputs(r: Explanation, out_dir: Path, stem: str, image: str,
                  box: tuple[int, int, int, int] | None = None, original: bool = False) -> dict:
    """Write <stem>.png and <stem>.npz, append to results.jsonl; returns the record. With
    ``original`` the maps are also given on the original image (npz and panel)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, npz = output_paths(out_dir, stem)
    save_panel(r, png, title=f"{Path(image).name}  ·  layer {r.layer}  ·  m = {r.steps}",
               box=box, original=original)
    # uncompressed: a few maps of a few hundred KiB, where zlib would cost more than it saves
    np.savez(npz, allow_pickle=False, **npz_arrays(r, original))
    rec = record(r, image, stem)
    with open(out_dir / RESULTS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    return rec
