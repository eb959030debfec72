"""A Mosquitto 2.x configuration for a tflite-edge fleet: logins, access rules, limits, TLS.

Authentication and access control are Mosquitto's dynamic security plugin
(``mosquitto_dynamic_security.so``, shipped with Mosquitto 2.x), configured from one JSON
file this module writes. Unlike a plain ``acl_file``, the plugin checks *subscriptions*
against the rules (a refused subscription gets reason code 0x87), which matters for shared
subscriptions: a device granted ``$share/GROUP/P/req/+`` would take its turn of every
device's requests; and it binds a login to one client id, so a device cannot connect
under another client's id and push it off the broker.

Roles and what each may do (``P`` is the topic prefix, ``tflite-edge/v1`` by default; the
topic scheme is ``docs/wire-format.md``'s):

- device ``d``: publishes requests on ``P/req/+`` (or only on ``P/req/{bundle}`` for the
  bundles given) and its own ``P/dev/d/telemetry``, ``status`` and ``experience``; reads its
  replies ``P/dev/d/res``, the signed policies on ``P/policy/+``, the edge workers'
  presence ``P/edge/+`` and load ``P/edge/+/load``, and its power budget ``P/dev/d/budget``;
  publishes its own Home Assistant discovery, ``homeassistant/sensor/d/+/config``.
  Its connections log in as ``d``, ``d-telemetry``, ``d-policy`` and ``d-context``
  (``transport.protocol.device_login``), each login bound to the client id of the same name
  and sharing the device's password.
- edge: reads ``P/req/+`` (directly or through ``$share/GROUP/P/req/...``); publishes
  ``P/dev/+/res``, its retained presence on ``P/edge/+``, its load on ``P/edge/+/load``, and
  on ``P/req/+`` only to delete a retained request.
- reader (dashboards, recorders, Home Assistant): reads ``P/dev/+/telemetry``, ``status``,
  ``experience``, ``P/policy/+``, ``P/edge/+`` and ``homeassistant/#``.
- agent (the online policy trainer, the fleet's operator): reads ``P/dev/+/experience`` and
  ``telemetry``; publishes (retained) and reads ``P/policy/+``; sets (retained) the devices'
  power budgets on ``P/dev/+/budget``.

Anything not granted is refused, anonymous clients included. Device ids are MQTT topic
levels checked by ``transport.protocol.validate_device_id``.

Passwords are stored as the plugin stores them: PBKDF2-SHA512 with a 12-byte salt, so no
Mosquitto tool is needed to make the file.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BrokerConfigError, TfliteEdgeError
from ..telemetry.homeassistant import DEFAULT_DISCOVERY_PREFIX, node_id
from ..transport.presence import presence_filter
from ..transport.protocol import (
    DEFAULT_PREFIX,
    DEVICE_CONNECTIONS,
    device_login,
    validate_prefix,
    validate_topic_level,
)

__all__ = [
    "ROLES",
    "FleetUsers",
    "TlsListener",
    "BrokerLimits",
    "dynsec_password",
    "dynsec_config",
    "find_dynsec_plugin",
    "tls_listener_lines",
    "mosquitto_conf",
    "generate_password",
    "BrokerFiles",
    "write_broker_config",
]

ROLES = ("device", "edge", "reader", "agent")
PBKDF2_ITERATIONS = 101  # the plugin's default; the passwords we generate are random 128-bit tokens
SALT_BYTES = 12
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
# Where distributions install the plugin (Debian/Ubuntu multiarch first).
_PLUGIN_GLOBS = ("/usr/lib/*-linux-gnu*/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/", "/opt/homebrew/lib/")


def _user_name(name: str, role: str) -> str:
    try:
        validate_topic_level(name, f"{role} name")
    except TfliteEdgeError as e:
        raise BrokerConfigError(str(e)) from e
    # Kept out so that names work unquoted in URLs, shells and Mosquitto's own tools.
    if ":" in name or any(c.isspace() for c in name):
        raise BrokerConfigError(f"{role} name {name!r} must not contain ':' or spaces")
    return name


@dataclass(frozen=True)
class FleetUsers:
    """Who may log in to the broker, by role. A name may hold only one role."""

    devices: tuple[str, ...] = ()
    edges: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for role, names in self._by_role():
            object.__setattr__(self, f"{role}s", tuple(names))
            for name in names:
                _user_name(name, role)
                if name in seen:
                    raise BrokerConfigError(f"{name!r} is listed as {seen[name]} and as {role}; use distinct names")
                seen[name] = role
        if not seen:
            raise BrokerConfigError("no users: give at least one device, edge or reader name")
        for device in self.devices:
            for login in self.logins_of(device)[1:]:
                if login in seen:
                    raise BrokerConfigError(
                        f"{login!r} is the login of device {device}'s {login[len(device) + 1:]} connection; "
                        f"rename the {seen[login]} {login!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.devices, *self.edges, *self.readers, *self.agents)

    def _by_role(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("device", self.devices), ("edge", self.edges), ("reader", self.readers), ("agent", self.agents))

    def logins_of(self, name: str) -> tuple[str, ...]:
        """The login names of user ``name``: one per connection for a device, else the name."""
        if name in self.devices:
            return tuple(device_login(name, connection) for connection in DEVICE_CONNECTIONS)
        return (name,)

    def role_of(self, name: str) -> str:
        for role, names in self._by_role():
            if name in names:
                return role
        raise KeyError(name)


def dynsec_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    """The ``password``, ``salt`` and ``iterations`` fields of a dynamic-security client."""
    if not password:
        raise BrokerConfigError("an empty password cannot be stored")
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def generate_password() -> str:
    """A random password: 128 bits, URL-safe (it may be put in a broker URL as is)."""
    return secrets.token_urlsafe(16)


def _allow(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def _read(topic: str) -> list[dict[str, Any]]:
    # Delivery and subscription are checked separately by the plugin: grant both.
    kind = "subscribePattern" if "+" in topic or "#" in topic else "subscribeLiteral"
    return [_allow("publishClientReceive", topic), _allow(kind, topic)]


def _write(topic: str) -> dict[str, Any]:
    return _allow("publishClientSend", topic)


def _role_acls(role: str, name: str, prefix: str, bundles: Sequence[str]) -> list[dict[str, Any]]:
    requests = [f"{prefix}/req/{bundle}" for bundle in bundles] or [f"{prefix}/req/+"]
    if role == "device":
        return [
            *(_write(topic) for topic in requests),
            *(_write(f"{prefix}/dev/{name}/{channel}") for channel in ("telemetry", "status", "experience")),
            *_read(f"{prefix}/dev/{name}/res"),
            *_read(f"{prefix}/policy/+"),
            *_read(presence_filter(prefix)),
            *_read(f"{prefix}/edge/+/load"),
            *_read(f"{prefix}/dev/{name}/budget"),
            # Its own Home Assistant discovery (`--homeassistant`), under the default prefix.
            _write(f"{DEFAULT_DISCOVERY_PREFIX}/sensor/{node_id(name)}/+/config"),
        ]
    if role == "edge":
        return [
            *_read(f"{prefix}/req/+"),
            _allow("subscribePattern", f"$share/+/{prefix}/req/+"),
            _write(f"{prefix}/dev/+/res"),
            _write(presence_filter(prefix)),  # retained presence, and its last will
            _write(f"{prefix}/edge/+/load"),
            _write(f"{prefix}/req/+"),  # only to delete a retained request (see EdgeWorker)
        ]
    if role == "reader":
        return [*(acl for channel in ("telemetry", "status", "experience")
                  for acl in _read(f"{prefix}/dev/+/{channel}")), *_read(f"{prefix}/policy/+"),
                *_read(presence_filter(prefix)), *_read(f"{DEFAULT_DISCOVERY_PREFIX}/#")]
    return [*_read(f"{prefix}/dev/+/experience"), *_read(f"{prefix}/dev/+/telemetry"),
            *_read(f"{prefix}/policy/+"), _write(f"{prefix}/policy/+"), _write(f"{prefix}/dev/+/budget")]


def _check_prefix(prefix: str) -> None:
    try:
        validate_prefix(prefix)
    except TfliteEdgeError as e:
        raise BrokerConfigError(str(e)) from e


def dynsec_config(
    users: FleetUsers,
    passwords: Mapping[str, str],
    prefix: str = DEFAULT_PREFIX,
    *,
    bundles: Sequence[str] = (),
) -> dict[str, Any]:
    """The dynamic-security plugin's configuration document: one role per device (and one
    per other role), one client per login, everything not granted refused.

    ``bundles`` (bundle ids) narrows what devices may request to ``P/req/{bundle}``, which
    also bounds how many retained requests a device could leave on the broker.
    """
    _check_prefix(prefix)
    for bundle in bundles:
        try:
            validate_topic_level(bundle, "bundle id")
        except TfliteEdgeError as e:
            raise BrokerConfigError(str(e)) from e
    roles = [{"rolename": f"device:{d}", "acls": _role_acls("device", d, prefix, bundles)} for d in users.devices]
    roles += [{"rolename": role, "acls": _role_acls(role, "", prefix, bundles)}
              for role in ("edge", "reader", "agent") if getattr(users, f"{role}s")]
    clients = []
    for name in users.names:
        role = users.role_of(name)
        rolename = f"device:{name}" if role == "device" else role
        for login in users.logins_of(name):
            client: dict[str, Any] = {"username": login}
            if role == "device":
                client["clientid"] = login  # this login may connect only under this client id
            clients.append({**client, **dynsec_password(passwords[name]), "roles": [{"rolename": rolename}]})
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True},
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def find_dynsec_plugin() -> Path:
    """Where Mosquitto's dynamic security plugin is installed; ``BrokerConfigError`` if nowhere."""
    for pattern in _PLUGIN_GLOBS:
        for found in sorted(glob.glob(pattern + DYNSEC_PLUGIN)):
            return Path(found)
    raise BrokerConfigError(
        f"Mosquitto's dynamic security plugin ({DYNSEC_PLUGIN}) was not found: install Mosquitto 2.x "
        "(apt-get install mosquitto) or give its path with --dynsec-plugin"
    )


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener: the broker's certificate and key, the CA clients are checked against.

    ``require_certificate`` makes it mutual TLS: a client without a certificate signed by
    ``ca_file`` is refused during the handshake, before any MQTT packet.
    """

    port: int = 8883
    cert_file: Path = Path("server.crt")
    key_file: Path = Path("server.key")
    ca_file: Path | None = None
    require_certificate: bool = False
    host: str | None = None
    tls_version: str = "tlsv1.2"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise BrokerConfigError(f"TLS port {self.port} is not a TCP port")
        if self.require_certificate and self.ca_file is None:
            raise BrokerConfigError("mutual TLS needs the CA that signs client certificates (--ca)")
        for name in ("cert_file", "key_file", "ca_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


def tls_listener_lines(listener: TlsListener) -> list[str]:
    """The ``listener`` block of a TLS listener."""
    lines = [f"listener {listener.port}{f' {listener.host}' if listener.host else ''}"]
    if listener.ca_file is not None:
        lines.append(f"cafile {listener.ca_file}")
    lines += [
        f"certfile {listener.cert_file}",
        f"keyfile {listener.key_file}",
        f"tls_version {listener.tls_version}",
        f"require_certificate {'true' if listener.require_certificate else 'false'}",
    ]
    return lines


@dataclass(frozen=True)
class BrokerLimits:
    """What one client can make the broker hold (0 would mean "no limit" to Mosquitto, so it is refused).

    ``max_packet_bytes`` bounds every message (requests of the largest bundle input must
    fit); ``max_queued_messages`` and ``max_queued_bytes`` bound each client's queue (QoS 1
    messages in flight and everything kept for an offline session); ``memory_limit_bytes``
    caps the broker's heap as a whole, which also bounds retained messages and QoS 0 messages
    waiting for a slow reader (Mosquitto drops a message that would pass it and disconnects
    the client it came from or was going to).
    """

    max_packet_bytes: int = 16 * 1024 * 1024
    max_queued_messages: int = 1000
    max_queued_bytes: int = 64 * 1024 * 1024
    memory_limit_bytes: int = 1024 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_packet_bytes < 1024:
            raise BrokerConfigError("max_packet_bytes must be >= 1024 (0 would mean no limit)")
        if self.max_queued_messages < 1 or self.max_queued_bytes < self.max_packet_bytes:
            raise BrokerConfigError("max_queued_messages must be >= 1 and max_queued_bytes >= max_packet_bytes")
        if self.memory_limit_bytes < 4 * self.max_packet_bytes:
            raise BrokerConfigError("memory_limit_bytes must be at least 4 x max_packet_bytes")

    def lines(self) -> list[str]:
        return [
            f"max_packet_size {self.max_packet_bytes}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"memory_limit {self.memory_limit_bytes}",
        ]


def mosquitto_conf(
    *,
    dynsec_file: str | os.PathLike[str],
    plugin: str | os.PathLike[str] | None = None,
    port: int | None = 1883,
    host: str | None = None,
    tls: TlsListener | None = None,
    persistence_dir: str | os.PathLike[str] | None = None,
    limits: BrokerLimits | None = None,
) -> str:
    """A complete ``mosquitto.conf``: an optional plain listener, an optional TLS listener,
    no anonymous access, the dynamic security plugin reading ``dynsec_file``, and the
    memory bounds of ``limits``. ``plugin`` defaults to ``find_dynsec_plugin()``."""
    if port is None and tls is None:
        raise BrokerConfigError("the broker needs a listener: a plain port, a TLS listener or both")
    limits = limits or BrokerLimits()
    plugin_path = Path(plugin) if plugin is not None else find_dynsec_plugin()
    if plugin is not None and not plugin_path.is_file():
        raise BrokerConfigError(f"the dynamic security plugin {plugin_path} does not exist; give the path of "
                                f"{DYNSEC_PLUGIN} (dpkg -L mosquitto | grep dynamic)")
    lines = [
        "# tflite-edge broker configuration: generated by `tflite-edge broker-config`.",
        "# Mosquitto 2.x. Clients log in with the user names and passwords in credentials.json.",
        "per_listener_settings false",
    ]
    if port is not None:
        if not 0 < port < 65536:
            raise BrokerConfigError(f"port {port} is not a TCP port")
        lines += ["", f"listener {port}{f' {host}' if host else ''}"]
    if tls is not None:
        lines += ["", *tls_listener_lines(tls)]
    lines += [
        "",
        "allow_anonymous false",
        f"plugin {plugin_path}",
        f"plugin_opt_config_file {Path(dynsec_file)}",
        "",
    ]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {Path(persistence_dir)}/"]
    else:
        lines.append("persistence false")
    lines += [*limits.lines(), ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class BrokerFiles:
    """Where ``write_broker_config`` put each file."""

    config: Path
    dynsec_file: Path
    credentials: Path


def _private_write(path: Path, text: str) -> None:
    # Secrets are created 0600 and replaced atomically, never readable by others even briefly.
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def _read_credentials(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {name: str(entry["password"]) for name, entry in doc["users"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BrokerConfigError(f"{path} is not a credentials file written by broker-config: {e}") from e


def write_broker_config(
    out_dir: str | os.PathLike[str],
    users: FleetUsers,
    *,
    prefix: str = DEFAULT_PREFIX,
    port: int | None = 1883,
    host: str | None = None,
    tls: TlsListener | None = None,
    persistence_dir: str | os.PathLike[str] | None = None,
    limits: BrokerLimits | None = None,
    bundles: Sequence[str] = (),
    plugin: str | os.PathLike[str] | None = None,
    absolute_paths: bool = True,
) -> BrokerFiles:
    """Write ``mosquitto.conf``, ``dynamic-security.json`` and ``credentials.json`` into ``out_dir``.

    Passwords already in ``out_dir/credentials.json`` are kept, so re-running after adding a
    device rotates nothing; new users get random passwords. ``credentials.json`` (mode 0600)
    maps each user to its role, password and login names, with a broker URL template to hand
    to the device. Mosquitto reads the plugin's file at start: restart it after a change.
    """
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BrokerConfigError(f"cannot create {root}: {e.strerror}") from e
    base = root.resolve() if absolute_paths else root
    files = BrokerFiles(base / "mosquitto.conf", base / "dynamic-security.json", base / "credentials.json")
    known = _read_credentials(files.credentials)
    passwords = {name: known.get(name) or generate_password() for name in users.names}
    scheme, url_port = ("mqtts", tls.port) if tls is not None else ("mqtt", port)
    credentials = {
        "broker_url_template": f"{scheme}://USER:PASSWORD@BROKER_HOST:{url_port}",
        "prefix": prefix,
        "users": {name: {"role": users.role_of(name), "password": passwords[name],
                         "logins": list(users.logins_of(name))} for name in users.names},
    }
    config = mosquitto_conf(dynsec_file=files.dynsec_file, plugin=plugin, port=port, host=host, tls=tls,
                            persistence_dir=persistence_dir, limits=limits)
    document = dynsec_config(users, passwords, prefix, bundles=bundles)
    try:
        _private_write(files.dynsec_file, json.dumps(document, indent=1) + "\n")
        files.config.write_text(config)
        _private_write(files.credentials, json.dumps(credentials, indent=2) + "\n")
    except OSError as e:
        raise BrokerConfigError(f"cannot write the broker configuration into {root}: {e}") from e
    return files
