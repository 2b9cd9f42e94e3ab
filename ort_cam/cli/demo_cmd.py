"""``ort-cam demo``: the default methods on the bundled model and images, with energy in box."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..audit.metrics import pixel_energy
from ..demo import claim_output, demo_dir, demo_samples
from ..explainer import Explainer
from ..methods import METHODS
from ..outputs import write_outputs
from ..render import class_text
from ..result import DEFAULT_STEPS
from .explain_cmd import parse_methods
from .options import cache_option, later_method_options, reports_errors


@click.command()
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("ort-cam-demo"), show_default=True, help="Where to write panels.")
@click.option("--steps", type=int, default=DEFAULT_STEPS, show_default=True,
              help="Path steps m.")
@click.option("--force", is_flag=True, help="Write into --out even if it holds other files.")
@click.option("--methods", default=None, metavar="A,B,...",
              help="Comma-separated methods to show, any of `ort-cam methods` (default: the "
              "default set).")
@cache_option
@later_method_options
@reports_errors
def demo(out: Path, steps: int, force: bool, no_cache: bool, methods: str | None,
         **options) -> None:
    """Explain the bundled demo images with the default methods (or --methods).

    The demo model is a small CNN trained on generated scenes (shapes on cluttered,
    textured backgrounds) whose object boxes are known exactly. For each image this
    writes a panel with the true box outlined and prints the share of each map's energy
    that falls inside the box. Some images are saturated (top probability > 0.999):
    there Grad-CAM's probability gradients vanish and its map goes dark, while the
    integrated methods still point at the object.

    \b
    Example:
        ort-cam demo
        ort-cam demo --out /tmp/demo --steps 100
        ort-cam demo --methods gradcam,hirescam,scorecam,fem --out /tmp/demo
    """
    names = parse_methods(methods)
    given = {k: v for k, v in options.items() if v is not None}
    d = demo_dir()
    samples = demo_samples(d)
    claim_output(out, force)
    ex = Explainer(d / "demo_cnn.onnx", cache=not no_cache)
    energies: dict[str, list[float]] = {}
    for s, r in zip(samples, ex.explain_iter([s.path for s in samples], steps=steps,
                                                       methods=names, **given)):
        write_outputs(r, out, s.path.stem, str(s.path), box=s.box)
        parts = []
        for name, res in r.methods.items():
            e = pixel_energy(res.map, s.box)
            energies.setdefault(name, []).append(e)
            parts.append(f"{METHODS[name].title} {e:.2f}" + (" (dark)" if res.dark else ""))
        verdict = "right" if r.target == s.cls else "WRONG"
        click.echo(f"{s.path.name}: true {s.label}, predicted {class_text(r)} ({verdict})\n"
                   f"    energy in box: " + ", ".join(parts))
    click.echo("mean energy in box: " + ", ".join(
        f"{METHODS[m].title} {np.nanmean(v):.3f}" for m, v in energies.items()))
    click.echo(f"panels and arrays in {out}/ ({len(samples)} images, results.jsonl)")
