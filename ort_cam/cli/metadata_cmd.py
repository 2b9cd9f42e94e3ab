"""``ort-cam metadata``: show or store a model's preprocessing, labels and default layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..metadata import store_metadata, stored_metadata
from .options import model_argument, pop_preprocess, preprocess_options, reports_errors


@click.command()
@model_argument
@preprocess_options
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Class names to store (one per line, or a JSON list).")
@click.option("--layer", "-l", default=None, metavar="NAME",
              help="Default layer to store (what explain uses without --layer).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a copy of MODEL with the metadata here (without it: just show).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@reports_errors
def metadata(model: Path, labels: Path | None, layer: str | None, out: Path | None,
             force: bool, **kw: Any) -> None:
    """Show, or store in a copy of MODEL, what ort_cam reads from its metadata.

    ort_cam reads the preprocessing (ort_cam.preprocess), class names (ort_cam.labels)
    and default layer (ort_cam.layer) from the model's metadata_props, so that later
    commands need no flags. Without --out this prints what is stored.

    \b
    Examples:
        ort-cam metadata model.onnx
        ort-cam metadata model.onnx --preprocess caffe --labels synset.txt \\
            --layer conv5_out --out model_with_meta.onnx
    """
    if out is None:
        shown = stored_metadata(model)
        click.echo(json.dumps(shown, indent=2) if shown else "no ort_cam metadata stored")
        return
    written, pre = store_metadata(model, out, preprocess=pop_preprocess(kw), labels=labels,
                                  layer=layer, force=force)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"preprocess: {pre.to_json()}")
