"""Broker URLs: passwords kept out of the URL, typos, and connection failures reported at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tflite_edge.cli import main
from tflite_edge.errors import BrokerConnectionError, BrokerUrlError
from tflite_edge.transport.broker import free_port
from tflite_edge.transport.mqtt import PASSWORD_ENV, connect_and_start, make_client, parse_broker_url


def test_the_password_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    secret = tmp_path / "pi-1.password"
    secret.write_text("s3cret-Pa55\n")
    address = parse_broker_url(f"mqtt://pi-1@broker.local:1883?password_file={secret}")
    assert (address.username, address.password, address.port) == ("pi-1", "s3cret-Pa55", 1883)
    assert "s3cret" not in address.url and "s3cret" not in repr(address)
    tls = parse_broker_url(f"mqtts://pi-1@h?password_file={secret}&ca={tmp_path / 'ca.crt'}")
    assert tls.password == "s3cret-Pa55" and tls.tls_settings is not None
    for url, message in [
        (f"mqtt://pi-1:x@h?password_file={secret}", "both a password and password_file"),
        (f"mqtt://pi-1@h?password_file={tmp_path / 'missing'}", "cannot read the broker password file"),
        (f"mqtt://pi-1@h?password_file={tmp_path}", "Is a directory|not a regular file"),
        ("mqtt://pi-1@h?password_file=", "needs a file name"),
        (f"mqtt://h?password_file={secret}", "password but no user name"),
        (f"mqtt://pi-1@h?pasword_file={secret}", "unknown option"),
        (f"mqtt://pi-1@h?ca={secret}", "need mqtts://"),
    ]:
        with pytest.raises(BrokerUrlError, match=message):
            parse_broker_url(url)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, message in [(empty, "is empty"), (big, "larger than"), (fifo, "not a regular file")]:
        with pytest.raises(BrokerUrlError, match=message):
            parse_broker_url(f"mqtt://pi-1@h?password_file={path}")


def test_the_password_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert parse_broker_url("mqtt://pi-1@h").password == "from-env"
    assert parse_broker_url("mqtt://pi-1:in-url@h").password == "in-url"  # the URL's own password wins
    assert parse_broker_url("mqtt://h").password is None  # no user, no password
    monkeypatch.delenv(PASSWORD_ENV)
    assert parse_broker_url("mqtt://pi-1@h").password is None


@pytest.mark.parametrize(("typed", "meant"), [
    ("mqtt//host:1883", "mqtt://host:1883"),
    ("mqtt:/host:1883", "mqtt://host:1883"),
    ("mqtt:host:1883", "mqtt://host:1883"),
    ("MQTTS//host", "mqtts://host"),
    ("host:1883", "mqtt://host:1883"),
])
def test_a_url_without_scheme_gets_a_sensible_suggestion(typed: str, meant: str) -> None:
    with pytest.raises(BrokerUrlError) as caught:
        parse_broker_url(typed)
    assert str(caught.value).endswith(f"did you mean {meant}?")


def test_connection_refused_is_reported_at_once_not_after_the_timeout() -> None:
    port = free_port()  # nothing listens there
    client = make_client(f"mqtt://127.0.0.1:{port}", "refused")
    # The timeout message would say "within 60 s"; this one can only come from the probe.
    with pytest.raises(BrokerConnectionError, match=f"connection refused by 127.0.0.1:{port}"):
        connect_and_start(client, timeout_s=60)


def test_an_unknown_host_is_reported_at_once() -> None:
    client = make_client("mqtt://no-such-host.invalid:1883", "unknown")
    with pytest.raises(BrokerConnectionError, match="unknown host 'no-such-host.invalid'"):
        connect_and_start(client, timeout_s=60)


def test_the_cli_says_it_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["telemetry", "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "connection refused" in err[0], err
    assert main(["telemetry", "--broker", "mqtt//127.0.0.1:1883"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: broker URL 'mqtt//127.0.0.1:1883' has no scheme://; did you mean mqtt://127.0.0.1:1883?"]
