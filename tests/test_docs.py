"""Every command documents itself (help text with an example) and is in README.md, and the
README opens with the commands CI runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ort_cam.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    """(path, command) for every command and subcommand under ``group``."""
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands(main))
IDS = [" ".join(path) for path, _ in COMMANDS]


def test_there_are_commands():
    assert {path[0] for path, _ in COMMANDS} >= {"layers", "split", "demo"}


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_command_has_help_with_an_example(path, command):
    assert command.help and command.help.strip()
    help_text = inspect.cleandoc(command.help)
    assert "\b\nExample" in help_text, "end the help with a \\b literal example block"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert f"Usage: ort-cam {' '.join(path)}" in result.output
    assert f"ort-cam {' '.join(path)}" in result.output.split("Example", 1)[1]


def test_group_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for path, _ in COMMANDS:
        assert f"  {path[0]} " in result.output


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=IDS)
def test_command_is_in_readme(path):
    name = " ".join(path)
    assert re.search(rf"`ort-cam {re.escape(name)}\b", README), (
        f"README.md does not mention `ort-cam {name}`"
    )


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_every_option_is_in_readme(path, command):
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            longest = max(param.opts, key=len)
            assert longest in README, f"README.md does not mention {longest} of {path}"


def test_readme_opens_with_the_commands_ci_runs():
    first_block = re.search(r"```\w*\n(.*?)```", README, re.S)
    assert first_block and README.index("```") < README.index("\n## ")
    lines = first_block.group(1).strip().splitlines()
    assert lines == ["pip install . && ort-cam demo", "pip install '.[test]' && pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install '.[test]'" in ci
    assert re.search(r"^\s*pytest\b", ci, re.M)
