"""A Mosquitto 2.x configuration for a tflite-edge fleet: users, password file, ACLs, TLS.

Roles and what each may do (``P`` is the topic prefix, ``tflite-edge/v1`` by default; the
topic scheme is ``docs/wire-format.md``'s):

- device ``d``: publishes requests on ``P/req/+`` (any bundle) and its own
  ``P/dev/d/telemetry``, ``status`` and ``experience``; reads its replies ``P/dev/d/res``
  the signed policies on ``P/policy/+`` and the edge workers' presence ``P/edge/+``.
- edge: reads ``P/req/+`` (through its shared subscription); publishes ``P/dev/+/res`` and
  its retained presence on ``P/edge/+``.
- reader (dashboards, recorders): reads ``P/dev/+/telemetry``, ``status``, ``experience``,
  ``P/policy/+`` and ``P/edge/+``.
- agent (the online policy trainer): reads ``P/dev/+/experience`` and ``telemetry``;
  publishes (retained) and reads ``P/policy/+``.

So a device cannot read another device's results, cannot publish telemetry or replies in
another device's name, and cannot answer requests. Anonymous clients are refused. Device
ids are MQTT topic levels checked by ``transport.protocol.validate_device_id``; each
device's user name is its id, so the broker ties a login to exactly one topic subtree.

Passwords are stored in Mosquitto 2's PBKDF2-SHA512 format
(``user:$7$ITERATIONS$base64(salt)$base64(hash)``, 12-byte salt), the format
``mosquitto_passwd`` writes, so no Mosquitto tool is needed to make the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BrokerConfigError, TfliteEdgeError
from ..transport.protocol import DEFAULT_PREFIX, validate_prefix, validate_topic_level

__all__ = [
    "ROLES",
    "FleetUsers",
    "TlsListener",
    "hash_password",
    "password_file_text",
    "acl_text",
    "security_config_lines",
    "tls_listener_lines",
    "mosquitto_conf",
    "generate_password",
    "BrokerFiles",
    "write_broker_config",
]

ROLES = ("device", "edge", "reader", "agent")
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; the passwords we generate are random 128-bit tokens
SALT_BYTES = 12


def _user_name(name: str, role: str) -> str:
    try:
        validate_topic_level(name, f"{role} name")
    except TfliteEdgeError as e:
        raise BrokerConfigError(str(e)) from e
    # ':' separates user and hash in the password file; spaces would split ACL lines.
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

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.devices, *self.edges, *self.readers, *self.agents)

    def _by_role(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("device", self.devices), ("edge", self.edges), ("reader", self.readers), ("agent", self.agents))

    def role_of(self, name: str) -> str:
        for role, names in self._by_role():
            if name in names:
                return role
        raise KeyError(name)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's ``$7$`` PBKDF2-SHA512 hash of ``password`` (what follows ``user:``)."""
    if not password:
        raise BrokerConfigError("an empty password cannot be stored")
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_file_text(credentials: Mapping[str, str]) -> str:
    """The contents of a Mosquitto ``password_file`` for ``{user: password}``."""
    lines = []
    for user, password in credentials.items():
        _user_name(user, "user")
        if "\n" in password:
            raise BrokerConfigError(f"the password of {user!r} must not contain a newline")
        lines.append(f"{user}:{hash_password(password)}")
    return "\n".join(lines) + "\n"


def generate_password() -> str:
    """A random password: 128 bits, URL-safe (it may be put in a broker URL as is)."""
    return secrets.token_urlsafe(16)


def acl_text(users: FleetUsers, prefix: str = DEFAULT_PREFIX) -> str:
    """A Mosquitto ``acl_file`` giving each role exactly the topics it needs (see the module doc)."""
    try:
        validate_prefix(prefix)
    except TfliteEdgeError as e:
        raise BrokerConfigError(str(e)) from e
    if any(c.isspace() for c in prefix):
        raise BrokerConfigError(f"topic prefix {prefix!r} must not contain spaces (ACL lines are space separated)")
    out = [
        "# tflite-edge broker ACL: generated by `tflite-edge broker-config`; regenerate rather than edit.",
        "# Anything not granted here is denied. Topics follow docs/wire-format.md.",
        "",
    ]
    for device in users.devices:
        out += [
            f"# device {device}",
            f"user {device}",
            f"topic write {prefix}/req/+",
            f"topic read {prefix}/dev/{device}/res",
            f"topic write {prefix}/dev/{device}/telemetry",
            f"topic write {prefix}/dev/{device}/status",
            f"topic write {prefix}/dev/{device}/experience",
            f"topic read {prefix}/policy/+",
            f"topic read {prefix}/edge/+",
            "",
        ]
    for edge in users.edges:
        out += [
            f"# edge worker {edge}",
            f"user {edge}",
            f"topic read {prefix}/req/+",
            f"topic write {prefix}/dev/+/res",
            f"topic write {prefix}/edge/+",
            "",
        ]
    for reader in users.readers:
        out += [
            f"# telemetry reader {reader}",
            f"user {reader}",
            f"topic read {prefix}/dev/+/telemetry",
            f"topic read {prefix}/dev/+/status",
            f"topic read {prefix}/dev/+/experience",
            f"topic read {prefix}/policy/+",
            f"topic read {prefix}/edge/+",
            "",
        ]
    for agent in users.agents:
        out += [
            f"# policy agent {agent}",
            f"user {agent}",
            f"topic read {prefix}/dev/+/experience",
            f"topic read {prefix}/dev/+/telemetry",
            f"topic readwrite {prefix}/policy/+",
            "",
        ]
    return "\n".join(out)


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


def security_config_lines(password_file: str | os.PathLike[str], acl_file: str | os.PathLike[str]) -> list[str]:
    """Global lines that turn on authentication and the ACL (valid after any listener)."""
    return [
        "allow_anonymous false",
        f"password_file {Path(password_file)}",
        f"acl_file {Path(acl_file)}",
    ]


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


def mosquitto_conf(
    *,
    password_file: str | os.PathLike[str],
    acl_file: str | os.PathLike[str],
    port: int | None = 1883,
    host: str | None = None,
    tls: TlsListener | None = None,
    persistence_dir: str | os.PathLike[str] | None = None,
    max_queued_messages: int = 1000,
    max_packet_bytes: int = 16 * 1024 * 1024,
) -> str:
    """A complete ``mosquitto.conf``: an optional plain listener, an optional TLS listener,
    no anonymous access, the password file and the ACL.

    ``max_packet_bytes`` bounds what the broker accepts from any client (activation
    frames of the largest bundle must fit); ``max_queued_messages`` bounds each offline
    client's queue, so a slow or vanished consumer cannot grow the broker without limit.
    """
    if max_queued_messages < 1 or max_packet_bytes < 1024:
        raise BrokerConfigError("max_queued_messages must be >= 1 and max_packet_bytes >= 1024 (0 would mean no limit)")
    if port is None and tls is None:
        raise BrokerConfigError("the broker needs a listener: a plain port, a TLS listener or both")
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
    lines += ["", *security_config_lines(password_file, acl_file), ""]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {Path(persistence_dir)}/"]
    else:
        lines.append("persistence false")
    lines += [
        f"max_queued_messages {max_queued_messages}",
        f"max_packet_size {max_packet_bytes}",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class BrokerFiles:
    """Where ``write_broker_config`` put each file."""

    config: Path
    password_file: Path
    acl_file: Path
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
    max_queued_messages: int = 1000,
    max_packet_bytes: int = 16 * 1024 * 1024,
    absolute_paths: bool = True,
) -> BrokerFiles:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``credentials.json`` into ``out_dir``.

    Passwords already in ``out_dir/credentials.json`` are kept, so re-running after adding a
    device rotates nothing; new users get random passwords. ``credentials.json`` (mode 0600)
    maps each user to its role, password and a broker URL template to hand to the device.
    """
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BrokerConfigError(f"cannot create {root}: {e.strerror}") from e
    base = root.resolve() if absolute_paths else root
    files = BrokerFiles(base / "mosquitto.conf", base / "passwd", base / "acl", base / "credentials.json")
    known = _read_credentials(files.credentials)
    passwords = {name: known.get(name) or generate_password() for name in users.names}
    scheme, url_port = ("mqtts", tls.port) if tls is not None else ("mqtt", port)
    credentials = {
        "broker_url_template": f"{scheme}://USER:PASSWORD@BROKER_HOST:{url_port}",
        "prefix": prefix,
        "users": {name: {"role": users.role_of(name), "password": passwords[name]} for name in users.names},
    }
    try:
        _private_write(files.password_file, password_file_text(passwords))
        files.acl_file.write_text(acl_text(users, prefix))
        files.config.write_text(mosquitto_conf(
            password_file=files.password_file, acl_file=files.acl_file, port=port, host=host, tls=tls,
            persistence_dir=persistence_dir, max_queued_messages=max_queued_messages,
            max_packet_bytes=max_packet_bytes,
        ))
        _private_write(files.credentials, json.dumps(credentials, indent=2) + "\n")
    except OSError as e:
        raise BrokerConfigError(f"cannot write the broker configuration into {root}: {e}") from e
    return files
