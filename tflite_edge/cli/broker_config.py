"""tflite-edge broker-config: a Mosquitto configuration with logins, per-device access rules, limits and TLS."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..transport.protocol import DEFAULT_PREFIX

EXAMPLE = """\
examples:
  tflite-edge broker-config --devices pi-1,pi-2 --edge edge-1 --reader dashboard -o broker/
  tflite-edge broker-config --devices pi-1,pi-2 --edge edge-1 -o broker/ --no-plain \\
      --tls-port 8883 --cert server.crt --key server.key --ca ca.crt --require-certificate
  mosquitto -c broker/mosquitto.conf

Each device may publish requests and its own telemetry/status/experience and read only its
own replies and the policies; edges read requests and publish replies; readers read
telemetry; agents read experience and publish the signed policies. Anything else, a
device's subscription to the edges' shared request subscription included, is refused, and a
device's logins (ID, ID-telemetry, ID-policy, ID-context) may connect only under their own
client ids.
Passwords are random and kept in OUT/credentials.json (mode 0600); re-running keeps existing
ones. Mosquitto reads OUT/dynamic-security.json at start: restart it after a change.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "broker-config", help="write a Mosquitto config with logins, per-device access rules, limits and TLS",
        description="Write mosquitto.conf, the dynamic security plugin's dynamic-security.json "
                    "(logins with PBKDF2-SHA512 passwords and access rules) and credentials.json for "
                    "a fleet of devices, edge workers, telemetry readers and policy agents.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", default="", metavar="IDS", help="comma-separated device ids (= user names)")
    parser.add_argument("--edge", action="append", default=[], metavar="NAMES",
                        help="edge worker user name(s), comma-separated or repeated")
    parser.add_argument("--reader", action="append", default=[], metavar="NAMES",
                        help="telemetry reader user name(s) (dashboards, recorders, trainers)")
    parser.add_argument("--agent", action="append", default=[], metavar="NAMES",
                        help="policy agent user name(s): read experience, publish signed policies")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, metavar="TOPIC",
                        help=f"topic prefix (default: {DEFAULT_PREFIX})")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument("--port", type=int, default=1883, help="plain MQTT listener port (default: 1883)")
    parser.add_argument("--no-plain", action="store_true", help="no plain listener: TLS only")
    parser.add_argument("--bind", metavar="HOST", help="address the listeners bind to (default: all)")
    tls = parser.add_argument_group("TLS listener")
    tls.add_argument("--tls-port", type=int, metavar="PORT", help="add a TLS listener on PORT (usually 8883)")
    tls.add_argument("--cert", metavar="FILE", help="the broker's certificate (PEM)")
    tls.add_argument("--key", metavar="FILE", help="the broker's private key (PEM)")
    tls.add_argument("--ca", metavar="FILE", help="CA certificate that signs client certificates")
    tls.add_argument("--require-certificate", action="store_true",
                     help="mutual TLS: refuse clients without a certificate signed by --ca")
    parser.add_argument("--persistence-dir", metavar="DIR",
                        help="keep retained messages and sessions in DIR across restarts")
    parser.add_argument("--max-packet-bytes", type=int, default=16 * 1024 * 1024, metavar="N",
                        help="largest MQTT packet the broker accepts (default 16 MiB; requests of the "
                             "largest bundle input must fit)")
    parser.add_argument("--max-queued-messages", type=int, default=1000, metavar="N",
                        help="per-client queue bound for offline or slow clients (default 1000)")
    parser.add_argument("--max-queued-bytes", type=int, default=64 * 1024 * 1024, metavar="N",
                        help="per-client queue bound in bytes (default 64 MiB)")
    parser.add_argument("--memory-limit-bytes", type=int, default=1024 * 1024 * 1024, metavar="N",
                        help="the broker's whole heap, retained messages included (default 1 GiB)")
    parser.add_argument("--bundle", action="append", default=[], metavar="ID_OR_DIR",
                        help="let devices request only these bundles: a bundle id or a bundle directory "
                             "(repeat; default: any bundle)")
    parser.add_argument("--dynsec-plugin", metavar="FILE",
                        help="path of mosquitto_dynamic_security.so (default: found in the usual places)")
    parser.set_defaults(func=run)


def _split(values: list[str] | str) -> tuple[str, ...]:
    items = [values] if isinstance(values, str) else values
    return tuple(name.strip() for item in items for name in item.split(",") if name.strip())


def _bundle_id(item: str) -> str:
    """A bundle id as given, or the id of the bundle directory ``item``."""
    if not Path(item).is_dir():
        return item
    from ..bundle import load_bundle

    return load_bundle(item).bundle_id


def run(args: argparse.Namespace) -> int:
    from ..errors import BrokerConfigError
    from ..security.acl import BrokerLimits, FleetUsers, TlsListener, write_broker_config

    users = FleetUsers(devices=_split(args.devices), edges=_split(args.edge), readers=_split(args.reader),
                       agents=_split(args.agent))
    listener = None
    if args.tls_port is not None:
        if not args.cert or not args.key:
            raise BrokerConfigError("a TLS listener needs the broker's --cert and --key")
        listener = TlsListener(port=args.tls_port, host=args.bind, cert_file=Path(args.cert).resolve(),
                               key_file=Path(args.key).resolve(),
                               ca_file=Path(args.ca).resolve() if args.ca else None,
                               require_certificate=args.require_certificate)
    elif args.cert or args.key or args.ca or args.require_certificate:
        raise BrokerConfigError("--cert, --key, --ca and --require-certificate need --tls-port")
    files = write_broker_config(
        args.output, users, prefix=args.prefix, port=None if args.no_plain else args.port,
        host=args.bind, tls=listener, persistence_dir=args.persistence_dir,
        limits=BrokerLimits(max_packet_bytes=args.max_packet_bytes, max_queued_messages=args.max_queued_messages,
                            max_queued_bytes=args.max_queued_bytes, memory_limit_bytes=args.memory_limit_bytes),
        bundles=tuple(_bundle_id(item) for item in _split(args.bundle)), plugin=args.dynsec_plugin,
    )
    print(f"wrote {files.config} and {files.dynsec_file}")
    print(f"credentials for {len(users.names)} users in {files.credentials} (keep it secret)")
    print(f"start the broker with: mosquitto -c {files.config}")
    if users.devices and not args.bundle:
        print("note: devices may request any bundle id; give --bundle ID for each bundle served so that "
              "they cannot leave retained messages on topics no edge watches (docs/security.md)")
    return 0
