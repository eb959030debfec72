"""tflite-edge device: run requests on this device, offloading the tail of a bundle to edge workers."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .common import (
    add_backend_options,
    add_bundle_key_option,
    add_codec_option,
    add_homeassistant_option,
    add_prefix_option,
    add_request_options,
    add_state_file_option,
    exit_rule,
    open_bundle,
)
from .summary import FallbackSummary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "device", help="run a bundle on this device, offloading to edge workers over MQTT",
        description=(
            "Run every sample of X.npy through the bundle: segments [0, K) on this device, the rest on an "
            "edge worker (see `tflite-edge edge`). If the edge does not answer by the deadline, the device "
            "finishes locally at the deepest exit it can afford and reports that it fell back. Prints one "
            "result per sample (with --json one JSON object per line) and then, on stderr, why requests fell "
            "back. Exit status 1 when --broker was given (without --start-without-broker), requests were planned to "
            "offload and none was."
        ),
        epilog=(
            "example:\n"
            "  tflite-edge device --broker mqtt://127.0.0.1:1883 --bundle bundle --id pi-1 \\\n"
            "      --input x.npy --exit final --partition 1 --deadline-ms 50 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--broker", metavar="URL",
                        help="MQTT broker, mqtt://[USER:PASS@]HOST[:PORT] or mqtts://...; omit to run locally only")
    parser.add_argument("--bundle", required=True, help="bundle directory (the edge must serve the same bundle)")
    parser.add_argument("--id", default="device", metavar="ID",
                        help="device id, one MQTT topic level: no '/', '+', '#' (default: device)")
    parser.add_argument("--input", required=True, metavar="X.npy",
                        help="float32 samples, (N, ...) or one sample: .npy, or .npz with array x")
    parser.add_argument("--exit", metavar="NAME", help="target exit (default: the bundle's last exit)")
    parser.add_argument("--partition", type=int, metavar="K",
                        help="segments [0, K) run here, the rest on the edge; 0 sends the raw input "
                             "(default: the number of segments, everything local)")
    add_request_options(parser)
    add_codec_option(parser, "activation compression (default: none; see bench/bench_wire.py for when it pays)")
    add_prefix_option(parser)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1), help="MQTT QoS of requests (default: 0)")
    parser.add_argument("--connect-timeout-s", type=float, default=10.0, metavar="S",
                        help="how long to wait for the broker at start (default: 10)")
    parser.add_argument("--start-without-broker", action="store_true",
                        help="do not fail when the broker is unreachable at start: answer locally and keep "
                             "connecting in the background")
    parser.add_argument("--emulate-link-mbps", type=float, metavar="R",
                        help="delay transfers as a link of R Mbit/s would (token bucket), to try partitions on "
                             "a fast network")
    parser.add_argument("--delegate", metavar="edgetpu[:usb|:pci[:N]]", help="hardware delegate, e.g. edgetpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per result on stdout")
    parser.add_argument("--telemetry", action=argparse.BooleanOptionalAction, default=None,
                        help="publish status, telemetry and experience on {prefix}/dev/ID/... while running: on "
                             "whenever --broker is given; --no-telemetry turns it off (not with --policy)")
    parser.add_argument("--telemetry-period-s", type=float, default=5.0, metavar="S",
                        help="seconds between telemetry messages (default: 5)")
    add_homeassistant_option(parser)
    live = parser.add_argument_group(
        "learned policy", "decide exit and partition per request from live telemetry instead of --exit/--partition "
                          "(needs --broker and --deadline-ms); see docs/policy.md")
    live.add_argument("--policy", metavar="POLICY_DIR", help="a policy directory from `tflite-edge policy train`")
    live.add_argument("--policy-topic", nargs="?", const="", metavar="TOPIC",
                      help="take signed policy updates from TOPIC (default: {prefix}/policy/BUNDLE_ID), verified "
                           "with --public-key and swapped in between requests")
    live.add_argument("--public-key", action="append", default=[], metavar="PUB.pem",
                      help="trusted Ed25519 public key of the policy signer (repeatable, for key rotation)")
    live.add_argument("--power-budget-mw", type=float, default=2000.0, metavar="MW",
                      help="the power budget the policy sees (default: 2000); an operator overrides it at run "
                           "time on the retained topic {prefix}/dev/ID/budget, and a discharging battery scales it")
    live.add_argument("--edge-load-stale-s", type=float, default=5.0, metavar="S",
                      help="ignore edge load reports older than S seconds (default: 5)")
    parser.add_argument("--interval-ms", type=float, default=0.0, metavar="MS",
                        help="start one request every MS milliseconds (default: back to back)")
    add_backend_options(parser, kernels=True)
    add_bundle_key_option(parser)
    add_state_file_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..arrays import load_array
    from ..device import DeviceRuntime, Plan

    x = load_array(args.input, what="--input")
    rule = exit_rule(args)
    _check_policy_options(args)
    with DeviceRuntime(
        open_bundle(args.bundle, args.bundle_key, args.state_file), broker_url=args.broker, device_id=args.id,
        backend=args.backend, num_threads=args.threads, kernels=args.kernels,
        delegate=args.delegate, prefix=args.prefix, codec=args.codec, qos=args.qos,
        connect_timeout_s=args.connect_timeout_s, link_mbps=args.emulate_link_mbps,
        require_broker=not args.start_without_broker,
    ) as runtime:
        sample_shape = runtime.manifest.input.shape[1:]
        samples = x[np.newaxis] if x.shape == sample_shape else x
        _say_where_it_runs(args, runtime)
        summary = FallbackSummary()
        for result in _results(args, runtime, samples, Plan(args.exit, args.partition, args.deadline_ms, rule)):
            summary.add(result)
            if args.json:
                print(result.to_json(), flush=True)
            else:
                where = result.ran_on + (" (fell back)" if result.fell_back else "")
                print(
                    f"{result.request_id}  exit {result.exit}  class {result.top1_class} ({result.top1_score:.3f})  "
                    f"total {result.total_ms:.2f} ms = device {result.device_ms:.2f} + transfer "
                    f"{result.transfer_ms:.2f} + edge {result.edge_ms:.2f}  on {where}",
                    flush=True,
                )
    sys.stdout.flush()
    return finish(summary, args.broker is not None, runtime.manifest.bundle_id,
                  local_answers_accepted=args.start_without_broker)


def finish(summary: FallbackSummary, offloading: bool, bundle_id: str, *, local_answers_accepted: bool = False) -> int:
    """Say once why requests fell back; exit status 1 when offloading was asked for but none was
    (unless the user accepted local answers, as with --start-without-broker)."""
    if not offloading:
        return 0  # without a broker nothing is offloaded, as the note before the results said
    for line in summary.lines():
        print(line, file=sys.stderr)
    if summary.nothing_offloaded and not local_answers_accepted:
        print(f"error: no request was offloaded; check that `tflite-edge edge` serves bundle {bundle_id} "
              "on this broker and prefix", file=sys.stderr)
        return 1
    return 0


def _say_where_it_runs(args: argparse.Namespace, runtime) -> None:  # type: ignore[no-untyped-def]
    """Once, before the results: when the options mean that nothing will be offloaded."""
    if _check_policy_options(args):
        return
    segments = runtime.manifest.num_segments
    if args.broker is not None and args.partition is None:
        print(f"note: without --partition every request runs on this device; --partition K (0..{segments - 1}) "
              "offloads segments K and after to the edge", file=sys.stderr)
    elif args.broker is None and args.partition is not None and args.partition < segments:
        print("note: without --broker every request runs on this device (--partition applies with --broker)",
              file=sys.stderr)


def _results(args: argparse.Namespace, runtime, samples, plan):  # type: ignore[no-untyped-def]
    """The results of every sample: with the fixed plan, or decided per request by a policy."""
    import time
    from contextlib import ExitStack

    from ..device.policy_loop import attached_telemetry, policy_session
    from .common import homeassistant_of

    live = _check_policy_options(args)
    with ExitStack() as stack:
        if not live:
            if args.broker is not None and args.telemetry is not False:
                stack.enter_context(attached_telemetry(runtime, args.broker, prefix=args.prefix,
                                                       period_s=args.telemetry_period_s,
                                                       require_broker=not args.start_without_broker,
                                                       homeassistant=homeassistant_of(args)))
            start = time.monotonic()
            for i, sample in enumerate(samples):
                if args.interval_ms > 0:
                    time.sleep(max(0.0, start + i * args.interval_ms / 1e3 - time.monotonic()))
                yield runtime.run(sample, plan)
            return
        runner = stack.enter_context(policy_session(
            runtime, broker_url=args.broker, deadline_ms=args.deadline_ms, policy_dir=args.policy,
            prefix=args.prefix, policy_topic=args.policy_topic, public_key_paths=args.public_key,
            backend=args.backend, telemetry_period_s=args.telemetry_period_s,
            connect_timeout_s=args.connect_timeout_s, require_broker=not args.start_without_broker,
            power_budget_mw=args.power_budget_mw, edge_load_stale_s=args.edge_load_stale_s,
            state_file=args.state_file, homeassistant=homeassistant_of(args),
        ))
        yield from runner.run_many(samples, interval_ms=args.interval_ms)


def _check_policy_options(args: argparse.Namespace) -> bool:
    """Refuse contradictory options before connecting; True when a policy decides."""
    from .common import homeassistant_of

    live = args.policy is not None or args.policy_topic is not None
    if (live or args.telemetry) and args.broker is None:
        raise InputError("--policy, --policy-topic and --telemetry need --broker")
    if live and args.telemetry is False:
        raise InputError("--policy decides from live telemetry and reports its experience there: drop --no-telemetry")
    if args.homeassistant and (args.broker is None or args.telemetry is False):
        raise InputError("--homeassistant points Home Assistant at the telemetry: give --broker, without "
                         "--no-telemetry")
    homeassistant_of(args)  # a bad discovery prefix fails here, before connecting
    if live and (args.exit is not None or args.partition is not None or args.threshold):
        raise InputError("--policy decides the exit and the partition: drop --exit, --partition and --threshold")
    if live and args.deadline_ms is None:
        raise InputError("--policy needs --deadline-ms: the policy trades accuracy against that deadline")
    return live
