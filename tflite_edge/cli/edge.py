"""tflite-edge edge: serve the tail segments of bundles to devices over MQTT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .common import (
    add_backend_options,
    add_bundle_key_option,
    add_codec_option,
    add_prefix_option,
    add_state_file_option,
    open_bundle,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "edge", help="serve bundles to devices over MQTT (stateless, load-shared workers)",
        description=(
            "Answer co-inference requests for one or more bundles. Workers join an MQTT 5 shared "
            "subscription ($share/GROUP/PREFIX/req/+), so any number of edge processes, on one or many "
            "machines, share the requests of a group; all workers of a group should serve the same "
            "bundles. Runs until interrupted (Ctrl-C or SIGTERM)."
        ),
        epilog=(
            "example:\n"
            "  tflite-edge edge --broker mqtt://127.0.0.1:1883 --bundle bundle --workers 2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--broker", required=True, metavar="URL",
                        help="MQTT 5 broker, mqtt://[USER:PASS@]HOST[:PORT] or mqtts://...")
    parser.add_argument("--bundle", required=True, action="append", metavar="BUNDLE",
                        help="bundle directory to serve (repeat for several bundles)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes on this machine (default: 1)")
    parser.add_argument("--group", default="tflite-edge", metavar="G",
                        help="shared-subscription group (default: tflite-edge)")
    add_prefix_option(parser)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1), help="MQTT QoS of replies (default: 0)")
    add_codec_option(parser, "compression of reply frames (default: none)")
    parser.add_argument("--delegate", metavar="edgetpu[:usb|:pci[:N]]", help="hardware delegate, e.g. edgetpu")
    add_backend_options(parser)
    add_bundle_key_option(parser)
    add_state_file_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..edge import serve

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Verified here, once, before any worker starts: checksums always, signatures with
    # --bundle-key. Workers get these verified bytes, never the paths to read again.
    bundles = [open_bundle(path, args.bundle_key, args.state_file) for path in args.bundle]
    ids = ", ".join(b.bundle_id for b in bundles)

    def ready() -> None:
        print(f"edge: ready, serving bundle(s) {ids} in group {args.group!r} with {args.workers} worker(s); "
              "Ctrl-C stops", file=sys.stderr, flush=True)

    serve(
        args.broker, bundles, workers=args.workers, stop=stop, on_ready=ready, group=args.group,
        prefix=args.prefix,
        qos=args.qos, codec=args.codec, backend=args.backend, num_threads=args.threads, delegate=args.delegate,
    )
    print("edge: stopped", file=sys.stderr, flush=True)
    return 0
