"""TLS settings for MQTT connections: server authentication and mutual TLS.

Every MQTT client tflite-edge makes (device, edge worker, telemetry) is built by
``transport.mqtt.make_client``, which applies a ``TlsSettings`` for ``mqtts://`` URLs.
The settings can come from Python or from the broker URL's query, so every command that
takes ``--broker`` speaks TLS without more options::

    mqtts://pi-1:PASSWORD@broker.local:8883?ca=/etc/tflite-edge/ca.crt
    mqtts://pi-1:PASSWORD@broker.local:8883?ca=ca.crt&cert=pi-1.crt&key=pi-1.key   (mutual TLS)

``ca`` is the CA that signed the broker's certificate (the system store when absent);
``cert``/``key`` are the client's own certificate and key for brokers that require one
(Mosquitto's ``require_certificate true``). The context requires TLS 1.2 or newer,
verifies the broker's certificate and checks its host name.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TlsSettingsError

__all__ = ["TLS_QUERY_KEYS", "TlsSettings", "tls_settings_from_query"]

#: broker URL query keys and the ``TlsSettings`` field each one sets
TLS_QUERY_KEYS = {"ca": "ca_file", "cert": "cert_file", "key": "key_file"}


@dataclass(frozen=True)
class TlsSettings:
    """Files for one TLS client. All paths are checked when the context is built."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.key_file is not None and self.cert_file is None:
            raise TlsSettingsError("a client key needs its certificate: give cert as well as key")

    @property
    def mutual(self) -> bool:
        """True when the client presents a certificate of its own."""
        return self.cert_file is not None

    def query(self) -> str:
        """The URL query that reproduces these settings (without the key password)."""
        parts = [f"{key}={getattr(self, attr)}" for key, attr in TLS_QUERY_KEYS.items() if getattr(self, attr)]
        return "&".join(parts)

    def context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for a client: TLS >= 1.2, broker certificate verified."""
        for what, path in (("CA file", self.ca_file), ("client certificate", self.cert_file),
                           ("client key", self.key_file)):
            if path is not None and not path.is_file():
                raise TlsSettingsError(f"{what} {path} does not exist")
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=os.fspath(self.ca_file) if self.ca_file else None
            )
        except (ssl.SSLError, OSError, ValueError) as e:
            raise TlsSettingsError(f"CA file {self.ca_file} is not a PEM CA certificate: {e}") from e
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        if self.cert_file is not None:
            try:
                context.load_cert_chain(
                    os.fspath(self.cert_file),
                    os.fspath(self.key_file) if self.key_file else None,
                    password=self.key_password,
                )
            except (ssl.SSLError, OSError, ValueError) as e:
                raise TlsSettingsError(
                    f"client certificate {self.cert_file} and key {self.key_file or '(in the same file)'} "
                    f"cannot be used together: {e}"
                ) from e
        return context


def tls_settings_from_query(params: Mapping[str, str]) -> TlsSettings | None:
    """``TlsSettings`` from a broker URL's query (``ca``, ``cert``, ``key``); None when empty.

    Unknown keys are a ``TlsSettingsError`` so that a typo never silently disables a setting.
    """
    unknown = sorted(set(params) - set(TLS_QUERY_KEYS))
    if unknown:
        raise TlsSettingsError(
            f"unknown broker URL option(s) {', '.join(unknown)}; the options are {', '.join(TLS_QUERY_KEYS)}"
        )
    if not params:
        return None
    if not all(params.values()):
        raise TlsSettingsError("broker URL options need a value: ?ca=FILE&cert=FILE&key=FILE")
    files = {TLS_QUERY_KEYS[k]: Path(v) for k, v in params.items()}
    return TlsSettings(ca_file=files.get("ca_file"), cert_file=files.get("cert_file"), key_file=files.get("key_file"))
