"""tflite-edge agent: learn from devices' experience and publish signed policy updates."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from .common import add_prefix_option, progress

EPILOG = """\
example:
  tflite-edge keys generate -o keys/policy.key
  tflite-edge agent --broker mqtt://127.0.0.1:1883 --bundle bundle --policy-dir policy \\
      --key keys/policy.key --update-every-s 60
  # on each device:
  tflite-edge device --broker mqtt://EDGE:1883 --bundle bundle --input x.npy --deadline-ms 200 \\
      --policy policy --policy-topic --public-key keys/policy.key.pub

Topic: {prefix}/policy/{bundle_id}, retained, QoS 1; the payload is a signed envelope
around the policy (docs/policy.md, "Closing the loop").
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "agent", help="update a policy online from devices' experience and publish it, signed",
        description=(
            "Subscribe to {prefix}/dev/+/experience, keep a bounded replay of (context, action, reward) records, "
            "and every --update-every-s seconds (with at least --min-records new records) continue training the "
            "TF-Agents policy in POLICY_DIR on them, export it to TFLite, sign it with Ed25519 and publish it as a "
            "retained message with an increasing version. At start the current policy is published, so devices "
            "get a signed policy at once."
        ),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--broker", required=True, metavar="URL", help="MQTT broker, mqtt://HOST[:PORT] or mqtts://")
    parser.add_argument("--bundle", required=True, metavar="B", help="bundle directory (the policy must be for it)")
    parser.add_argument("--policy-dir", required=True, metavar="DIR",
                        help="a policy directory from `tflite-edge policy train` (with checkpoints/)")
    parser.add_argument("--key", required=True, metavar="PRIVATE_KEY.pem",
                        help="Ed25519 private key that signs policies (`tflite-edge keys generate`)")
    parser.add_argument("--password-env", metavar="VAR", help="environment variable holding the key's password")
    add_prefix_option(parser)
    parser.add_argument("--topic", metavar="TOPIC", help="policy topic (default: {prefix}/policy/BUNDLE_ID)")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="where versions, checkpoints and state.json go (default: POLICY_DIR/online)")
    parser.add_argument("--update-every-s", type=float, default=30.0, metavar="S",
                        help="seconds between updates (default: 30)")
    parser.add_argument("--min-records", type=int, default=64, metavar="N",
                        help="new experience records needed for an update (default: 64)")
    parser.add_argument("--steps", type=int, default=100, metavar="N", help="gradient steps per update (default 100)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="records per step (default 64)")
    parser.add_argument("--replay", type=int, default=50_000, metavar="N",
                        help="experience records kept (default 50,000; the oldest go first)")
    parser.add_argument("--duration-s", type=float, metavar="S", help="stop after S seconds (default: run until ^C)")
    parser.add_argument("--max-updates", type=int, metavar="N", help="stop after N published updates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replay sampling (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..agents.online import AgentConfig, OnlineAgent, UpdateSchedule
    from ..bundle import load_bundle
    from ..errors import InputError
    from ..security.signing import load_private_key

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise InputError(f"--password-env {args.password_env}: that environment variable is not set")
    key = load_private_key(args.key, password)
    bundle = load_bundle(args.bundle)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    schedule = UpdateSchedule(update_every_s=args.update_every_s, min_new_records=args.min_records,
                              steps=args.steps, batch_size=args.batch_size, capacity=args.replay, seed=args.seed)
    config = AgentConfig(bundle_id=bundle.manifest.bundle_id, prefix=args.prefix, topic=args.topic,
                         work_dir=args.work_dir, schedule=schedule)
    agent = OnlineAgent(
        args.broker, args.policy_dir, key, config,
        on_publish=lambda version, path: progress(f"agent: published policy version {version} from {path}"),
    )
    progress(f"agent: loading the policy in {args.policy_dir} (TensorFlow, TF-Agents)")
    with agent:
        progress(f"agent: ready; publishing on {agent.topic}, learning from {args.prefix}/dev/+/experience")
        try:
            agent.run(duration_s=args.duration_s, max_updates=args.max_updates, stop=stop)
        except KeyboardInterrupt:
            pass
    progress(f"agent: stopped after {agent.updates} update(s); last version {agent.version}; "
             f"{agent.replay.added} records used, {agent.replay.skipped} skipped")
    return 0
