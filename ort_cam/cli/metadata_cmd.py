"""``ort-cam metadata``: show or store a model's preprocessing, labels and default layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import OrtCamError
from ..explainer import LABELS_KEY, LAYER_KEY, read_labels
from ..graph.load import read_model
from ..graph.save import save_model
from ..preprocess import METADATA_KEY, resolve_preprocess, write_metadata
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
    proto = read_model(model)
    stored = {p.key: p.value for p in proto.metadata_props}
    if out is None:
        shown = {k: json.loads(stored[k]) for k in (METADATA_KEY, LABELS_KEY) if k in stored}
        if LAYER_KEY in stored:
            shown[LAYER_KEY] = stored[LAYER_KEY]
        if LABELS_KEY in shown:
            names = shown[LABELS_KEY]
            shown[LABELS_KEY] = f"{len(names)} labels: {', '.join(names[:5])}" + (
                " …" if len(names) > 5 else "")
        click.echo(json.dumps(shown, indent=2) if shown else "no ort_cam metadata stored")
        return
    if out.exists() and not force:
        raise OrtCamError(f"{out} exists; pass --force to overwrite")
    if out.resolve() == model.resolve():
        raise OrtCamError("--out must differ from MODEL (ort-cam never rewrites your model)")
    spec = pop_preprocess(kw)
    shape = [d.dim_value or d.dim_param for d in
             proto.graph.input[0].type.tensor_type.shape.dim]
    pre = resolve_preprocess(proto, shape, spec.pop("preset"), **spec)
    write_metadata(proto, pre)
    extra = {}
    if labels is not None:
        extra[LABELS_KEY] = json.dumps(read_labels(labels))
    if layer is not None:
        extra[LAYER_KEY] = layer
    keep = [p for p in proto.metadata_props if p.key not in extra]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in extra.items():
        proto.metadata_props.add(key=key, value=value)
    for path in save_model(proto, out):
        click.echo(f"wrote {path}")
    click.echo(f"preprocess: {pre.to_json()}")
