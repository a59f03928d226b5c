"""Every `predstore` command the guides show in a shell block names a command that exists, with
options it takes and values of the right type: parsed by the real command line, as written."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from predstore.cli import main

ROOT = Path(__file__).resolve().parents[1]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands() -> list[tuple[str, str]]:
    """(guide, command line) of each `predstore ...` line of the guides. ```sh and ```bash blocks, its comment,
    environment assignments and continuation lines taken care of; optional parts ([--x y]) kept."""
    found = []
    for guide in GUIDES:
        for block in re.findall(r"```(?:sh|bash)\n(.*?)```", guide.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                line = re.sub(r"^(export\s+)?([A-Z_]+=\S*\s+)+", "", line)
                if line.startswith("predstore ") and "$(" not in line:
                    found.append((guide.name, line.replace("[", "").replace("]", "")))
    return found


def parse(args: list[str]) -> click.Command:
    """Parse ``args`` as `predstore` would, down to its leaf command, running nothing."""
    ctx = main.make_context("predstore", list(args))
    command: click.Command = main
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # Click 9 keeps every token left in ``args``
            warnings.simplefilter("ignore", DeprecationWarning)
            tokens = [*getattr(ctx, "protected_args", []), *ctx.args]
        if not tokens and command.invoke_without_command:
            break
        name, sub, rest = command.resolve_command(ctx, tokens)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return command


def test_the_guides_show_commands() -> None:
    assert len(commands()) >= 20


@pytest.mark.parametrize(("guide", "line"), commands())
def test_each_command_of_the_guides_parses_as_written(guide: str, line: str) -> None:
    args = [a.replace("<", "").replace(">", "") for a in shlex.split(line)[1:]]
    try:
        parse(args)
    except click.ClickException as exc:
        pytest.fail(f"{guide}: `{line}` does not parse: {exc.format_message()}")
