"""Every ``fermetric ...`` command shown in the README and the tutorial parses with today's CLI.

A renamed flag or subcommand would otherwise leave the docs telling users to type something
that fails; parsing (not running) keeps this check instant.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fermetric.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/TUTORIAL.md")


def documented_commands(path: Path) -> list[str]:
    """The ``fermetric`` lines of the file's bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("fermetric "):
                commands.append(line)
    return commands


@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_parses(doc):
    commands = documented_commands(REPO / doc)
    assert len(commands) >= 5, f"{doc}: the command blocks were not found"
    parser = build_parser()
    for command in commands:
        # shell substitutions stand for a path
        argv = shlex.split(re.sub(r'"?\$\(.*?\)"?(?=\s|$)|\$\w+', "photo.jpg", command))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exit:
            pytest.fail(f"{doc}: `{command}` does not parse (exit {exit.code})")
