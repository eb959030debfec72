"""The ``tflite-edge`` command line: a thin layer over the public Python API.

Each subcommand lives in its own module here with a ``register(subparsers)`` function
that adds its parser and sets ``func``; ``COMMANDS`` lists them in help order. Command
modules import heavy dependencies (TensorFlow, paho-mqtt) inside ``func`` only, so
``tflite-edge --help`` is fast and works on a device.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .. import __version__
from ..errors import TfliteEdgeError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (
    "demo",
    "convert",
    "inspect",
    "run",
    "evaluate",
    "profile",
    "zoo",
    "device",
    "edge",
    "policy",
    "agent",
    "firmware",
    "edgetpu",
    "telemetry",
    "monitor",
    "plot",
    "keys",
    "broker_config",
)

DESCRIPTION = """\
Device-edge co-inference of early-exit neural networks over MQTT.

See it all work first:  tflite-edge demo        (or `make demo`; report in out/demo)

Typical flow:
  tflite-edge zoo digits -o digits.keras --data val.npz --calibration calib.npy
  tflite-edge convert digits.keras -o bundle --auto-cuts 2 --calibration calib.npy --validation val.npz
  tflite-edge inspect bundle
  tflite-edge edge --broker mqtt://HOST:1883 --bundle bundle                  # on the edge server
  tflite-edge device --broker mqtt://HOST:1883 --bundle bundle --partition 1 \\
      --deadline-ms 50 --input x.npy                                         # on the device
  tflite-edge telemetry --broker mqtt://HOST:1883                            # anywhere

Guides: docs/index.md. Every command explains itself: tflite-edge COMMAND --help

Exit status: 0 done; 2 an error (one `error:` line says what and how to fix it);
1 `device`/`firmware bridge` asked to offload and nothing was; 130 Ctrl-C; 143 SIGTERM.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tflite-edge", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tflite-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (what systemd and `kill` send), raised like Ctrl-C so every command shuts
    down the same clean way: contexts close, telemetry publishes its last window and the
    retained status says ``offline`` (shutdown) rather than ``connection lost``."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        previous = None  # signal handlers can only be set from the main thread
    if previous is signal.SIG_DFL:  # not when embedded in a program that handles SIGTERM itself
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TfliteEdgeError as e:
        # A user error: one line naming the problem and the fix; 2, like a usage error.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM): shut down cleanly", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
