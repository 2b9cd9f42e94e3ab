"""The ``ort-cam`` command line: a thin layer over ort_cam's library functions.

Each command's module is imported when that command runs (or when ``--help`` lists them all),
so that ``ort-cam explain`` does not import what the export or the audit need."""

from __future__ import annotations

import importlib

import click

from .._version import __version__

#: command name -> (module under ort_cam.cli, function), in no particular order (click sorts).
COMMANDS = {
    "explain": ("explain_cmd", "explain"), "export": ("export_cmd", "export"),
    "layers": ("graph_cmds", "layers"), "split": ("graph_cmds", "split"),
    "metadata": ("metadata_cmd", "metadata"), "demo": ("demo_cmd", "demo"),
    "audit": ("audit_cmd", "audit"), "audit-merge": ("audit_cmd", "audit_merge"),
    "audit-report": ("audit_cmd", "audit_report"), "methods": ("methods_cmd", "methods"),
    "targets": ("targets_cmd", "targets"),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"{__name__}.{module}"), name)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(name="ort-cam", cls=_LazyGroup)
@click.version_option(__version__, "--version", prog_name="ort-cam")
def main() -> None:
    """Explain ONNX image classifiers with gradient-based class activation maps.

    \b
    Examples:
        ort-cam layers model.onnx
        ort-cam split model.onnx --layer conv5_out --out cut/
    """


__all__ = ["main"]
