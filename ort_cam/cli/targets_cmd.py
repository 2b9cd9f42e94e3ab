"""``ort-cam targets``: the registered target kinds, one line each, with how to pick one."""

from __future__ import annotations

import json

import click

from ..targets import target_records
from .options import json_option


@click.command(name="targets")
@json_option
def targets(as_json: bool) -> None:
    """List the target kinds --target-kind accepts: what each explains and how it is asked
    for. By default the kind is read from the model's metadata, else from its output (a
    Sigmoid at its end, one value per image, its rank and layout); `ort-cam layers` and
    `ort-cam explain` print the one taken.

    \b
    Example:
        ort-cam targets
        ort-cam explain tagger.onnx img.png --target-kind class --score sigmoid --out cams/
    """
    rows = target_records()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:{width}s}  {r['title']}. {r['usage']}")
