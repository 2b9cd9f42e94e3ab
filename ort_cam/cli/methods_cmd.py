"""``ort-cam methods``: the registered CAM methods, one line each, with what each costs."""

from __future__ import annotations

import json

import click

from ..methods import method_records
from .options import json_option


@click.command(name="methods")
@json_option
def methods(as_json: bool) -> None:
    """List the CAM methods --methods accepts: name, what each costs per image and target
    (in model runs), and what it computes; * marks the default set.

    "The shared pass" is the one walk of m+1 gradient runs (forward and backward of the
    fused model) from the baseline to x that every gradient method reads; a method that
    reads only its last point (l = m) adds nothing to it.

    \b
    Example:
        ort-cam methods
        ort-cam explain model.onnx img.png --methods gradcam,hirescam,scorecam
    """
    rows = method_records()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max(len(str(r["name"])) for r in rows)
    for r in rows:
        mark = "*" if r["default"] else " "
        click.echo(f"{mark} {str(r['name']):{width}s}  {r['title']}. cost: {r['cost']}. "
                   f"{r['summary']}")
