"""Options shared by several commands, each a decorator, and the one place where library
errors become one-line click errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import OrtCamError
from ..grad import SCORE_MODES
from ..result import DEFAULT_STEPS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _compose(*decorators: Decorator) -> Decorator:
    """One decorator applying ``decorators`` in the order they are listed (top to bottom)."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


#: The ONNX file to read. Existence is checked by ``load_model`` so that a missing file gets
#: the same one-line error as a corrupt one.
model_argument = click.argument(
    "model", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL"
)

layer_option = click.option(
    "--layer", "-l", required=True, metavar="NAME",
    help="Tensor (or node) name of the layer to explain; `ort-cam layers MODEL` lists them.",
)

score_option = click.option(
    "--score", type=click.Choice(SCORE_MODES), default=None,
    help="What the gradient is taken of: softmax probabilities (a Softmax is appended when "
    "the model has none), the logits that feed the model's Softmax or Sigmoid (the model "
    "output itself when it has none), sigmoid probabilities (multi-label heads), or rest "
    "(logit + log softmax). Default: probability, or sigmoid where the output ends in a "
    "Sigmoid; a one-logit output is read as +-logit.",
)

def _target_kinds() -> list[str]:
    from ..targets import TARGET_KINDS

    return list(TARGET_KINDS)


#: What the output is read as (``Explainer(target_kind=...)``; ``ort-cam targets`` lists them).
target_kind_option = click.option(
    "--target-kind", type=click.Choice(_target_kinds()), default=None,
    help="What the output is read as (default: from the model's metadata, else the output's "
    "pattern; the line printed first says which): class scores, a one-logit binary "
    "classifier, ... (`ort-cam targets` lists the kinds).")

def _ints(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


def _box(ctx, param, value):
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise click.BadParameter(f"{value!r} is not X0,Y0,X1,Y1")
    return box


_FILE = click.Path(dir_okay=False, path_type=Path)
#: The target options that explain and export declare alike.
_BOX_FORMAT_OPTION = click.option(
    "--box-format", type=click.Choice(["xyxy", "cxcywh"]), default=None,
    help="detection: how --boxes-output holds boxes (default xyxy).")
_OBJECTNESS_OPTION = click.option(
    "--objectness/--no-objectness", default=None,
    help="detection: whether the head has an objectness row (default: from its layout).")
_HEAD_LAYOUT_OPTION = click.option(
    "--head-layout", type=click.Choice(["channels", "anchors"]), default=None,
    help="detection: the head's layout, [N, 4+C, A] (channels) or [N, A, 4+C] (anchors) "
    "(default: from its shape).")
_BLANK_OPTION = click.option(
    "--blank", type=int, default=None, help="sequence: the CTC blank index (default 0).")
#: A detection head's layout overrides, as explain and export declare them (audit takes them
#: together, read by ``pop_detection_head``).
detection_head_options = _compose(_OBJECTNESS_OPTION, _HEAD_LAYOUT_OPTION)


#: The values of a target of another kind than class (``Explainer(target=...)``), read by
#: ``pop_target_values``; each kind refuses those it does not read.
target_value_options = _compose(
    click.option("--mask", type=_FILE, default=None, metavar="FILE",
                 help="segment: the mask on the output's grid (.npy, or an image: nonzero "
                 "pixels; default: the pixels whose argmax is the class at x)."),
    click.option("--box", callback=_box, metavar="X0,Y0,X1,Y1",
                 help="segment: a box on the output's grid as the mask; detection: a box in "
                 "the input's pixels, explained through its best-matching anchor."),
    click.option("--threshold", type=float, default=None,
                 help="segment, one-channel map: the mask p > THRESHOLD (default 0.5)."),
    click.option("--box-iou", is_flag=True, default=None,
                 help="detection: add the IoU of the matched anchor's box with --box to its "
                 "score (pytorch-grad-cam's FasterRCNNBoxScoreTarget), differentiated too."),
    click.option("--boxes-output", default=None, metavar="NAME",
                 help="detection: the model's box output [N, A, 4] beside the scores it "
                 "explains (--output, [N, A, C]): a detector with boxes and scores before NMS."),
    _BOX_FORMAT_OPTION,
    click.option("--anchors", callback=_ints, metavar="I,J",
                 help="detection: explain these anchors (default: the top-k after NMS)."),
    click.option("--top-k", type=int, default=None,
                 help="detection: the k best boxes left by NMS (default 1)."),
    click.option("--conf", type=float, default=None,
                 help="detection: the least score of a box (default 0.25)."),
    click.option("--iou", type=float, default=None, help="detection: NMS IoU (default 0.45)."),
    _OBJECTNESS_OPTION,
    _HEAD_LAYOUT_OPTION,
    click.option("--concept", type=_FILE, default=None, metavar="FILE.npy",
                 help="embedding: the concept vector [D]."),
    click.option("--concept-image", type=_FILE, default=None, metavar="IMAGE",
                 help="embedding: the concept is this image's embedding."),
    click.option("--step", type=int, default=None,
                 help="sequence: explain this one step (default: every kept step of the "
                 "greedy decoding)."),
    _BLANK_OPTION,
    click.option("--target-weights", type=_FILE, default=None, metavar="FILE.npy",
                 help="any: W of the output's shape, the target Σ W ⊙ output."),
)
_TARGET_VALUES = {"mask": "mask", "box": "box", "threshold": "threshold", "anchors": "anchors",
                  "top_k": "top_k", "conf": "conf", "iou": "iou", "objectness": "objectness",
                  "head_layout": "layout", "box_iou": "box_iou",
                  "boxes_output": "boxes_output", "box_format": "box_format",
                  "concept": "concept",
                  "step": "step",
                  "blank": "blank", "target_weights": "weights"}

#: ``ort-cam export``'s target options: those fixed at export (the others are the
#: explainer's inputs at run time), option name -> ``TargetOptions`` field.
TARGET_AT_EXPORT = {name: _TARGET_VALUES[name] for name in (
    "threshold", "conf", "objectness", "head_layout", "boxes_output", "box_format", "box_iou",
    "blank")}
export_target_options = _compose(
    target_kind_option,
    click.option("--threshold", type=float, default=None,
                 help="segment, one-channel map: the default mask p > THRESHOLD (default 0.5)."),
    click.option("--conf", type=float, default=None,
                 help="detection: the least score of the default anchor (default 0.25)."),
    _OBJECTNESS_OPTION,
    _HEAD_LAYOUT_OPTION,
    click.option("--boxes-output", default=None, metavar="NAME",
                 help="detection: the model's box output [N, A, 4] beside the scores it "
                 "explains (--output, [N, A, C])."),
    _BOX_FORMAT_OPTION,
    click.option("--box-iou", is_flag=True, default=None,
                 help="detection: the explainer takes a box (its input box) and adds the IoU "
                 "of the matched anchor's box with it to the score."),
    _BLANK_OPTION,
)


def _array(path: Path, what: str) -> np.ndarray:
    """A .npy file, or (for a mask) an image's nonzero pixels."""
    from ..errors import InputError

    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read {path} as a .npy array ({exc})") from None
    if what != "mask":
        raise InputError(f"{what} must be a .npy file (got {path.name})")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return (np.asarray(im.convert("L")) > 0).astype(np.float32)
    except (UnidentifiedImageError, OSError):
        raise InputError(f"cannot read the mask {path} (.npy, or an image)") from None


def pop_target_values(kw: dict) -> dict:
    """Remove the target value options from ``kw``: ``Explainer``'s ``target`` dict (files
    read), without those not given. ``concept_image`` stays in ``kw``."""
    values = {}
    for flag, name in _TARGET_VALUES.items():
        value = kw.pop(flag)
        if value is None:
            continue
        if name in ("mask", "concept", "weights"):
            value = _array(value, "target weights" if name == "weights" else name)
        values[name] = value
    return values


def pop_detection_head(kw: dict) -> dict:
    """Remove --objectness and --head-layout from ``kw``: the ``TargetOptions`` fields
    (objectness, layout) given, for ``Explainer(target=...)``."""
    values = {_TARGET_VALUES[flag]: kw.pop(flag) for flag in ("objectness", "head_layout")}
    return {name: value for name, value in values.items() if value is not None}


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.",
)

#: The model output to explain (``Explainer(output=...)``, ``load_model(output=...)``).
output_option = click.option(
    "--output", "output", default=None, metavar="NAME",
    help="Model output to explain (default: the first); it must be class scores [N, C].",
)

def _grid(ctx, param, value):
    return None if value is None else _size(ctx, param, value)


def _layer_layouts() -> list[str]:
    from ..graph import LAYER_LAYOUTS

    return list(LAYER_LAYOUTS)


#: Where the graph does not tell a layer's layout or token grid (``Explainer(layer_layout=,
#: grid=, extra_tokens=)``).
layer_view_options = _compose(
    click.option("--layer-layout", type=click.Choice(_layer_layouts()), default=None,
                 help="The layer's layout, where the graph does not tell it: NCHW, NHWC, or "
                 "tokens [N,T,C] (a transformer's)."),
    click.option("--grid", callback=_grid, metavar="HxW",
                 help="A token layer's grid (default: from the patch embedding, else T - K "
                 "a square)."),
    click.option("--extra-tokens", type=click.IntRange(min=0), default=None, metavar="K",
                 help="A token layer's leading class/distillation tokens, left out of the map."),
)


def pop_layer_view(kw: dict) -> dict:
    """Remove the layer view options from ``kw``; ``Explainer``'s keyword arguments."""
    return {k: kw.pop(k) for k in ("layer_layout", "grid", "extra_tokens")}


#: MODEL --layer NAME --score MODE --output NAME (+ the layer view): what every command that
#: differentiates a model takes.
head_options = _compose(model_argument, layer_option, score_option, output_option,
                        layer_view_options)


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ort_cam's errors and file-system errors into ``click.ClickException``: one line
    on stderr and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OrtCamError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from exc

    return wrapper


# --- explain ------------------------------------------------------------------------------
def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        vals = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if len(vals) not in (1, 3):
        raise click.BadParameter("give one value or three (one per channel)")
    return vals * 3 if len(vals) == 1 else vals


def _size(ctx, param, value):
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW (e.g. 224x224)") from None
    return (h, w)


#: The size of a dynamic input, for the commands without preprocessing options (the others
#: take it as the preprocessing's --size, which sets both).
size_option = click.option(
    "--size", callback=_size, metavar="HxW",
    help="Height x width of a model input whose height and width are dynamic (default: the "
    "size stored in the model's metadata, else 224x224, with a note).")


def _choices(name: str) -> tuple[str, ...]:
    from ..methods import MethodOptions

    return MethodOptions._CHOICES[name]


def _default_methods() -> str:
    """The registry's default set, read when the command runs (not when it is defined)."""
    from ..methods import default_methods

    return ",".join(default_methods())


def _methods_help() -> str:
    from ..methods import METHODS

    return (f"Comma-separated methods, of: {', '.join(METHODS)} (default: "
            f"{_default_methods()}).")


def _preset_names() -> list[str]:
    from ..preprocess import PRESETS

    return list(PRESETS)


#: Preprocessing: a preset and per-field overrides, gathered by ``pop_preprocess``.
_PREPROCESS_FIELDS = ("size", "resize", "scale", "mean", "std", "channels", "layout")
preprocess_options = _compose(
    click.option("--preprocess", "preset", type=click.Choice(_preset_names()), default=None,
                 help="Preset (default: the model's stored preprocessing, else imagenet)."),
    click.option("--size", callback=_size, metavar="HxW",
                 help="Model input size; sets a dynamic height and width too (default: from "
                 "the model's input shape, else its stored preprocessing, else 224x224)."),
    click.option("--resize", type=click.Choice(["stretch", "crop", "letterbox"]), default=None,
                 help="Resize mode: stretch, short side + centre crop, or letterbox."),
    click.option("--scale", type=float, default=None, help="Pixel scale, e.g. 0.0039215686."),
    click.option("--mean", callback=_floats, metavar="M[,M,M]",
                 help="Per-channel mean after scaling."),
    click.option("--std", callback=_floats, metavar="S[,S,S]",
                 help="Per-channel std after scaling."),
    click.option("--channels", type=click.Choice(["RGB", "BGR"]), default=None,
                 help="Channel order the model expects."),
    click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default=None,
                 help="Input layout (default: from the model's input shape)."),
)


def pop_preprocess(kw: dict) -> dict:
    """Remove the preprocessing options from ``kw``; the dict form ``Explainer`` takes."""
    spec = {"preset": kw.pop("preset")}
    for name in _PREPROCESS_FIELDS:
        value = kw.pop(name)
        if value is not None:
            spec[name] = value
    return spec


def _attribute_help() -> dict[str, str]:
    """Each option's line of ``MethodOptions``' docstring ("name[, name2]: text", continued
    on deeper-indented lines), by option name: the CLI's help is the library's."""
    import inspect
    import re

    from ..methods import MethodOptions

    out: dict[str, str] = {}
    names: list[str] = []
    for line in inspect.cleandoc(MethodOptions.__doc__ or "").splitlines():
        head = re.match(r"    ([a-z_]+(?:, [a-z_]+)*): (.*)", line)
        if head:
            names = head.group(1).split(", ")
            for n in names:
                out[n] = head.group(2)
        elif line.startswith("        ") and names:
            for n in names:
                out[n] += " " + line.strip()
        else:
            names = []
    return {k: v.replace("``", "") for k, v in out.items()}


#: Bounds the library leaves to the method (MethodOptions checks the rest): x > 0.
_POSITIVE = ("fem_k", "kpca_gamma")


def _library_check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """The value as ``MethodOptions`` takes it (its own checks, as one-line usage errors);
    an unset flag is None, so that only what was given is passed on."""
    from ..methods import MethodOptions

    if value is None or value is False:
        return None
    try:
        MethodOptions.from_kwargs(**{str(param.name): value})
    except OrtCamError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _later_option(f: Field, helps: dict[str, str]) -> Decorator:
    """The click option of ``MethodOptions`` field ``f``: a flag for a bool, a choice where
    the options have choices, else its number type (None when its default may be None);
    ``helps``: ``_attribute_help()``."""
    from ..methods import MethodOptions

    flag = "--" + f.name.replace("_", "-")
    text = helps.get(f.name, f.name.replace("_", " "))
    kind = str(f.type).split(" | ")[0]
    if kind == "bool":
        return click.option(flag, f.name, is_flag=True, default=None, callback=_library_check,
                            help=text)
    if f.name in MethodOptions._CHOICES:
        typ: Any = click.Choice(MethodOptions._CHOICES[f.name])
    elif kind == "int":
        typ = int
    else:
        typ = click.FloatRange(min=0, min_open=True) if f.name in _POSITIVE else float
    shown = "" if f.default is None else f" Default: {f.default}."
    return click.option(flag, f.name, type=typ, default=None, callback=_library_check,
                        help=text + shown)


def _later_method_options() -> Decorator:
    from ..methods import MethodOptions

    helps = _attribute_help()  # the docstring parsed once, not once per option
    return _compose(*(_later_option(f, helps) for f in fields(MethodOptions)
                      if f.metadata.get("later")))


#: Every option of the methods added after the three (``MethodOptions``' later fields:
#: eigen_smooth, aug_smooth, gradcampp_eps, fem_k, kpca_*, finer_*, run_batch), named,
#: typed and described from ``MethodOptions`` itself; unset ones are None (left out).
later_method_options = _later_method_options()

method_options = _compose(
    click.option("--gradcam-weights", type=click.Choice(_choices("gradcam_weights")),
                 default=None, help="Grad-CAM weights: mean of G (eq 1) or of ReLU(G) (eq 2)."),
    click.option("--igcam-variant", type=click.Choice(_choices("igcam_variant")), default=None,
                 help="Integrated Grad-CAM: the paper's eq 23 or the authors' notebook."),
    click.option("--rsi-rule", type=click.Choice(_choices("rsi_rule")), default=None,
                 help="RSI quadrature: trapezoid (default) or riemann."),
    click.option("--rsi-selection", type=click.Choice(_choices("rsi_selection")), default=None,
                 help="RSI unit selection: guided (default), positive or none."),
    click.option("--eps", type=float, default=None, help="Normalisation epsilon (1e-8)."),
    click.option("--auto-tolerance", type=float, default=None,
                 help="Completeness gap that --steps auto aims below (0.05)."),
    later_method_options,
)

#: The path and what it starts from (explain and audit).
path_options = _compose(
    click.option("--steps", default=str(DEFAULT_STEPS), show_default=True, metavar="M|auto",
                 help="Path steps m, or auto (double m until the completeness gap is small)."),
    click.option("--methods", default=_default_methods, help=_methods_help()),
)
baseline_options = _compose(
    click.option("--baseline", default="black", show_default=True, metavar="B",
                 help="black (in pixel space), zeros (model space), blur, noise, or an image."),
    click.option("--baseline-seed", type=int, default=None, help="Seed of the noise baseline."),
    click.option("--blur-radius", type=float, default=None, help="Radius of the blur baseline."),
)
labels_option = click.option(
    "--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Class names, one per line (default: the model's stored labels).")
#: Every command that builds an explainer takes it (``Explainer(cache=...)``).
cache_option = click.option(
    "--no-cache", "no_cache", is_flag=True,
    help="Neither read nor write the prepared-model cache ($ORT_CAM_CACHE, else the user "
    "cache directory): load and differentiate the model in this run.")
runtime_options = _compose(
    cache_option,
    click.option("--providers", default="auto", show_default=True,
                 help="auto (CUDA when usable, else CPU), cpu, cuda, or provider names."),
    click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads."),
    click.option("--chunk-size", type=int, default=None,
                 help="Path points per session run (default: from a 1 GiB budget)."),
)

#: What an explainer is built with, after the model and layer: score, output, the layer view,
#: preprocessing, the path and its baseline (audit and export; explain takes them with --json
#: between the layer view and preprocessing).
explainer_options = _compose(
    score_option,
    output_option,
    layer_view_options,
    preprocess_options,
    path_options,
    baseline_options,
)

explain_options = _compose(
    model_argument,
    click.option("--layer", "-l", default=None, metavar="NAME",
                 help="Layer tensor or node name (default: the one stored in the model)."),
    score_option,
    target_kind_option,
    output_option,
    layer_view_options,
    json_option,
    preprocess_options,
    path_options,
    click.option("--target", multiple=True, metavar="T",
                 help="top1 (default), a class index, top:K or a label; repeat for several."),
    target_value_options,
    baseline_options,
    labels_option,
    runtime_options,
    method_options,
)
