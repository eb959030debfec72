"""Broker URLs and a configured paho-mqtt 2.x client.

Every MQTT client in tflite-edge (device runtime, edge workers, telemetry) is made here,
so they agree on the protocol version (MQTT 5, needed for shared subscriptions and for
request/response properties), the callback API (``CallbackAPIVersion.VERSION2``) and the
reconnect policy (exponential backoff between ``min_reconnect_delay_s`` and
``max_reconnect_delay_s``, handled by paho's network loop).

Broker URL grammar::

    mqtt://[user[:password]@]host[:port]     plain TCP, default port 1883
    mqtts://[user[:password]@]host[:port]    TLS, default port 8883, system CA store
    mqtts://...?ca=CA.crt[&cert=CLIENT.crt&key=CLIENT.key]   own CA, mutual TLS
    mqtt[s]://user@host[:port]?password_file=FILE             password read from FILE

User name and password may be percent-encoded (``%40`` for ``@``). IPv6 hosts go in
brackets: ``mqtt://[::1]:1883``. The TLS query options are described in
``tflite_edge.security.tls``. A password in the URL shows in process lists; instead, name a
file holding it (``password_file``, first line, at most 1 KiB) or set the environment
variable ``TFLITE_EDGE_BROKER_PASSWORD``, which is used when the URL names a user and no
password.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import ssl
import stat
import threading
import time
import urllib.parse
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..errors import BrokerConnectionError, BrokerUrlError, TlsSettingsError
from ..security.tls import TLS_QUERY_KEYS, TlsSettings, tls_settings_from_query
from .properties import install_publish_parser
from .protocol import device_login, validate_device_id

__all__ = [
    "DEFAULT_PORTS",
    "BrokerAddress",
    "MqttClient",
    "Will",
    "parse_broker_url",
    "make_client",
    "wait_connected",
    "connect_and_start",
    "SubscribingClient",
    "write_in_caller",
    "broker_address",
    "device_connection",
    "PASSWORD_ENV",
]

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PASSWORD_ENV = "TFLITE_EDGE_BROKER_PASSWORD"
PASSWORD_QUERY_KEY = "password_file"
MAX_PASSWORD_FILE_BYTES = 1024
_PROBE_AFTER_S = 0.2  # a loopback or LAN connection is up well before this
_PAHO_LOG = logging.getLogger(f"{__name__}.paho")


class _QuietDisconnects(logging.Filter):
    """paho logs an ERROR each time its loop runs without a socket, which is what a normal
    disconnect or a reconnect wait looks like; keep those at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith("Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return _PAHO_LOG.isEnabledFor(logging.DEBUG)
        return True


_PAHO_LOG.addFilter(_QuietDisconnects())
_ADDRESSES: weakref.WeakKeyDictionary[paho.Client, BrokerAddress] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URL. ``str()`` and ``url`` never show the password."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_settings: TlsSettings | None = None

    @property
    def url(self) -> str:
        """The URL without the password, safe for logs and error messages."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?{self.tls_settings.query()}" if self.tls_settings and self.tls_settings.query() else ""
        return f"{scheme}://{user}{host}:{self.port}{query}"

    def __str__(self) -> str:
        return self.url


class MqttClient(Protocol):
    """The part of a paho-mqtt client that tflite-edge's MQTT users call (``make_client``
    returns one); a fake with these methods can stand in for it in tests."""

    def publish(self, topic: str, payload: bytes | None = None, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> paho.MQTTMessageInfo:
        ...

    def subscribe(self, topic: str, qos: int = 0) -> tuple[MQTTErrorCode, int | None]:
        ...

    def is_connected(self) -> bool:
        ...

    def disconnect(self) -> MQTTErrorCode:
        ...

    def loop_start(self) -> MQTTErrorCode:
        ...

    def loop_stop(self) -> MQTTErrorCode:
        ...


@dataclass(frozen=True)
class Will:
    """A last-will message the broker publishes when the client vanishes without DISCONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 1
    retain: bool = False


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...`` into a ``BrokerAddress``.

    Raises ``BrokerUrlError`` naming what is wrong (scheme, host, port, extra parts).
    """
    if not isinstance(url, str) or not url.strip():
        raise BrokerUrlError("broker URL is empty; use mqtt://HOST:PORT")
    text = url.strip()
    if "://" not in text:
        typo = re.match(r"(?i)(mqtts?)(?::/?|//)(?!/)(.+)", text)
        fixed = f"{typo.group(1).lower()}://{typo.group(2)}" if typo else f"mqtt://{text}"
        raise BrokerUrlError(f"broker URL {_redact(text)!r} has no scheme://; did you mean {_redact(fixed)}?")
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BrokerUrlError(
            f"broker URL scheme {parts.scheme!r} is not supported; use mqtt:// (TCP) or mqtts:// (TLS)"
        )
    if parts.path not in ("", "/") or parts.fragment:
        raise BrokerUrlError(f"broker URL {_redact(text)!r} must not have a path or fragment")
    try:
        options = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
                       if parts.query else [])
    except ValueError as e:
        raise BrokerUrlError(f"broker URL {_redact(text)!r}: {e}") from e
    password_file = options.pop(PASSWORD_QUERY_KEY, None)
    unknown = sorted(set(options) - set(TLS_QUERY_KEYS))
    if unknown:
        raise BrokerUrlError(f"broker URL {_redact(text)!r}: unknown option(s) {', '.join(unknown)}; the options "
                             f"are {PASSWORD_QUERY_KEY} and, with mqtts://, {', '.join(TLS_QUERY_KEYS)}")
    if options and scheme != "mqtts":
        raise BrokerUrlError(f"broker URL {_redact(text)!r}: the TLS options ({', '.join(TLS_QUERY_KEYS)}) "
                             "need mqtts://")
    try:
        tls_settings = tls_settings_from_query(options)
    except TlsSettingsError as e:
        raise BrokerUrlError(f"broker URL {_redact(text)!r}: {e}") from e
    try:
        port = parts.port
    except ValueError as e:
        raise BrokerUrlError(f"broker URL {_redact(text)!r} has an invalid port: {e}") from e
    host = parts.hostname
    if not host:
        raise BrokerUrlError(f"broker URL {_redact(text)!r} has no host; use {scheme}://HOST:PORT")
    if port == 0:
        raise BrokerUrlError(f"broker URL {_redact(text)!r}: port 0 is not a broker port")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if password_file is not None:
        if password is not None:
            raise BrokerUrlError("broker URL has both a password and password_file; keep only the file")
        password = _read_password_file(password_file)
    elif password is None and username is not None:
        password = os.environ.get(PASSWORD_ENV) or None
    if password is not None and username is None:
        raise BrokerUrlError("broker URL has a password but no user name; use mqtt://USER:PASS@HOST")
    return BrokerAddress(
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        tls=scheme == "mqtts",
        username=username,
        password=password,
        tls_settings=tls_settings,
    )


def _read_password_file(name: str) -> str:
    """The first line of the file ``name`` (a regular file of at most 1 KiB)."""
    if not name:
        raise BrokerUrlError("broker URL option password_file needs a file name: ?password_file=FILE")
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the start; only regular files are read.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BrokerUrlError(f"broker password file {name} is not a regular file")
            data = handle.read(MAX_PASSWORD_FILE_BYTES + 1)
    except OSError as e:
        raise BrokerUrlError(f"cannot read the broker password file {name}: {e.strerror}") from e
    if len(data) > MAX_PASSWORD_FILE_BYTES:
        raise BrokerUrlError(f"broker password file {name} is larger than {MAX_PASSWORD_FILE_BYTES} bytes")
    try:
        password = data.decode("utf-8").splitlines()[0] if data.strip() else ""
    except UnicodeDecodeError as e:
        raise BrokerUrlError(f"broker password file {name} is not UTF-8 text") from e
    if not password:
        raise BrokerUrlError(f"broker password file {name} is empty; put the password on its first line")
    return password


def _redact(text: str) -> str:
    # Keep the password out of messages that may end up in logs.
    parts = urllib.parse.urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def make_client(
    url: str | BrokerAddress,
    client_id: str,
    *,
    will: Will | None = None,
    keepalive_s: int = 30,
    min_reconnect_delay_s: int = 1,
    max_reconnect_delay_s: int = 30,
    ca_certs: str | None = None,
    session_expiry_s: int = 0,
    tls: TlsSettings | None = None,
    max_packet_bytes: int | None = None,
) -> paho.Client:
    """A paho-mqtt 2.x MQTT 5 client for ``url``, configured but not yet running.

    The broker address is registered with ``connect_async``: start the network loop with
    ``client.loop_start()`` (or call ``connect_and_start``) and the loop thread connects,
    and reconnects after any loss with exponential backoff, on its own. Subscriptions
    should therefore be (re)made in ``on_connect``. ``session_expiry_s=0`` means the broker
    forgets the session on disconnect, which suits stateless clients. ``tls`` (or the
    URL's ``?ca=&cert=&key=`` options) sets the CA and the client certificate for mutual TLS.
    ``max_packet_bytes`` asks the broker (MQTT 5 ``MaximumPacketSize``) never to deliver a
    larger message to this client: it drops it instead.
    """
    address = url if isinstance(url, BrokerAddress) else parse_broker_url(url)
    install_publish_parser()  # received properties parsed in one pass (transport.properties)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=True,
    )
    client.enable_logger(_PAHO_LOG)
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    settings = tls or address.tls_settings
    if settings is not None:
        client.tls_set_context(settings.context())
    elif address.tls:
        try:
            client.tls_set(ca_certs=ca_certs, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise BrokerConnectionError(f"cannot set up TLS for {address.url}: {e}") from e
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    client.reconnect_delay_set(min_delay=min_reconnect_delay_s, max_delay=max_reconnect_delay_s)
    properties = None
    if session_expiry_s or max_packet_bytes:
        from paho.mqtt.packettypes import PacketTypes

        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # unannotated in paho
        if session_expiry_s:
            properties.SessionExpiryInterval = session_expiry_s
        if max_packet_bytes:
            properties.MaximumPacketSize = max_packet_bytes
    client.connect_async(address.host, address.port, keepalive=keepalive_s, properties=properties)
    # Remembered beside the client (not in its userdata, which belongs to the caller).
    _ADDRESSES[client] = address
    return client


def device_connection(url: str | BrokerAddress, device_id: str, connection: str = "") -> tuple[BrokerAddress, str]:
    """The address (with its login) and the client id of one of a device's connections.

    With a user name ``U`` in the URL the connection logs in as ``device_login(U, connection)``
    and uses that name as its client id: a broker set up by ``broker-config`` binds each of
    these logins to that one client id, so no other login can take the connection over. The
    password is the device's. Without a user name (an open test broker) the request
    connection gets a unique client id, so that several runtimes may share a device id.
    """
    address = url if isinstance(url, BrokerAddress) else parse_broker_url(url)
    validate_device_id(device_id)
    if address.username is None:
        name = device_login(device_id, connection)
        return address, name if connection else f"tfe-dev-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    login = device_login(address.username, connection)
    return dataclasses.replace(address, username=login), login


def _diagnose(address: BrokerAddress, timeout_s: float) -> None:
    """Raise ``BrokerConnectionError`` at once for an unknown host or a refused connection.

    Called only when the client is not connected shortly after start, so a working set-up pays
    nothing; a slow or filtered network is left to the caller's wait.
    """
    try:
        socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise BrokerConnectionError(
            f"unknown host {address.host!r} in the broker URL {address.url} ({reason}); check the host name"
        ) from e
    try:
        with socket.create_connection((address.host, address.port), timeout=max(min(timeout_s, 2.0), 0.1)):
            pass
    except ConnectionRefusedError as e:
        raise BrokerConnectionError(
            f"connection refused by {address.host}:{address.port}: no MQTT broker listens there; "
            f"start the broker or fix the port in {address.url}"
        ) from e
    except OSError:
        pass


def wait_connected(client: paho.Client, timeout_s: float, *, refusals: list[ReasonCode] | None = None) -> None:
    """Block until ``client`` is connected, or raise ``BrokerConnectionError`` after ``timeout_s``,
    or at once when the host is unknown or refuses the connection, or when the broker refuses
    the login (a CONNACK reason appended to ``refusals`` by the caller's ``on_connect``)."""
    start = time.monotonic()
    deadline = start + timeout_s
    diagnosed = False
    while not client.is_connected():
        if refusals:
            raise BrokerConnectionError(_refusal_text(_broker_of(client), refusals[0]))
        now = time.monotonic()
        if not diagnosed and now - start >= _PROBE_AFTER_S and (address := _ADDRESSES.get(client)) is not None:
            diagnosed = True
            _diagnose(address, deadline - now)
            continue
        if now >= deadline:
            broker = _broker_of(client)
            raise BrokerConnectionError(
                f"could not connect to the MQTT broker at {broker} within {timeout_s:g} s; "
                "check that it is running and reachable (and the user name/password)"
            )
        time.sleep(0.005)


def _refusal_text(broker: str, reason: ReasonCode) -> str:
    hint = {
        134: "check the user name and password",
        135: "this login may not connect (with this client id: a device's logins take only their own)",
        133: "the client id is not accepted",
    }.get(reason.value, "see the broker's log")
    return f"the MQTT broker at {broker} refused the connection: {reason} ({hint})"


def connect_and_start(client: paho.Client, timeout_s: float = 10.0) -> None:
    """Start the client's network loop thread and wait for the first connection."""
    refusals: list[ReasonCode] = []
    callback: Any = client.on_connect  # the caller's, called after the refusal is noted

    def record(c: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            refusals.append(reason)
        if callback is not None:
            callback(c, userdata, flags, reason, props)

    client.on_connect = record
    client.loop_start()
    try:
        wait_connected(client, timeout_s, refusals=refusals)
    except BrokerConnectionError:
        client.loop_stop()
        raise
    finally:
        client.on_connect = callback


class SubscribingClient:
    """One MQTT connection that a component owns: ``start`` connects (or, with
    ``require_broker=False``, keeps connecting in the background), ``stop`` disconnects; a
    context manager. Subclasses set the client's callbacks in ``_configure`` (subscribing in
    their ``on_connect``, so that every reconnect subscribes again)."""

    def __init__(self, address: str | BrokerAddress, client_id: str, connect_timeout_s: float) -> None:
        self._address = address
        self._client_id = client_id
        self._connect_timeout_s = connect_timeout_s
        self._client: MqttClient | None = None

    def _configure(self, client: paho.Client) -> None:
        raise NotImplementedError

    def _connected(self) -> None:
        """Called once ``start`` has connected (with ``require_broker``)."""

    def start(self, *, require_broker: bool = True) -> Self:
        """Connect (an error when the broker cannot be reached, unless ``require_broker=False``)."""
        client = make_client(self._address, self._client_id)
        self._configure(client)
        self._client = client
        if not require_broker:
            client.loop_start()  # connects (and subscribes) in the background whenever the broker is up
            return self
        try:
            connect_and_start(client, self._connect_timeout_s)
        except BrokerConnectionError:
            self._client = None
            raise
        self._connected()
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_in_caller(client: paho.Client) -> bool:
    """Let threads that publish write their packets themselves, without waking paho's network
    thread; returns False, leaving paho as it is, where its client lacks the internals this
    relies on.

    paho-mqtt (2.x) queues a publish and wakes its network thread, which then writes it: a
    thread wake-up (tens of µs, more on a busy host) on the way of every request, and on a
    host with few cores a second thread competing with the publisher for the CPU and the
    GIL while its packet leaves. Now a publish from any other thread is queued without the
    wake-up and written at once by that thread. Both threads write through the same lock, so
    packets stay whole and in order; when the socket does not take all of it (or the write
    fails), the network thread is woken as before, to write the rest or notice the lost
    connection. Other packets (subscriptions, disconnects) and those the network thread
    queues itself (acknowledgements, pings) take paho's own way.

    Not over TLS (returns False): a TLS connection must not be written by one thread while
    another reads it (OpenSSL's SSL_write may read, and SSL_read write, records), and paho's
    network thread reads without any lock of ours.
    """
    address = _ADDRESSES.get(client)
    if (address.tls if address is not None else getattr(client, "_ssl", True)):
        return False
    original_write = getattr(client, "_packet_write", None)
    original_queue = getattr(client, "_packet_queue", None)
    out_packets = getattr(client, "_out_packet", None)
    if not (callable(original_write) and callable(original_queue) and hasattr(out_packets, "append")):
        return False
    lock = threading.Lock()

    def write() -> MQTTErrorCode:
        with lock:
            return original_write()  # type: ignore[no-any-return]

    def queue(command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any = None) -> MQTTErrorCode:
        network_thread = client._thread
        if command & 0xF0 != paho.PUBLISH or network_thread is None or network_thread is threading.current_thread():
            return original_queue(command, packet, mid, qos, info)  # type: ignore[no-any-return]
        # paho's own packet record (paho.mqtt.client._OutPacket).
        client._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                   "to_process": len(packet), "packet": packet, "info": info})
        write()
        if client._out_packet:  # the rest, or the error, is the network thread's
            waker = client._sockpairW
            if waker is not None:
                try:
                    waker.send(b"0")
                except BlockingIOError:
                    pass  # a wake-up is pending already
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._packet_write = write  # type: ignore[method-assign]  # the network thread writes through the lock too
    client._packet_queue = queue  # type: ignore[method-assign]
    return True


def broker_address(client: paho.Client) -> BrokerAddress | None:
    """The address a client from ``make_client`` connects to (None for other clients)."""
    return _ADDRESSES.get(client)


def _broker_of(client: paho.Client) -> str:
    address = _ADDRESSES.get(client)
    return address.url if address is not None else "the configured address"

