"""``ort-cam explain``: images in, panels, arrays and a JSON line per image out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import OrtCamError
from ..explainer import Explainer
from ..methods import METHODS, default_methods
from ..outputs import claim_outputs, write_outputs
from ..result import COMPLETENESS_GAP, Explanation
from .options import explain_options, pop_preprocess, reports_errors

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


def parse_steps(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise OrtCamError(f"--steps must be a positive integer or 'auto' (got {value!r})")
    return int(value)


def parse_methods(value: str | None) -> list[str]:
    """Method names from "a,b,c" (None: the registry's default set), checked."""
    if value is None:
        return list(default_methods())
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise OrtCamError(f"unknown method(s) {', '.join(bad) or '(none)'}; "
                          f"use a comma-separated list of {', '.join(METHODS)}")
    return names


def _line(r: Explanation, img: Path, stem: Path) -> str:
    """The one line printed per explanation: class, score, m, the gap, the dark maps."""
    judge = next((n for n, res in r.methods.items() if COMPLETENESS_GAP in res.extras), None)
    gap = (f", {METHODS[judge].short} gap {100 * r[judge].extras[COMPLETENESS_GAP]:.2g}%"
           if judge is not None else "")
    dark = [n for n, m in r.methods.items() if m.dark]
    return (f"{img.name}: {r.label or 'class'} ({r.target}) "
            f"{r.score_mode} {r.score:.4g}, m={r.steps}{gap}"
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
@reports_errors
def explain(model: Path, images: tuple[Path, ...], out_dir: Path, force: bool,
            as_json: bool, **kw) -> None:
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
    steps, methods = parse_steps(kw.pop("steps")), parse_methods(kw.pop("methods"))
    ex = Explainer(model, kw.pop("layer"), preprocess=pop_preprocess(kw),
                   score=kw.pop("score"), providers=kw.pop("providers"),
                   threads=kw.pop("threads"), labels=kw.pop("labels"),
                   chunk_size=kw.pop("chunk_size"), quiet=as_json, cache=not kw.pop("no_cache"))
    baseline = kw.pop("baseline")
    options = {k: v for k, v in kw.items() if v is not None}
    from tqdm import tqdm

    per_image = (steps + 1) if isinstance(steps, int) else None
    total = per_image * len(images_) * len(targets) if per_image else None
    jobs = [(img, stem) for img, group in zip(images_, stems) for stem in group]
    with tqdm(total=total, unit="pt", desc="path points", disable=None, leave=False) as bar:
        # explain_iter packs the paths of several images into shared session runs
        results = ex.explain_iter(tqdm(images_, unit="img", desc="images", disable=None),
                                  targets=targets, steps=steps, baseline=baseline,
                                  methods=methods, on_chunk=bar.update, **options)
        for (img, stem), r in zip(jobs, results):
            rec = write_outputs(r, out_dir, stem, str(img))
            if as_json:
                click.echo(json.dumps(rec))
            else:
                click.echo(_line(r, img, out_dir / stem))
    if not as_json:
        click.echo(f"wrote {out_dir}/results.jsonl")
