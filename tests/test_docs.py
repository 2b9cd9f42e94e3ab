"""Every command documents itself (help text with an example) and is documented, with every
option, on its page of the manual (docs/*.md); every page of the manual is linked from README.md,
every relative link resolves, and the README opens with the commands CI runs."""

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
DOCS = ROOT / "docs"
PAGES = {page.name: page.read_text() for page in sorted(DOCS.glob("*.md"))}
MANUAL = ("cli.md", "python-api.md", "methods.md", "models.md", "audits.md", "export.md",
          "speed.md", "verification.md")
# The page that documents each command; the others are on docs/cli.md.
PAGE_OF = {"audit": "audits.md", "audit-merge": "audits.md", "audit-report": "audits.md",
           "export": "export.md"}
# Options several commands share are documented once: explain's (preprocessing, path, target,
# providers) on docs/cli.md, the methods' options on docs/methods.md.
SHARED_OPTION_PAGES = ("cli.md", "methods.md")


def _page_of(path: tuple[str, ...]) -> str:
    return PAGE_OF.get(path[0], "cli.md")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    """(path, command) for every command and subcommand under ``group`` (through click's
    own listing: the commands of ``ort-cam`` are imported when first asked for)."""
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        assert command is not None, name
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


def test_the_manual_has_its_pages():
    assert set(MANUAL) <= set(PAGES), f"missing: {sorted(set(MANUAL) - set(PAGES))}"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_page_is_linked_from_the_readme(name):
    assert f"](docs/{name})" in README, f"README.md does not link docs/{name}"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown text (code blocks left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def _links(text: str):
    """The relative targets of a Markdown text's links and images (code blocks left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target):
            yield target


@pytest.mark.parametrize("source", ["README.md", *(f"docs/{name}" for name in PAGES)])
def test_relative_links_resolve(source):
    base = (ROOT / source).parent
    for target in _links((ROOT / source).read_text()):
        file, _, anchor = target.partition("#")
        path = (base / file).resolve() if file else ROOT / source
        assert path.is_file(), f"{source}: {target} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path.read_text()), f"{source}: no heading #{anchor} in {file}"


def test_readme_is_a_front_page():
    # The reference lives in docs/; the README stays short enough to read as a front page.
    assert len(README.splitlines()) <= 250


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=IDS)
def test_command_is_on_its_page(path):
    name, page = " ".join(path), _page_of(path)
    assert re.search(rf"`ort-cam {re.escape(name)}(?![\w-])", PAGES[page]), (
        f"docs/{page} does not mention `ort-cam {name}`"
    )


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_every_option_is_on_its_page(path, command):
    pages = {_page_of(path), *SHARED_OPTION_PAGES}
    text = "\n".join(PAGES[page] for page in sorted(pages))
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            longest = max(param.opts, key=len)
            assert longest in text, f"{longest} of {path} is on none of docs/{sorted(pages)}"


def test_readme_opens_with_the_commands_ci_runs():
    first_block = re.search(r"```\w*\n(.*?)```", README, re.S)
    assert first_block and README.index("```") < README.index("\n## ")
    lines = first_block.group(1).strip().splitlines()
    assert lines == ["pip install . && ort-cam demo", "pip install '.[test]' && pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install '.[test]'" in ci
    assert re.search(r"^\s*pytest\b", ci, re.M)
