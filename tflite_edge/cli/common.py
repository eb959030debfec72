"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..runtime.backends import BACKEND_ORDER

__all__ = ["add_backend_options", "print_json", "progress"]


def add_backend_options(parser: argparse.ArgumentParser, *, threads: bool = True) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKEND_ORDER,
        help="TFLite interpreter to use (default: the first installed of " + ", ".join(BACKEND_ORDER) + ")",
    )
    if threads:
        parser.add_argument("--threads", type=int, default=None, metavar="N", help="interpreter threads")


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def progress(message: str) -> None:
    """Progress lines go to stderr so that stdout stays machine-readable."""
    print(f"… {message}", file=sys.stderr, flush=True)
