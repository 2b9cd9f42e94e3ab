"""``ort-cam explain``: images in, panels, arrays and a JSON line per image out."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import click
from PIL import Image

from ..errors import InputError, OrtCamError
from ..explainer import Explainer
from ..methods import METHODS, resolve
from ..outputs import RESULTS, claim_outputs, write_outputs
from ..preprocess import load_image
from ..render import value_text
from ..result import COMPLETENESS_GAP, Explanation, parse_steps
from .options import (
    explain_options,
    pop_layer_view,
    pop_preprocess,
    pop_target_values,
    reports_errors,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def collect_images(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given, directories expanded to their image files (sorted)."""
    images: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise OrtCamError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {p}")
            images += found
        elif p.exists():
            images.append(p)
        else:
            raise OrtCamError(f"image file not found: {p}")
    return images


def unique_stems(images: list[Path], n_targets: int) -> list[list[str]]:
    """Output stems per image and target, made unique when names repeat."""
    seen: dict[str, int] = {}
    out = []
    for img in images:
        stem = img.stem
        if stem in seen:
            seen[stem] += 1
            stem = f"{stem}-{seen[stem]}"
        else:
            seen[stem] = 0
        out.append([stem] if n_targets == 1 else [f"{stem}_t{i + 1}" for i in range(n_targets)])
    return out


def parse_methods(value: str | None) -> list[str]:
    """Method names from "a,b,c" (None: the registry's default set), checked."""
    names = None if value is None else [v.strip() for v in value.split(",") if v.strip()]
    return resolve(names, listed_as="a comma-separated list of ")


def _target_text(r: Explanation) -> str:
    """A target of another kind than class, in words: its kind, class, what was chosen."""
    rec = r.target_record or {}
    parts = [r.target_kind]
    if r.target is not None:
        parts.append(f"{r.label or 'class'} ({r.target})")
    if "mask_area" in rec:
        parts.append(f"mask {rec['mask_area']} px")
    if "anchors" in rec:
        parts.append(f"anchors {','.join(map(str, rec['anchors']))}")
    if "steps" in rec:
        parts.append(f"{len(rec['steps'])} steps, tokens {','.join(map(str, rec['tokens']))}")
    return f"{' '.join(parts)}, {value_text(r)}"


def _gap_text(r: Explanation) -> str:
    """", RSI gap 0.12%" from the first method that reports a completeness gap ("n/a" and
    why where it is not defined), else ""."""
    judge = next((n for n, res in r.methods.items() if COMPLETENESS_GAP in res.extras), None)
    if judge is None:
        return ""
    why = r.completeness_gap_undefined
    value = f"n/a ({why})" if why else f"{100 * r[judge].extras[COMPLETENESS_GAP]:.2g}%"
    return f", {METHODS[judge].short} gap {value}"


def _line(r: Explanation, img: Path, stem: Path) -> str:
    """The one line printed per explanation: class, score, m, the gap, the dark maps."""
    gap = _gap_text(r)
    dark = [n for n, m in r.methods.items() if m.dark]
    what = f"{r.label or 'class'} ({r.target}) {value_text(r)}"
    if r.target_kind == "binary":
        what = f"binary {what}"
    if r.target_record is not None:
        what = _target_text(r)
    return (f"{img.name}: {what}, m={r.steps}{gap}"
            + (f", dark: {', '.join(dark)}" if dark else "")
            + f" -> {stem}.png")


@click.command()
@explain_options
@click.argument("images", nargs=-1, required=True, metavar="IMAGE_OR_DIR...",
                type=click.Path(path_type=Path))
@click.option("--out", "-o", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for <stem>.png, <stem>.npz and results.jsonl.")
@click.option("--force", is_flag=True, help="Overwrite outputs already in DIR.")
@click.option("--original", is_flag=True,
              help="Also give the maps on the original image (resize, crop or letterbox "
              "undone): <method>_map_original in the .npz, the panel drawn on the image.")
@reports_errors
def explain(model: Path, images: tuple[Path, ...], out_dir: Path, force: bool,
            as_json: bool, original: bool, **kw) -> None:
    """Explain IMAGE_OR_DIR... with the CAM methods named by --methods.

    All methods come from one pass over the m+1 points of the path from the baseline to
    each image. Per image, DIR gets <stem>.png (input and overlays, with class, score and
    each method's extras, e.g. RSI's completeness gap), <stem>.npz (target, scores_path,
    <method>_raw, <method>_map, <method>_<extra>, e.g. rsi_completeness_gap) and a line in
    results.jsonl.

    \b
    Examples:
        ort-cam explain model.onnx cat.jpg --layer conv5_out --out cams/
        ort-cam explain model.onnx photos/ --steps auto --target top:2 --out cams/
        ort-cam explain model.onnx img.png --preprocess caffe --methods gradcam,rsi \\
            --baseline blur --out cams/ --json
    """
    images_ = collect_images(images)
    targets = list(kw.pop("target")) or [None]
    stems = unique_stems(images_, len(targets))
    claim_outputs(out_dir, [s for group in stems for s in group], force)
    steps, methods = parse_steps(kw.pop("steps"), "--steps"), parse_methods(kw.pop("methods"))
    ex = _explainer(model, kw, as_json)
    baseline = kw.pop("baseline")
    options = {k: v for k, v in kw.items() if v is not None}
    from tqdm import tqdm

    per_image = (steps + 1) if isinstance(steps, int) else None
    total = per_image * len(images_) * len(targets) if per_image else None
    reader = _Reader(list(zip(images_, stems)), out_dir, as_json)
    with tqdm(total=total, unit="pt", desc="path points", disable=None, leave=False) as bar:
        # explain_iter packs the paths of several images into shared session runs
        results = ex.explain_iter(
            tqdm(reader.images(), total=len(images_), unit="img", desc="images", disable=None),
            targets=targets, steps=steps, baseline=baseline, methods=methods,
            on_chunk=bar.update, **options)
        for r in results:
            img, stem = reader.next_job()
            rec = write_outputs(r, out_dir, stem, str(img), original=original)
            if as_json:
                click.echo(json.dumps(rec))
            else:
                click.echo(_line(r, img, out_dir / stem))
    reader.flush()
    if not as_json and reader.explained:
        click.echo(f"wrote {out_dir}/results.jsonl")
    if reader.skipped == len(images_):
        raise OrtCamError(reader.first_error or "no image could be read")
    if reader.skipped:
        raise OrtCamError(f"{reader.skipped} of {len(images_)} images could not be read (see "
                          f"above); the others were explained into {out_dir}")


def _explainer(model: Path, kw: dict, quiet: bool) -> Explainer:
    """The explainer of ``explain``'s options (taken out of ``kw``); a concept image asks for
    the embedding reading, as a concept vector does, and becomes its concept."""
    concept_image = kw.pop("concept_image")
    ex = Explainer(model, kw.pop("layer"), preprocess=pop_preprocess(kw),
                   score=kw.pop("score"), providers=kw.pop("providers"),
                   threads=kw.pop("threads"), labels=kw.pop("labels"),
                   chunk_size=kw.pop("chunk_size"), quiet=quiet, cache=not kw.pop("no_cache"),
                   output=kw.pop("output"), target=pop_target_values(kw),
                   target_kind=kw.pop("target_kind") or (
                       "embedding" if concept_image is not None else None),
                   **pop_layer_view(kw))
    if concept_image is not None:
        ex.target_options = replace(ex.target_options, concept=ex.concept_of(concept_image))
    return ex


class _Reader:
    """Reads the images one at a time for ``explain_iter``, so that an unreadable one gets a
    line (printed, and in results.jsonl with its reason) in its place and the run goes on.
    ``next_job`` pairs each explanation with its image and stem, in order. When no image can
    be read, nothing is written (the command fails with the first reason)."""

    def __init__(self, jobs: list[tuple[Path, list[str]]], out_dir: Path, as_json: bool):
        self.out_dir, self.as_json = out_dir, as_json
        self.jobs = jobs
        self.queue: deque[tuple[Path, list[str], str | None]] = deque()
        self.skipped = self.explained = 0
        self.first_error: str | None = None
        self._records: list[dict] = []
        self._target = 0

    def images(self) -> Iterator[Image.Image]:
        for img, group in self.jobs:
            try:
                image = load_image(img)
            except InputError as exc:
                self.queue.append((img, group, str(exc)))
                continue
            self.queue.append((img, group, None))
            yield image

    def flush(self) -> None:
        """Report the unreadable images at the front of the queue."""
        while self.queue and self.queue[0][2] is not None:
            img, group, error = self.queue.popleft()
            rec = {"image": str(img), "stem": group[0], "skipped": error}
            click.echo(json.dumps(rec) if self.as_json else f"{img.name}: skipped ({error})")
            self._records.append(rec)
            self.skipped += 1
            self.first_error = self.first_error or error
        if self.explained and self._records:  # results.jsonl exists once one was explained
            with open(self.out_dir / RESULTS, "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(rec) + "\n" for rec in self._records)
            self._records = []

    def next_job(self) -> tuple[Path, str]:
        self.explained += 1
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.flush()
        img, group, _ = self.queue[0]
        stem = group[self._target]
        self._target += 1
        if self._target == len(group):
            self.queue.popleft()
            self._target = 0
        return img, stem
