"""The ``ort-cam`` command line: a thin layer over ort_cam's library functions."""

from __future__ import annotations

import click

from .._version import __version__
from .audit_cmd import audit, audit_merge, audit_report
from .demo_cmd import demo
from .explain_cmd import explain
from .export_cmd import export
from .graph_cmds import layers, split
from .metadata_cmd import metadata
from .methods_cmd import methods
from .targets_cmd import targets


@click.group(name="ort-cam")
@click.version_option(__version__, "--version", prog_name="ort-cam")
def main() -> None:
    """Explain ONNX image classifiers with gradient-based class activation maps.

    \b
    Examples:
        ort-cam layers model.onnx
        ort-cam split model.onnx --layer conv5_out --out cut/
    """


for _command in (explain, export, layers, split, metadata, demo, audit, audit_merge,
                 audit_report, methods, targets):
    main.add_command(_command)

__all__ = ["main"]
