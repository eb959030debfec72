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

User name and password may be percent-encoded (``%40`` for ``@``). IPv6 hosts go in
brackets: ``mqtt://[::1]:1883``. The TLS query options are described in
``tflite_edge.security.tls``.
"""

from __future__ import annotations

import logging
import ssl
import time
import urllib.parse
import weakref
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from ..errors import BrokerConnectionError, BrokerUrlError, TlsSettingsError
from ..security.tls import TlsSettings, tls_settings_from_query

__all__ = [
    "DEFAULT_PORTS",
    "BrokerAddress",
    "Will",
    "parse_broker_url",
    "make_client",
    "wait_connected",
    "connect_and_start",
    "broker_address",
]

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
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
        raise BrokerUrlError(f"broker URL {text!r} has no scheme; use mqtt://{text} or mqtts://{text}")
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BrokerUrlError(
            f"broker URL scheme {parts.scheme!r} is not supported; use mqtt:// (TCP) or mqtts:// (TLS)"
        )
    if parts.path not in ("", "/") or parts.fragment or (parts.query and scheme != "mqtts"):
        raise BrokerUrlError(
            f"broker URL {_redact(text)!r} must not have a path or fragment, and options (?ca=...) only with mqtts://"
        )
    try:
        options = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        tls_settings = tls_settings_from_query(dict(options) if parts.query else {})
    except (TlsSettingsError, ValueError) as e:
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
) -> paho.Client:
    """A paho-mqtt 2.x MQTT 5 client for ``url``, configured but not yet running.

    The broker address is registered with ``connect_async``: start the network loop with
    ``client.loop_start()`` (or call ``connect_and_start``) and the loop thread connects,
    and reconnects after any loss with exponential backoff, on its own. Subscriptions
    should therefore be (re)made in ``on_connect``. ``session_expiry_s=0`` means the broker
    forgets the session on disconnect, which suits stateless clients. ``tls`` (or the
    URL's ``?ca=&cert=&key=`` options) sets the CA and the client certificate for mutual TLS.
    """
    address = url if isinstance(url, BrokerAddress) else parse_broker_url(url)
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
    if session_expiry_s:
        from paho.mqtt.packettypes import PacketTypes

        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
    client.connect_async(address.host, address.port, keepalive=keepalive_s, properties=properties)
    # Remembered beside the client (not in its userdata, which belongs to the caller).
    _ADDRESSES[client] = address
    return client


def wait_connected(client: paho.Client, timeout_s: float) -> None:
    """Block until ``client`` is connected, or raise ``BrokerConnectionError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not client.is_connected():
        if time.monotonic() >= deadline:
            broker = _broker_of(client)
            raise BrokerConnectionError(
                f"could not connect to the MQTT broker at {broker} within {timeout_s:g} s; "
                "check that it is running and reachable (and the user name/password)"
            )
        time.sleep(0.005)


def connect_and_start(client: paho.Client, timeout_s: float = 10.0) -> None:
    """Start the client's network loop thread and wait for the first connection."""
    client.loop_start()
    try:
        wait_connected(client, timeout_s)
    except BrokerConnectionError:
        client.loop_stop()
        raise


def broker_address(client: paho.Client) -> BrokerAddress | None:
    """The address a client from ``make_client`` connects to (None for other clients)."""
    return _ADDRESSES.get(client)


def _broker_of(client: paho.Client) -> str:
    address = _ADDRESSES.get(client)
    return address.url if address is not None else "the configured address"

