"""``ort-cam audit``, ``audit-merge`` and ``audit-report``: the papers' metrics over a dataset,
streamed to DIR/results.jsonl, resumable, shardable, with a summary and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..audit.datasets import SMALL_BOX
from ..audit.metrics import DELETION_STEPS
from ..audit.randomise import DEFAULT_SEED
from ..result import parse_steps
from .explain_cmd import parse_methods
from .options import (
    _compose,
    detection_head_options,
    explainer_options,
    labels_option,
    method_options,
    model_argument,
    pop_detection_head,
    pop_preprocess,
    reports_errors,
    runtime_options,
)

#: The options that go to the Explainer as they are.
_RUNTIME = ("score", "providers", "threads", "labels", "chunk_size", "output",
            "layer_layout", "grid", "extra_tokens", "target_kind")

dataset_options = _compose(
    click.option("--format", "fmt", type=click.Choice(["auto", "voc", "coco", "csv",
                                                        "voc-seg"]),
                 default="auto", show_default=True,
                 help="Annotation format: VOC folder (Annotations/*.xml), COCO .json (boxes, "
                      "and polygon or RLE masks), CSV image,label,x0,y0,x1,y1, or VOC "
                      "segmentation PNGs (SegmentationClass/, SegmentationObject/)."),
    click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path),
                 default=None, help="Image folder for COCO/CSV (default: the file's folder)."),
    click.option("--label-map", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="JSON {label: class index or [indices]} (default: match --labels or "
                      "the model's stored class names)."),
    click.option("--correct-only", is_flag=True,
                 help="Keep images whose predicted class is one of the true classes."),
    click.option("--one-box", is_flag=True, help="Keep images with exactly one box."),
    click.option("--small-box", is_flag=True,
                 help=f"Keep images whose boxes each cover less than {100 * SMALL_BOX:g}% of "
                      "the image."),
    click.option("--rsi-filters", is_flag=True,
                 help="All three filters, as in the RSI paper (§4.3.1)."),
)


def _extra_metrics(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from ..audit.image import check_extra_metrics
    from ..errors import OrtCamError

    try:
        return check_extra_metrics(value)
    except OrtCamError as exc:
        raise click.BadParameter(str(exc)) from None


def _concepts(ctx: click.Context, param: click.Parameter, value: Path | None) -> dict | None:
    from ..audit.regions import read_concepts

    return None if value is None else read_concepts(value)


@click.command()
@model_argument
@click.argument("dataset", type=click.Path(path_type=Path), metavar="DATASET")
@click.option("--layer", "-l", default=None, metavar="NAME",
              help="Layer tensor or node name (default: the one stored in the model).")
@click.option("--out", "-o", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Audit directory: audit.json, results.jsonl, summary.*, report.html.")
@dataset_options
@click.option("--shard", default=None, metavar="i/n",
              help="Audit only shard i of n (1-based; every n-th image in key order).")
@click.option("--targets", type=click.Choice(["top1", "labels"]), default="top1",
              show_default=True,
              help="top1: explain the predicted class; labels: each labelled class of an "
                   "image in turn (a line per image and label).")
@click.option("--deletion-steps", type=click.IntRange(min=1), default=DELETION_STEPS,
              show_default=True,
              help="Steps of the deletion and insertion curves.")
@click.option("--metrics", "extra_metrics", default="", metavar="road,arcc,...",
              callback=_extra_metrics,
              help="Also measure these (more model runs): road (ROAD MoRF, LeRF and "
                   "combined: 18 imputed images per method), arcc (complexity, "
                   "coherency: the image times the map explained again, and ARCC), and "
                   "Quantus's sparseness, complexity (entropy), faithfulness_correlation "
                   "(100 scored images per method) and random_logit (another class "
                   "explained).")
@click.option("--sanity", type=click.Choice(["cascade", "independent"]), default=None,
              help="Then run the model-parameter randomisation test (Adebayo et al. 2018) "
                   "on the audited images: explain each again with the weights randomised "
                   "as Quantus does, from the output down one more layer at a time "
                   "(cascade) or one layer at a time (independent); to DIR/sanity/.")
@click.option("--sanity-seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Seed of the randomisation (each layer drawn after seeding seed + 1, as "
                   "Quantus's MPRT).")
@click.option("--sanity-every", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="K",
              help="Explain after every K-th layer only (cascade: K more layers randomised "
                   "per step), and after the last: K times fewer explanations.")
@click.option("--sanity-model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, metavar="FILE",
              help="Also run the data-randomisation test: explain the images with FILE, "
                   "the same network trained on shuffled labels (same layer).")
@click.option("--force", is_flag=True,
              help="Start over: remove what an earlier audit wrote in DIR.")
@click.option("--no-report", is_flag=True,
              help="Write summary.* but not report.html (e.g. for shards: audit-merge "
                   "writes one).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None,
              metavar="[ADDRESS]",
              help="Run on a Ray cluster (pip install 'ort_cam[ray]'): ADDRESS is host:port; "
                   "a bare --ray takes $RAY_ADDRESS, a cluster started here with `ray start`, "
                   "else a new local one. Resumes like a run without it.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Ray workers (default: as many as the cluster's CPUs hold, or its GPUs "
                   "with CUDA).")
@click.option("--target-kind",
              type=click.Choice(["class", "binary", "segment", "detection", "embedding"]),
              default=None,
              help="What the output is read as (default: detected, as for explain). segment: "
                   "each image's annotated mask is the target's mask; detection: its "
                   "annotated box picks the anchor (IoU > 0.5); embedding: the label's "
                   "--concepts vector; metrics against that mask or box, curves of the "
                   "target's value.")
@click.option("--concepts", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, metavar="FILE.npz", callback=_concepts,
              help="An embedding audit's concept vector per label (np.savez(FILE, "
                   "dog=vector, ...)): each image is explained for its label's cosine.")
@detection_head_options
@explainer_options
@labels_option
@runtime_options
@method_options
@reports_errors
def audit(model: Path, dataset: Path, layer: str | None, out_dir: Path, fmt: str,
          images_dir: Path | None, label_map: Path | None, correct_only: bool, one_box: bool,
          small_box: bool, rsi_filters: bool, shard: str | None, targets: str,
          deletion_steps: int, extra_metrics: tuple[str, ...], concepts: dict | None,
          force: bool, no_report: bool, ray_address: str | None, ray_workers: int | None,
          **kw) -> None:
    """Audit MODEL's explanations over DATASET with the papers' metrics.

    DATASET is a PASCAL VOC folder, a COCO .json or a CSV file image,label,x0,y0,x1,y1
    (or a folder holding one). Labels become class indices through --label-map or the
    class names (--labels, else the model's). For each image, the predicted class (with
    --target-kind segment, detection or embedding: the annotated mask, box or the label's
    concept) is explained with every method and one JSON line goes to DIR/results.jsonl
    (flushed and fsynced): Average Drop and Increase in Confidence inputs for the soft map and the
    top-15% mask, pixel energy, IoU/IoB/IoR at t = 0.1..0.9, Bbox score, raw map range and
    mean, the methods' extras (RSI's completeness gap), deletion and insertion curves, AUC
    (--metrics: ROAD, ARCC). Skipped images (filters, unreadable files, unmapped labels) get
    a line with why. A CSV with a grid column (tools/make_pointing_game.py) adds the grid
    pointing game; --targets labels explains each of an image's labels in turn.
    --sanity then runs the sanity checks of saliency maps (each image once per layer).

    Rerunning the same command resumes (after a crash or Ctrl-C) without redoing or
    repeating images; other settings are refused. With --ray the images are audited by
    workers of a Ray cluster (one explainer each) and this process writes every line. At
    the end DIR gets summary.json, summary.csv and (unless --no-report) report.html (see
    `ort-cam audit-report`).

    \b
    Examples:
        ort-cam audit model.onnx VOC2007/ --label-map voc_to_imagenet.json --out audit/
        ort-cam audit model.onnx boxes.csv --layer conv5_out --rsi-filters --out audit/
        ort-cam audit model.onnx coco.json --shard 2/4 --out audit-2/
        ort-cam audit model.onnx coco.json --out audit/ --ray head-node:6379
    """
    from ..audit.datasets import chosen_filters
    from ..audit.image import AuditSpec

    checks = _sanity(kw, ray_address)  # before the rest of kw becomes the method options
    steps, methods = parse_steps(kw.pop("steps"), "--steps"), parse_methods(kw.pop("methods"))
    preprocess = pop_preprocess(kw)
    runtime = {k: kw.pop(k) for k in _RUNTIME}
    runtime.update(cache=not kw.pop("no_cache"), target=pop_detection_head(kw))
    spec = AuditSpec(steps=steps, methods=tuple(methods), baseline=kw.pop("baseline"),
                     options=kw,  # what is left: the method options
                     filters=chosen_filters(correct_only, one_box, small_box, rsi_filters),
                     deletion_steps=deletion_steps, targets=targets, metrics=extra_metrics,
                     concepts=concepts)
    args: dict[str, Any] = dict(spec=spec, layer=layer, fmt=fmt, images=images_dir,
                                label_map=label_map, shard=shard, preprocess=preprocess,
                                runtime=runtime, force=force, html_page=not no_report,
                                **({"sanity": checks} if checks.active else {}))
    summary, workers = _run(model, dataset, out_dir, args, ray_address, ray_workers)
    _echo_summary(summary, methods, spec.top)
    for name, n in workers:
        click.echo(f"worker {name}: {n} images")
    made = "summary.json and summary.csv" + ("" if no_report else " and report.html")
    click.echo(f"wrote {out_dir}/{made}")
    _refuse_empty(summary["images"], out_dir)


def _sanity(kw: dict, ray_address: str | None):
    """The sanity checks asked for (``audit.sanity.SanitySpec``), their options popped from
    ``kw``; refused with --ray (they run in this process)."""
    from ..audit.sanity import SanitySpec

    model = kw.pop("sanity_model")
    checks = SanitySpec(kw.pop("sanity"), kw.pop("sanity_seed"),
                        str(model) if model else None, kw.pop("sanity_every"))
    if checks.active and ray_address is not None:
        raise click.UsageError("--sanity and --sanity-model run in this process; run them "
                               "without --ray")
    return checks


def _echo_summary(summary: dict, methods: list[str], top: float) -> None:
    from ..audit.sanity_report import sanity_lines
    from ..audit.summary import summary_lines
    from ..methods import METHODS

    for line in summary_lines(summary, methods, top) + sanity_lines(
            summary.get("sanity"), {m: METHODS[m].title for m in methods}):
        click.echo(line)


def _refuse_empty(images: dict, out_dir: Path) -> None:
    """An audit that explained no image says so, with why, and fails."""
    if images["audited"] == 0:
        why = ", ".join(f"{n} {reason}" for reason, n in images["skipped"].items())
        raise click.ClickException(
            f"no image was audited: {sum(images['skipped'].values())} of "
            f"{images['in_dataset']} skipped ({why or 'none selected'}); see "
            f"{out_dir}/results.jsonl")


def _run(model: Path, dataset: Path, out_dir: Path, args: dict[str, Any],
         ray_address: str | None, ray_workers: int | None) -> tuple[dict, list[tuple[str, int]]]:
    """The audit in this process, or on Ray when ``ray_address`` is given ("" for Ray's
    default): the summary and the images per worker. Ctrl-C says how to resume."""
    try:
        if ray_address is None:
            from ..audit.run import audit_model

            return audit_model(model, dataset, out_dir, **args), []
        from ..audit.distributed import audit_model_ray

        done = audit_model_ray(model, dataset, out_dir, address=ray_address or None,
                               workers=ray_workers, **args)
        return done.summary, done.workers
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; every finished image is in {out_dir}/results.jsonl: rerun the same "
            "command to resume") from None


@click.command("audit-merge")
@click.argument("dirs", nargs=-1, required=True, metavar="DIR...",
                type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", "-o", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path), help="Merged audit directory.")
@click.option("--force", is_flag=True, help="Replace an earlier merge in --out.")
@reports_errors
def audit_merge(dirs: tuple[Path, ...], out_dir: Path, force: bool) -> None:
    """Join the outputs of `ort-cam audit --shard i/n` runs into one audit.

    The directories must hold shards of one audit (same model, layer, dataset and
    settings; anything else is refused). Images are deduplicated by key; the merged
    directory gets results.jsonl, audit.json, the thumbnails, summary.* and report.html,
    and can be resumed with `ort-cam audit` (no --shard) to fill in missing images.

    \b
    Example:
        ort-cam audit-merge audit-1/ audit-2/ audit-3/ audit-4/ --out audit/
    """
    from ..audit.run import make_report, merge

    settings, records = merge(list(dirs), out_dir, force)
    make_report(out_dir)
    have = settings["about"]["merged_shards"]
    n = settings["dataset"]["images"]
    click.echo(f"merged {len(records)} of {n} images from shards "
               f"{', '.join(f'{i}/{k}' for i, k in have)} into {out_dir}")


@click.command("audit-report")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, exists=True,
                                                          path_type=Path))
@reports_errors
def audit_report(out_dir: Path) -> None:
    """Rewrite DIR/summary.json, summary.csv and report.html from an audit's results.

    Works on a finished, interrupted or merged audit; the model is not needed.

    \b
    Example:
        ort-cam audit-report audit/
    """
    from ..audit.run import make_report

    summary = make_report(out_dir)
    imgs = summary["images"]
    click.echo(f"{imgs['audited']} audited, {sum(imgs['skipped'].values())} skipped, of "
               f"{imgs['in_dataset']} in the dataset; wrote {out_dir}/report.html")
