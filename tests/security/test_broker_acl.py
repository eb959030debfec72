"""The generated broker configuration on a real Mosquitto: logins, per-device access rules, limits, mutual TLS."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tflite_edge.errors import BrokerConfigError, BrokerConnectionError
from tflite_edge.security.acl import FleetUsers, TlsListener, mosquitto_conf, write_broker_config
from tflite_edge.security.tls import TlsSettings
from tflite_edge.transport.broker import MosquittoBroker, free_port
from tflite_edge.transport.mqtt import Will, connect_and_start, make_client
from tflite_edge.transport.protocol import Topics

from .conftest import Pki

TOPICS = Topics()
# Run as root, Mosquitto drops to the `mosquitto` user, which cannot read pytest's private
# temporary directory; a deployment installs the files readable by that user instead.
KEEP_USER = "user root\n" if os.geteuid() == 0 else ""
USERS = FleetUsers(devices=("pi-1", "pi-2"), edges=("edge-1",), readers=("dash",), agents=("trainer",))


@dataclass
class SecuredBroker:
    broker: MosquittoBroker
    tls_port: int
    passwords: dict[str, str]
    pki: Pki

    def url(self, user: str, password: str | None = None) -> str:
        """A URL for ``user``; for a device's other logins (``pi-1-telemetry``) the device's password."""
        return f"mqtt://{user}:{password or self.password_of(user)}@127.0.0.1:{self.broker.port}"

    def password_of(self, login: str) -> str:
        owner = next((n for n in sorted(self.passwords, key=len, reverse=True)
                      if login == n or login.startswith(f"{n}-")), login)
        return self.passwords[owner]

    def tls_url(self, user: str, *, cert: bool = True) -> str:
        query = f"ca={self.pki.ca_cert}"
        if cert:
            query += f"&cert={self.pki.client_cert}&key={self.pki.client_key}"
        return f"mqtts://{user}:{self.passwords[user]}@127.0.0.1:{self.tls_port}?{query}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecuredBroker]:
    out = tmp_path_factory.mktemp("broker-config")
    tls_port = free_port()
    listener = TlsListener(port=tls_port, host="127.0.0.1", cert_file=pki.server_cert, key_file=pki.server_key,
                           ca_file=pki.ca_cert, require_certificate=True)
    files = write_broker_config(out, USERS, port=None, tls=listener)
    passwords = {name: entry["password"] for name, entry in json.loads(files.credentials.read_text())["users"].items()}
    # The plain listener comes from MosquittoBroker; everything else is the generated configuration.
    extra = mosquitto_conf(dynsec_file=files.dynsec_file, port=None, tls=listener)
    with MosquittoBroker(allow_anonymous=False, extra_config=KEEP_USER + extra) as broker:
        yield SecuredBroker(broker, tls_port, passwords, pki)


class Client:
    """A connected client recording what it receives and how its connection went."""

    def __init__(self, url: str, client_id: str, subscribe: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.granted: list[int] = []
        self.client = make_client(url, client_id, min_reconnect_delay_s=5, max_reconnect_delay_s=5)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = self._on_subscribe
        connect_and_start(self.client, timeout_s=5)
        if subscribe:
            self.client.subscribe([(topic, 1) for topic in subscribe])
            assert self.subscribed.wait(5)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        self.granted = [c.value for c in codes]
        self.subscribed.set()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> set[str]:
        return {t for t, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connect_reason(url: str, client_id: str, timeout_s: float = 5.0) -> int | None:
    """The CONNACK reason code the broker answers, or None when no MQTT session was reached."""
    done = threading.Event()
    reason: list[int] = []
    client = make_client(url, client_id, min_reconnect_delay_s=10, max_reconnect_delay_s=10)

    def on_connect(c: Any, u: Any, flags: Any, code: Any, props: Any) -> None:
        reason.append(code.value)
        done.set()

    client.on_connect = on_connect
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return reason[0] if reason else None


def _wait_for(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_generated_files(secured: SecuredBroker, tmp_path: Path) -> None:
    files = write_broker_config(tmp_path, USERS)
    assert oct(files.credentials.stat().st_mode & 0o777) == "0o600"
    assert oct(files.dynsec_file.stat().st_mode & 0o777) == "0o600"
    document = json.loads(files.dynsec_file.read_text())
    clients = {c["username"]: c for c in document["clients"]}
    assert set(clients) == {"pi-1", "pi-1-telemetry", "pi-1-policy", "pi-1-context", "pi-2", "pi-2-telemetry",
                            "pi-2-policy", "pi-2-context", "edge-1", "dash", "trainer"}
    # Every device login is bound to the client id of the same name; the others connect freely.
    assert all(c.get("clientid") == name for name, c in clients.items() if name.startswith("pi-"))
    assert all("clientid" not in clients[name] for name in ("edge-1", "dash", "trainer"))
    assert all(c["iterations"] == 101 and len(c["salt"]) == 16 for c in clients.values())
    assert document["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                            "subscribe": False, "unsubscribe": True}
    first = json.loads(files.credentials.read_text())["users"]
    assert first["pi-1"]["logins"] == ["pi-1", "pi-1-telemetry", "pi-1-policy", "pi-1-context"]
    # Regenerating (say, after adding a device) keeps every existing password.
    more = FleetUsers(devices=("pi-1", "pi-2", "pi-3"), edges=("edge-1",), readers=("dash",), agents=("trainer",))
    again = json.loads(write_broker_config(tmp_path, more).credentials.read_text())["users"]
    assert all(again[name]["password"] == first[name]["password"] for name in first)
    assert again["pi-3"]["role"] == "device"
    assert again["pi-3"]["password"] not in {e["password"] for e in first.values()}
    text = files.config.read_text()
    assert "allow_anonymous false" in text and f"plugin_opt_config_file {files.dynsec_file}" in text
    assert "max_queued_bytes" in text and "memory_limit" in text
    # A user named like another device's connection login would share its client id: refused.
    with pytest.raises(BrokerConfigError, match="pi-1-telemetry"):
        FleetUsers(devices=("pi-1", "pi-1-telemetry"))


def test_the_whole_generated_config_starts_mosquitto(tmp_path: Path, pki: Pki) -> None:
    """The mosquitto.conf as written (its own listeners) is accepted by a real broker."""
    port, tls_port = free_port(), free_port()
    listener = TlsListener(port=tls_port, host="127.0.0.1", cert_file=pki.server_cert, key_file=pki.server_key,
                           ca_file=pki.ca_cert, require_certificate=True)
    files = write_broker_config(tmp_path, USERS, port=port, host="127.0.0.1", tls=listener)
    passwords = json.loads(files.credentials.read_text())["users"]
    # MosquittoBroker's own listener on a third port; the generated config adds both of its listeners.
    with MosquittoBroker(allow_anonymous=False, extra_config=KEEP_USER + files.config.read_text()):
        assert _connect_reason(f"mqtt://dash:{passwords['dash']['password']}@127.0.0.1:{port}", "dash-1") == 0
        tls = (f"mqtts://pi-1:{passwords['pi-1']['password']}@127.0.0.1:{tls_port}"
               f"?ca={pki.ca_cert}&cert={pki.client_cert}&key={pki.client_key}")
        assert _connect_reason(tls, "pi-1") == 0


@pytest.mark.slow  # waits out refused connections
def test_wrong_password_and_anonymous_clients_are_refused(secured: SecuredBroker) -> None:
    assert _connect_reason(secured.url("pi-1"), "pi-1") == 0
    # 134 = Bad User Name or Password, 135 = Not authorized (MQTT 5 CONNACK reason codes).
    assert _connect_reason(secured.url("pi-1", "not-the-password"), "pi-1") in (134, 135)
    assert _connect_reason(secured.url("pi-2", secured.passwords["pi-1"]), "pi-2") in (134, 135)
    assert _connect_reason(f"mqtt://127.0.0.1:{secured.broker.port}", "anon") in (134, 135)
    assert _connect_reason(f"mqtt://nobody:x@127.0.0.1:{secured.broker.port}", "nobody") in (134, 135)
    # The product's clients report a refused login at once, in one line, rather than after the timeout.
    for url, client_id in ((secured.url("pi-1", "not-the-password"), "pi-1"), (secured.url("pi-1"), "pi-2")):
        client = make_client(url, client_id)
        with pytest.raises(BrokerConnectionError, match="refused the connection: Not authorized|Bad user name"):
            connect_and_start(client, timeout_s=60)


def test_a_device_cannot_read_another_devices_results(secured: SecuredBroker) -> None:
    pi1 = Client(secured.url("pi-1"), "pi-1", subscribe=(TOPICS.reply("pi-1"),))
    snoop = Client(secured.url("pi-1-policy"), "pi-1-policy",
                   subscribe=(TOPICS.reply("pi-2"), f"{TOPICS.prefix}/dev/+/res", f"{TOPICS.prefix}/#", "#"))
    pi2 = Client(secured.url("pi-2"), "pi-2", subscribe=(TOPICS.reply("pi-2"),))
    edge = Client(secured.url("edge-1"), "edge-1")
    try:
        assert pi1.granted == [1] and pi2.granted == [1]
        # The plugin refuses the snooping subscriptions outright (0x87 Not authorized).
        assert snoop.granted == [0x87] * 4
        edge.publish(TOPICS.reply("pi-2"), b"secret result of pi-2")
        edge.publish(TOPICS.reply("pi-1"), b"result of pi-1")
        # The broker routed both messages to every subscriber before the owners received theirs.
        _wait_for(lambda: pi1.messages and pi2.messages, 5)
        assert pi2.messages == [(TOPICS.reply("pi-2"), b"secret result of pi-2")]  # the ACL lets the owner read
        assert pi1.messages == [(TOPICS.reply("pi-1"), b"result of pi-1")]
        assert snoop.messages == []
    finally:
        for c in (pi1, snoop, pi2, edge):
            c.close()


def test_a_device_cannot_publish_as_another_device(secured: SecuredBroker) -> None:
    reader = Client(secured.url("dash"), "dash", subscribe=(f"{TOPICS.prefix}/dev/+/telemetry",
                                                             f"{TOPICS.prefix}/dev/+/status"))
    pi2 = Client(secured.url("pi-2"), "pi-2", subscribe=(TOPICS.reply("pi-2"),))
    pi1 = Client(secured.url("pi-1"), "pi-1")
    try:
        pi1.publish(TOPICS.device("pi-2", "telemetry"), b'{"forged": true}')
        pi1.publish(TOPICS.device("pi-2", "status"), b'{"state": "offline"}')
        pi1.publish(TOPICS.reply("pi-2"), b"forged reply")  # only edges may answer
        pi1.publish(TOPICS.device("pi-1", "telemetry"), b'{"honest": true}')
        # Messages of one client arrive in order: once the last one is in, the forged ones are not coming.
        _wait_for(lambda: reader.messages, 5)
        assert reader.messages == [(TOPICS.device("pi-1", "telemetry"), b'{"honest": true}')]
        assert pi2.messages == []
    finally:
        for c in (reader, pi2, pi1):
            c.close()


def test_readers_and_edges_have_only_their_own_rights(secured: SecuredBroker) -> None:
    edge = Client(secured.url("edge-1"), "edge-1-shared", subscribe=(TOPICS.shared_request_filter("g", "abc"),
                                                                     f"{TOPICS.prefix}/dev/+/telemetry"))
    pi1 = Client(secured.url("pi-1"), "pi-1", subscribe=(TOPICS.reply("pi-1"),))
    reader = Client(secured.url("dash"), "dash-2")
    try:
        assert edge.granted == [1, 0x87]  # the shared request subscription works; telemetry is not the edge's
        pi1.publish(TOPICS.request("abc"), b"request")
        pi1.publish(TOPICS.device("pi-1", "telemetry"), b"telemetry")
        reader.publish(TOPICS.request("abc"), b"reader request")  # readers may not send requests
        reader.publish(TOPICS.reply("pi-1"), b"reader reply")
        # Every publish above was acknowledged, so the broker has routed (or dropped) it.
        _wait_for(lambda: edge.messages, 5)
        assert edge.messages == [(TOPICS.request("abc"), b"request")]
        assert pi1.messages == []
    finally:
        for c in (edge, pi1, reader):
            c.close()


def test_a_device_cannot_divert_requests_from_the_edges_shared_subscription(secured: SecuredBroker) -> None:
    """A device that joins the edges' share group would get its turn of every device's requests
    (and the ACL would then drop them): the subscription itself must be refused."""
    edge = Client(secured.url("edge-1"), "edge-1-share", subscribe=(TOPICS.shared_request_filter("g", "abc"),))
    thieves = [Client(secured.url(login), login, subscribe=(
        TOPICS.shared_request_filter("g"), TOPICS.shared_request_filter("g", "abc"), TOPICS.request_filter))
        for login in ("pi-1", "pi-1-telemetry", "pi-1-policy")]
    pi2 = Client(secured.url("pi-2"), "pi-2")
    try:
        assert all(thief.granted == [0x87, 0x87, 0x87] for thief in thieves)
        for n in range(200):
            pi2.client.publish(TOPICS.request("abc"), str(n).encode(), qos=1)
        _wait_for(lambda: len(edge.messages) >= 200, 10)
        assert sorted(int(payload) for _, payload in edge.messages) == list(range(200))
        assert all(thief.messages == [] for thief in thieves)
    finally:
        for c in (edge, *thieves, pi2):
            c.close()


@pytest.mark.slow  # waits out refused connections
def test_a_device_cannot_take_over_another_clients_id(secured: SecuredBroker) -> None:
    """Client ids are bound to logins: pi-1 cannot connect as pi-2-telemetry, which would push
    pi-2's telemetry connection off the broker and publish its last will."""
    status = TOPICS.device("pi-2", "status")
    reader = Client(secured.url("dash"), "dash-takeover", subscribe=(status,))
    victim = make_client(secured.url("pi-2-telemetry"), "pi-2-telemetry",
                         will=Will(status, b'{"state": "lost"}'))
    drops: list[int] = []
    victim.on_disconnect = lambda c, u, f, reason, p: drops.append(reason.value)
    connect_and_start(victim, 5)
    try:
        for login in ("pi-1", "pi-1-telemetry", "pi-1-policy"):
            for stolen in ("pi-2-telemetry", "pi-2", "edge-1"):
                assert _connect_reason(secured.url(login), stolen, timeout_s=2) == 135, (login, stolen)
        # pi-1's own connections all work side by side.
        own = [Client(secured.url(login), login) for login in ("pi-1", "pi-1-telemetry", "pi-1-policy")]
        # A round trip on the victim's connection after all of them: a takeover would have ended it.
        victim.publish(TOPICS.device("pi-2", "telemetry"), b"{}", qos=1).wait_for_publish(5)
        assert victim.is_connected() and drops == [] and reader.messages == []
        assert all(c.client.is_connected() for c in own)
        for c in own:
            c.close()
    finally:
        victim.disconnect()
        victim.loop_stop()
        reader.close()


def test_the_products_device_connections_run_together_under_their_logins(secured: SecuredBroker) -> None:
    """The device's request connection, telemetry publisher and context subscriber log in as
    pi-1, pi-1-telemetry and pi-1-context from one URL with pi-1's credentials, side by side."""
    from tflite_edge.device.context import ContextSubscriber, EdgeLoadTracker
    from tflite_edge.device.offload import OffloadClient
    from tflite_edge.telemetry.publisher import TelemetryPublisher

    reader = Client(secured.url("dash"), "dash-device", subscribe=(TOPICS.device("pi-1", "status"),))
    offload = OffloadClient.over_mqtt(secured.url("pi-1"), "pi-1")
    publisher = TelemetryPublisher("pi-1", broker_url=secured.url("pi-1"), period_s=0.2).start()
    context = ContextSubscriber(secured.url("pi-1"), device_id="pi-1", prefix=TOPICS.prefix,
                                edge_load=EdgeLoadTracker(), budget=None).start()
    try:
        _wait_for(lambda: TOPICS.device("pi-1", "status") in reader.topics(), 5)
        assert offload.connected and context._subscribed.is_set()
    finally:
        context.stop()
        publisher.stop()
        offload.close()
        reader.close()


def test_the_context_connection_reads_edge_load_and_its_own_budget(secured: SecuredBroker) -> None:
    """pi-1-context hears the edge workers' load and the budget the agent (operator) sets for pi-1."""
    from tflite_edge.device.context import ContextSubscriber, EdgeLoadTracker, PowerBudget, budget_topic

    tracker, budget = EdgeLoadTracker(), PowerBudget(2000.0, battery_root=None)
    edge = Client(secured.url("edge-1"), "edge-load")
    agent = Client(secured.url("trainer"), "trainer-budget")
    try:
        with ContextSubscriber(secured.url("pi-1"), device_id="pi-1", prefix=TOPICS.prefix, edge_load=tracker,
                               budget=budget):
            edge.publish(f"{TOPICS.prefix}/edge/edge-1/load", b'{"worker_id": "edge-1", "load": 0.5}')
            agent.publish(budget_topic(TOPICS.prefix, "pi-1"), b"900")
            _wait_for(lambda: tracker.load()[0] == 0.5 and budget.current()[0] == 900.0, 5)
    finally:
        edge.close()
        agent.close()


def test_a_device_announces_only_its_own_home_assistant_sensors(secured: SecuredBroker) -> None:
    """pi-1's discovery reaches a reader (Home Assistant's login); pi-1 cannot announce pi-2's sensors."""
    reader = Client(secured.url("dash"), "dash-ha", subscribe=("homeassistant/#",))
    pi1 = Client(secured.url("pi-1-telemetry"), "pi-1-telemetry")
    try:
        assert reader.granted == [1]
        pi1.publish("homeassistant/sensor/pi-2/latency_p50/config", b"{}")  # refused silently by the broker
        pi1.publish("homeassistant/sensor/pi-1/latency_p50/config", b"{}")
        _wait_for(lambda: "homeassistant/sensor/pi-1/latency_p50/config" in reader.topics(), 5)
        assert "homeassistant/sensor/pi-2/latency_p50/config" not in reader.topics()  # sent before, same connection
    finally:
        pi1.publish("homeassistant/sensor/pi-1/latency_p50/config", b"")
        reader.close()
        pi1.close()


def test_only_agents_publish_policies(secured: SecuredBroker) -> None:
    policy = f"{TOPICS.prefix}/policy/abc"
    pi2 = Client(secured.url("pi-2-policy"), "pi-2-policy", subscribe=(f"{TOPICS.prefix}/policy/+",))
    dash = Client(secured.url("dash"), "dash-policy", subscribe=(f"{TOPICS.prefix}/policy/+",))
    pi1 = Client(secured.url("pi-1-policy"), "pi-1-policy")
    edge = Client(secured.url("edge-1"), "edge-policy")
    agent = Client(secured.url("trainer"), "trainer", subscribe=(f"{TOPICS.prefix}/dev/+/experience",))
    try:
        pi1.publish(policy, b"forged policy")
        edge.publish(policy, b"edge policy")
        agent.publish(policy, b"signed policy")
        pi1.publish(TOPICS.device("pi-1", "experience"), b"records")
        # The forged policies were acknowledged (routed or dropped) before the agent's was sent.
        _wait_for(lambda: pi2.messages and dash.messages and agent.messages, 5)
        assert pi2.messages == [(policy, b"signed policy")] and dash.messages == [(policy, b"signed policy")]
        assert agent.messages == [(TOPICS.device("pi-1", "experience"), b"records")]
    finally:
        for c in (pi2, dash, pi1, edge, agent):
            c.close()


def test_mutual_tls_accepts_a_ca_signed_client(secured: SecuredBroker) -> None:
    pi1 = Client(secured.tls_url("pi-1"), "pi-1", subscribe=(TOPICS.reply("pi-1"),))
    edge = Client(secured.url("edge-1"), "edge-1-plain")
    try:
        edge.publish(TOPICS.reply("pi-1"), b"over tls")
        _wait_for(lambda: pi1.messages, 5)
        assert pi1.messages == [(TOPICS.reply("pi-1"), b"over tls")]
    finally:
        pi1.close()
        edge.close()


@pytest.mark.slow  # waits out refused handshakes
def test_mutual_tls_refuses_clients_without_a_ca_signed_certificate(secured: SecuredBroker, pki: Pki) -> None:
    # Through the product's own client: no certificate, no session.
    assert _connect_reason(secured.tls_url("pi-1", cert=False), "pi-1", timeout_s=2) is None
    rogue = (f"mqtts://pi-1:{secured.passwords['pi-1']}@127.0.0.1:{secured.tls_port}"
             f"?ca={pki.ca_cert}&cert={pki.rogue_cert}&key={pki.rogue_key}")
    assert _connect_reason(rogue, "pi-1", timeout_s=2) is None
    # And at the TLS layer itself: the handshake (or the first read, with TLS 1.3) fails.
    context = TlsSettings(ca_file=pki.ca_cert).context()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", secured.tls_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"\x10\x00")
                if not tls.recv(1):
                    raise ConnectionError("closed by the broker")
    # A client that does not trust the broker's CA refuses the broker, too.
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", secured.tls_port), timeout=5) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.slow
def test_co_inference_and_telemetry_work_under_the_acl_over_mutual_tls(secured: SecuredBroker, digits_bundle: Any,
                                                                       digits_split: Any) -> None:
    """The product's own clients, restricted by the generated ACL: a device over mutual TLS,
    an edge worker on the plain listener, a telemetry reader."""
    from tflite_edge.device import DeviceRuntime
    from tflite_edge.edge import EdgeWorker
    from tflite_edge.telemetry.publisher import TelemetryPublisher

    sample = digits_split[2][0].astype("float32")
    reader = Client(secured.url("dash"), "dash-e2e", subscribe=(f"{TOPICS.prefix}/dev/+/status",))
    try:
        with EdgeWorker(secured.url("edge-1"), [digits_bundle], group="g"):
            with DeviceRuntime(digits_bundle, broker_url=secured.tls_url("pi-1"), device_id="pi-1") as device:
                # Its telemetry connection runs beside the request connection, under its own login.
                publisher = TelemetryPublisher("pi-1", broker_url=secured.tls_url("pi-1"), period_s=0.2).start()
                result = device.infer(sample, partition=1, deadline_ms=5000)
                assert not result.fell_back, result.error
                assert result.offloaded
                publisher.stop()
        _wait_for(lambda: TOPICS.device("pi-1", "status") in reader.topics(), 5)
    finally:
        reader.close()


def test_a_password_from_a_file_or_the_environment_logs_in(secured: SecuredBroker, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The password need not be in the URL (where process lists show it)."""
    from tflite_edge.transport.mqtt import PASSWORD_ENV

    secret = tmp_path / "pi-1.password"
    secret.write_text(secured.passwords["pi-1"] + "\n")
    port = secured.broker.port
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert _connect_reason(f"mqtt://pi-1@127.0.0.1:{port}?password_file={secret}", "pi-1") == 0
    assert _connect_reason(f"mqtt://pi-1@127.0.0.1:{port}", "pi-1") in (134, 135)  # no password at all
    monkeypatch.setenv(PASSWORD_ENV, secured.passwords["pi-1"])
    assert _connect_reason(f"mqtt://pi-1@127.0.0.1:{port}", "pi-1") == 0
