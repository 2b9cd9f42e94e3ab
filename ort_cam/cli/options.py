"""Options shared by several commands, each a decorator, and the one place where library
errors become one-line click errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import OrtCamError
from ..grad import SCORE_MODES

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
    "--score", type=click.Choice(SCORE_MODES), default=SCORE_MODES[0], show_default=True,
    help="What the gradient is taken of: softmax probabilities (a Softmax is appended when "
    "the model has none) or the logits that feed the model's Softmax (the model output "
    "itself when it has none).",
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.",
)

#: MODEL --layer NAME --score MODE: what every command that differentiates a model takes.
head_options = _compose(model_argument, layer_option, score_option)


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
