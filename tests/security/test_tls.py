"""TLS settings from Python and from broker URL options."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tflite_edge.errors import BrokerUrlError, TlsSettingsError
from tflite_edge.security.tls import TlsSettings
from tflite_edge.transport.mqtt import make_client, parse_broker_url, write_in_caller

from .conftest import Pki


def test_url_options_become_tls_settings(pki: Pki) -> None:
    url = f"mqtts://pi-1:s3cret@broker:8883?ca={pki.ca_cert}&cert={pki.client_cert}&key={pki.client_key}"
    address = parse_broker_url(url)
    assert address.tls and address.tls_settings == TlsSettings(pki.ca_cert, pki.client_cert, pki.client_key)
    assert address.tls_settings.mutual
    assert "s3cret" not in address.url and f"ca={pki.ca_cert}" in address.url
    assert parse_broker_url(address.url.replace("pi-1@", "pi-1:s3cret@")) == address  # round trip
    assert parse_broker_url("mqtts://broker").tls_settings is None  # system CA store


@pytest.mark.parametrize(
    "url",
    ["mqtt://broker?ca=ca.crt",  # TLS options need mqtts://
     "mqtts://broker?cafile=ca.crt",  # a typo must not silently drop the option
     "mqtts://broker?ca=",
     "mqtts://broker?key=client.key",  # a key without its certificate
     "mqtts://broker?ca=a&ca"],
)
def test_bad_url_options(url: str) -> None:
    with pytest.raises(BrokerUrlError):
        parse_broker_url(url)


def test_context_checks_files(pki: Pki, tmp_path: Path) -> None:
    context = TlsSettings(ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key).context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsSettingsError, match="does not exist"):
        TlsSettings(ca_file=tmp_path / "missing.crt").context()
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(TlsSettingsError, match="not a PEM"):
        TlsSettings(ca_file=tmp_path / "junk.crt").context()
    with pytest.raises(TlsSettingsError, match="cannot be used together"):
        TlsSettings(ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.server_key).context()
    # make_client applies the settings before any connection is attempted.
    with pytest.raises(TlsSettingsError):
        make_client(f"mqtts://127.0.0.1:1?ca={tmp_path / 'missing.crt'}", "c")


def test_only_plain_connections_are_written_by_the_publishing_thread(pki: Pki) -> None:
    # Over TLS, paho's network thread keeps every read and write of the connection: OpenSSL
    # does not allow one thread to write a TLS connection while another reads it.
    plain = make_client("mqtt://127.0.0.1:1", "plain")
    secure = make_client(f"mqtts://127.0.0.1:1?ca={pki.ca_cert}", "secure")
    assert write_in_caller(plain) is True and "_packet_queue" in vars(plain)  # paho's method, replaced
    assert write_in_caller(secure) is False and "_packet_queue" not in vars(secure)
