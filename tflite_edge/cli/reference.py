"""The CLI reference (docs/cli.md), generated from the parsers themselves.

    python -m tflite_edge.cli.reference > docs/cli.md

A test keeps docs/cli.md equal to this output, so the reference never drifts from the code.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from . import build_parser

__all__ = ["render_reference"]

WIDTH = "100"


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for name, child in _subcommands(parser):
        yield from _walk(child, f"{path} {name}")


def render_reference() -> str:
    """Markdown with the help of every command and subcommand, in help order."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps to the terminal width; fix it for stable docs
    try:
        parts = [
            "# CLI reference\n",
            "Generated from the parsers by `python -m tflite_edge.cli.reference`; "
            "`tflite-edge COMMAND --help` prints the same.\n",
        ]
        for path, parser in _walk(build_parser(), "tflite-edge"):
            parts.append(f"## `{path}`\n\n```\n{parser.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


if __name__ == "__main__":
    print(render_reference(), end="")
