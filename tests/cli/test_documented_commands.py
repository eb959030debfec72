"""Every `tflite-edge ...` command shown in README.md and docs/ is one the CLI accepts."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from tflite_edge.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        if path.name == "cli.md":  # generated from the parsers themselves
            continue
        for block in FENCE.findall(path.read_text()):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("tflite-edge ") and not re.search(r"\.\.\.|…| \[-", line):  # not synopses
                    found.append((f"{path.relative_to(REPO)}", line))
    return found


@pytest.mark.parametrize(("where", "command"), documented_commands())
def test_documented_command_parses(where: str, command: str) -> None:
    words = shlex.split(command, comments=True)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(words[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: `{command}` is refused: {errors.getvalue().strip().splitlines()[-1:]} ({e})")
    assert getattr(args, "func", None) is not None, f"{where}: `{command}` names no command"


def test_commands_are_found() -> None:
    commands = documented_commands()
    assert len(commands) > 40
    assert any("firmware bridge --port" in c for _, c in commands if _ == "README.md")
