"""Commands over a model's graph: ``layers`` lists where a CAM can be taken, ``split`` writes
the prefix and gradient head models for one layer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from ..errors import OrtCamError
from ..files import refuse_overwrite
from ..grad import LayerInfo, list_layers, split_models
from ..graph import LayerHint, LoadedModel, load_model, view_layer
from ..graph.save import data_file, save_model
from ..targets import TargetOptions, read_output
from .options import (
    head_options,
    json_option,
    model_argument,
    output_option,
    reports_errors,
    size_option,
)

SPLIT_FILES = ("prefix.onnx", "head.onnx", "manifest.json")


def _shape(shape: Sequence[int | str]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _layer_row(info: LayerInfo) -> list[str]:
    layout = f"{info.layout} (axis {info.channel_axis})" if info.layout else "?"
    if info.grid is not None:
        layout = (f"tokens {info.grid[0]}x{info.grid[1]}"
                  + (f"+{info.extra_tokens}" if info.extra_tokens else "") + " (axis 2)")
    diff = "yes" if info.differentiable else f"no: {info.blocker}"
    return [info.name, info.op, _shape(info.shape), layout, diff]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _reading_line(lm: LoadedModel) -> str:
    """What the output is read as (the kind detected and its target), or why it cannot be."""
    try:
        return read_output(lm, lm.output, TargetOptions()).line()
    except OrtCamError as exc:
        return str(exc)


@click.command()
@model_argument
@json_option
@click.option("--all", "show_all", is_flag=True,
              help="Also list rank-4 tensors with a 1x1 grid (pooled features).")
@output_option
@size_option
@reports_errors
def layers(model: Path, as_json: bool, show_all: bool, output: str | None,
           size: tuple[int, int] | None) -> None:
    """List the layers of MODEL a class activation map can be taken at.

    Each row is a rank-4 float tensor, or a transformer's token tensor [N,T,C] whose grid
    can be told (tokens HxW+K: an HxW grid after K extra tokens): its name (what --layer
    takes), the op that produces it, its shape, where its channels are, and whether the
    gradient of the score can be carried down to it (if not, the first op in the way
    without a gradient rule).

    \b
    Examples:
        ort-cam layers resnet18.onnx
        ort-cam layers resnet18.onnx --json > layers.json
    """
    lm = load_model(model, size=size, output=output)
    infos = list_layers(lm, spatial_only=not show_all)
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    click.echo(f"{model.name}: {'; '.join(lm.notes)}; inputs {', '.join(lm.input_names)} "
               f"-> output {lm.output}; {len(infos)} candidate layers")
    click.echo(_reading_line(lm))
    if not infos:
        click.echo("no rank-4 float tensor with a spatial grid: nothing to explain here")
        return
    header = ["LAYER", "OP", "SHAPE", "LAYOUT", "DIFFERENTIABLE"]
    click.echo(_table(header, [_layer_row(info) for info in infos]))


@click.command()
@head_options
@click.option("--out", "-o", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write prefix.onnx, head.onnx and manifest.json to.")
@click.option("--force", is_flag=True, help="Overwrite files already in DIR.")
@size_option
@reports_errors
def split(model: Path, layer: str, score: str | None, output: str | None, out_dir: Path,
          force: bool, size: tuple[int, int] | None, **view) -> None:
    """Split MODEL at a layer into prefix.onnx and a gradient head.onnx.

    prefix.onnx maps the model inputs to the layer tensor and every other tensor that
    crosses the cut. head.onnx takes those tensors (under their original names) and
    target_weights [N,C] and returns scores [N,C] and grad, the gradient of
    sum(target_weights * scores) with respect to the layer. manifest.json records the
    layer, its layout and the inputs and outputs of both models.

    \b
    Examples:
        ort-cam split resnet18.onnx --layer /layer4/layer4.1/relu_1/Relu_output_0 --out cut/
        ort-cam split model.onnx --layer conv5_out --score logit --out cut/ --force
    """
    names = [*SPLIT_FILES, *(data_file(out_dir / name).name for name in SPLIT_FILES[:2])]
    refuse_overwrite(out_dir, force, names=names)
    lm, _ = view_layer(load_model(model, size=size, output=output), layer,
                       LayerHint(view["layer_layout"], view["grid"], view["extra_tokens"]))
    reading = read_output(lm, lm.output, TargetOptions(score=score))
    models = split_models(lm, layer, reading.head)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = models.manifest
    written = save_model(models.prefix, out_dir / "prefix.onnx")
    written += save_model(models.head, out_dir / "head.onnx")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    written.append(out_dir / "manifest.json")
    click.echo(f"split {model.name} at {manifest['layer']} ({manifest['layout']} "
               f"{_shape(manifest['layer_shape'])}), score {reading.head.transform}")
    for note in lm.notes[1:]:  # past the opset line: what loading fixed or rewrote
        click.echo(f"  note: {note}")
    click.echo(f"  head inputs:  {', '.join(manifest['head_inputs'])}")
    click.echo(f"  head outputs: {', '.join(manifest['head_outputs'])}")
    for path in written:
        click.echo(f"  wrote {path}")
