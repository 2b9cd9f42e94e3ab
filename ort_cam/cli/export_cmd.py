"""``ort-cam export``: the whole explainer as one ONNX model, for onnxruntime in any language."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click
import onnx

from ..export import INPUT_KINDS, export_explainer
from ..files import refuse_overwrite
from ..methods import MethodOptions
from ..result import parse_steps
from .explain_cmd import parse_methods
from .options import (
    TARGET_AT_EXPORT,
    cache_option,
    explainer_options,
    export_target_options,
    method_options,
    model_argument,
    pop_layer_view,
    pop_preprocess,
    reports_errors,
)


def _optional(optional: bool, required: bool) -> bool:
    if optional and required:
        raise click.UsageError("--optional-inputs and --required-inputs contradict each other; "
                               "pass one")
    return optional


def _summary(proto: onnx.ModelProto, out: Path) -> str:
    meta = {p.key.rsplit(".", 1)[-1]: p.value for p in proto.metadata_props}
    ins = ", ".join(i.name for i in proto.graph.input)
    outs = ", ".join(o.name for o in proto.graph.output)
    walk = "chunk, unrolled" if meta.get("unroll") == "true" else "Loop iteration"
    return (f"wrote {out} (m={meta['steps']}, {meta['chunk']} path points per {walk})\n"
            f"  inputs: {ins}\n  outputs: {outs}")


@click.command(name="export")
@model_argument
@click.option("--layer", "-l", default=None, metavar="NAME",
              help="Layer tensor or node name (default: the one stored in the model).")
@click.option("--out", "-o", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path), help="The explainer .onnx file.")
@explainer_options
@export_target_options
@method_options
@click.option("--input", "input_kind", type=click.Choice(INPUT_KINDS), default=INPUT_KINDS[0],
              show_default=True, help="pixels: uint8 [H, W, 3] RGB at the model's input size, "
              "preprocessing in the graph; tensor: the model's own input (batch 1).")
@click.option("--chunk-size", type=int, default=None,
              help="Path points per Loop iteration (default: from a 1 GiB budget).")
@click.option("--optional-inputs", is_flag=True,
              help="Give target_index and baseline defaults (initializers under their names) "
              "that onnxruntime's Python, C, C++, C# and Java APIs may omit; OpenVINO then "
              "fixes them and JavaScript cannot feed them. Default: plain inputs that every "
              "engine feeds (target -1 = top-1, a baseline with 0 rows = the default one).")
@click.option("--required-inputs", is_flag=True, hidden=True,
              help="Plain inputs (the default now; kept for old command lines).")
@click.option("--unroll", is_flag=True,
              help="Unroll the path's Loop into one copy of the gradient graph per chunk, for "
              "engines without Loop (tract); the file grows by the graph's nodes per chunk.")
@click.option("--force", is_flag=True, help="Overwrite FILE.")
@cache_option
@reports_errors
def export(model: Path, out: Path, force: bool, **kw) -> None:
    """Write the whole explainer (preprocessing, the path, every method's map, RSI's
    completeness gap) as one ONNX model that any onnxruntime computes with one run().

    Inputs: image (uint8 [H, W, 3], or with --input tensor the model's own input),
    target_index (int64, -1 = top-1) and baseline (same kind as the image; [0, ...], no
    rows, = the default: black unless --baseline says otherwise).
    Outputs: target, scores, y0, ym, <method>_raw, <method>_map and rsi_completeness_gap,
    the same numbers as `ort-cam explain`. Layer and preprocessing default to the model's
    metadata; --steps auto, baseline blur and the auto options are refused by name.
    With --target-kind segment|embedding|detection|sequence|any (or such an output detected)
    the target's values are inputs instead of target_index: target_index and target_mask,
    concept, anchors and target_index, step and target_index, or target_weights; the W
    chosen is the output weights (docs/export.md, "Targets").

    \b
    Examples:
        ort-cam export model.onnx --layer conv5_out --out explainer.onnx
        ort-cam export models/demo/demo_cnn.onnx --steps 32 --methods gradcam,rsi \\
            --rsi-rule riemann --out demo_explainer.onnx
    """
    refuse_overwrite(out, force)
    options = {f.name: kw.pop(f.name) for f in fields(MethodOptions) if f.name in kw}
    kw.pop("blur_radius")  # only read by baseline blur, which is refused
    seed = kw.pop("baseline_seed")
    target = {key: kw.pop(name) for name, key in TARGET_AT_EXPORT.items()}
    proto = export_explainer(
        model, kw.pop("layer"), out, steps=parse_steps(kw.pop("steps"), "--steps"),
        methods=parse_methods(kw.pop("methods")),
        options={k: v for k, v in options.items() if v is not None},
        preprocess=pop_preprocess(kw), score=kw.pop("score"), input_kind=kw.pop("input_kind"),
        baseline=kw.pop("baseline"), baseline_seed=seed or 0, chunk_size=kw.pop("chunk_size"),
        optional_inputs=_optional(kw.pop("optional_inputs"), kw.pop("required_inputs")),
        unroll=kw.pop("unroll"), cache=not kw.pop("no_cache"),
        output=kw.pop("output"), target_kind=kw.pop("target_kind"),
        target={k: v for k, v in target.items() if v is not None}, **pop_layer_view(kw))
    click.echo(_summary(proto, out))
