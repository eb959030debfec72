"""Co-inference over MQTT on loopback: round trips, protocol overhead, edge throughput.

Figures printed (one private Mosquitto, edge workers as separate processes, as deployed):

1. Round trip per partition of the digits bundle (exit ``final``): median and p99 of the
   device's total time, and its transfer / edge / device parts.
2. Protocol overhead for a 25,088-byte int8 activation (28x28x32, the size of
   MobileNetV2's block_5 cut): the framework's request/reply minus the edge's compute
   time (and the device runtime's whole transfer, with encoding and decoding), against a
   bare paho-mqtt request/response through the same broker (25 KB request; a 71-byte reply
   like the framework's, and a full 25 KB echo), interleaved in one run. The bare
   reference is plain paho-mqtt in processes of its own; a second bare reference uses
   tflite-edge's MQTT 5 properties parser, as the framework does. The bundles are
   built in a child process so that this one, like a device, never imports TensorFlow.
3. Edge throughput: requests/s of one worker vs two workers in a shared group, with a
   compute-heavy tail (four 3x3 convolutions with 256 filters at 28x28, about 6 ms on one
   thread here) and 8 requests in flight.
4. Useful throughput under overload: requests with a deadline sent open-loop at twice the
   one worker's measured capacity; answers that arrive within their deadline per second,
   as a share of that capacity (measured in section 3, so it carries that run's noise),
   and the share of all answers that arrived in time, with and without the absolute
   deadline (``dl_us``, dated as a device dates it) that lets the edge drop requests
   nobody waits for any more. The worker answers the newest waiting request first either
   way (``edge/backlog.py``).

    .venv/bin/python bench/bench_coinference.py [--requests 300] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflite_edge.arrays import load_array  # noqa: E402
from tflite_edge.bundle import Bundle, load_bundle  # noqa: E402
from tflite_edge.device import DeviceRuntime  # noqa: E402
from tflite_edge.transport.broker import MosquittoBroker  # noqa: E402
from tflite_edge.transport.clock import ClockOffset  # noqa: E402
from tflite_edge.transport.mqtt import connect_and_start, make_client  # noqa: E402
from tflite_edge.transport.properties import PackedProperties  # noqa: E402
from tflite_edge.transport.protocol import (  # noqa: E402
    ReplyHeader,
    RequestHeader,
    Topics,
    request_properties,
    user_properties,
)
from tflite_edge.transport.wire import encode_tensor  # noqa: E402

# The bare reference: plain paho-mqtt, without tflite-edge, on both ends (an echo server and
# a client, each its own process). With "one-pass" both use tflite-edge's properties parser
# instead of paho's (transport.properties), as the framework does: the difference between the
# two references is the parser, and between the framework and the second, everything else.
BARE_COMMON = r"""
import sys, threading, time, urllib.parse
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
if sys.argv[2] == "one-pass":
    from tflite_edge.transport.properties import install_publish_parser
    install_publish_parser()
url = urllib.parse.urlsplit(sys.argv[1])
subscribed = threading.Event()
def bare_client(name, topic):
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda c, *a: c.subscribe(topic)
    client.on_subscribe = lambda *a: subscribed.set()
    return client
def start(client):
    client.connect(url.hostname, url.port)
    client.loop_start()
    assert subscribed.wait(5)
"""

ECHO_SERVER = BARE_COMMON + r"""
client = bare_client(f"bench-echo-{sys.argv[2]}", f"bench/{sys.argv[2]}/echo/+")
def on_message(c, u, m):
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = m.properties.CorrelationData
    payload = m.payload if m.topic.endswith("/full") else m.payload[:71]
    c.publish(m.properties.ResponseTopic, payload, properties=props)
client.on_message = on_message
start(client)
print("ready", flush=True)
sys.stdin.read()
"""

ECHO_CLIENT = BARE_COMMON + r"""
reply = f"bench/{sys.argv[2]}/reply"
client = bare_client(f"bench-echo-client-{sys.argv[2]}", reply)
arrived = threading.Event()
client.on_message = lambda c, u, m: arrived.set()
start(client)
payload = bytes(range(256)) * 98  # 25,088 bytes
print("ready", flush=True)
for line in sys.stdin:  # "ack" or "full": one request/response, its time in ms on stdout
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply
    props.CorrelationData = b"1"
    arrived.clear()
    began = time.perf_counter()
    client.publish(f"bench/{sys.argv[2]}/echo/{line.strip()}", payload, properties=props)
    if not arrived.wait(5):
        sys.exit("echo timed out")
    print((time.perf_counter() - began) * 1e3, flush=True)
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def start_edge(broker_url: str, bundles: list[Path], workers: int, threads: int = 1) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tflite_edge", "edge", "--broker", broker_url, "--workers", str(workers),
            "--threads", str(threads)]
    for path in bundles:
        args += ["--bundle", str(path)]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("edge: ready"):
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process
    raise RuntimeError(f"edge did not start (exit code {process.wait()})")


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(10)


def build_bundles(directory: Path) -> tuple[Bundle, Bundle, Bundle, np.ndarray]:
    import keras

    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x_train, y_train, x_val, y_val = zoo.digits_data()
    digits = convert(zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=20),
                     directory / "digits", cuts=["block_1_out", "block_2_out"], calibration=x_train[:200])

    def cut_model(heavy_layers: int, filters: int = 256) -> Any:
        inputs = keras.Input((56, 56, 3), name="image")
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="block_1_out")(inputs)
        for i in range(heavy_layers):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"tail_conv_{i}")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(10, activation="softmax", name="final")(x)
        return keras.Model(inputs, outputs, name=f"cut25k_{heavy_layers}")

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(16, 56, 56, 3)).astype(np.float32)
    light = convert(cut_model(0), directory / "light", cuts=["block_1_out"], calibration=images, verify_samples=2)
    heavy = convert(cut_model(4), directory / "heavy", cuts=["block_1_out"], calibration=images, verify_samples=2)
    np.save(directory / "x.npy", x_val[:50].astype(np.float32))
    return digits, light, heavy, x_val[:50].astype(np.float32)


def load_bundles(directory: Path) -> tuple[Bundle, Bundle, Bundle, np.ndarray]:
    """Build the bundles in a child process: the measuring process stays free of TensorFlow,
    as a device would be."""
    subprocess.run([sys.executable, __file__, "--build-only", str(directory)], check=True,
                   stdout=subprocess.DEVNULL)
    paths = [directory / name for name in ("digits", "light", "heavy")]
    digits, light, heavy = (load_bundle(path) for path in paths)
    return digits, light, heavy, load_array(directory / "x.npy")


def round_trips(broker: MosquittoBroker, digits: Bundle, x: np.ndarray, requests: int) -> None:
    print("\n1. digits bundle, exit 'final', one edge worker process, loopback")
    print(f"{'K':>2} {'ran on':<7} {'req B':>6} {'total med':>10} {'p99':>7} {'transfer':>9} {'edge':>6} {'device':>7}")
    with DeviceRuntime(digits, broker_url=broker.url, device_id="bench") as device:
        for k in range(digits.manifest.num_segments + 1):
            for i in range(20):
                device.infer(x[i % len(x)], partition=k, deadline_ms=1000)
            results = [device.infer(x[i % len(x)], partition=k, deadline_ms=1000) for i in range(requests)]
            assert not any(r.fell_back for r in results), [r.error for r in results if r.fell_back][:1]
            total = [r.total_ms for r in results]
            print(f"{k:>2} {results[0].ran_on:<7} {results[0].request_bytes:>6} {statistics.median(total):>10.3f} "
                  f"{percentile(total, 99):>7.3f} {statistics.median(r.transfer_ms for r in results):>9.3f} "
                  f"{statistics.median(r.edge_ms for r in results):>6.3f} "
                  f"{statistics.median(r.device_ms for r in results):>7.3f}")


class BareMqtt:
    """A bare paho-mqtt echo server and client (processes of their own, see ``ECHO_CLIENT``)."""

    def __init__(self, url: str, parser: str) -> None:
        self.processes = [
            subprocess.Popen([sys.executable, "-c", code, url, parser], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
            for code in (ECHO_SERVER, ECHO_CLIENT)
        ]
        for process in self.processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        self.client = self.processes[1]

    def request(self, full: bool) -> float:
        """One request (25,088 bytes) and its reply (the same or 71 bytes): the client's time in ms."""
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write("full\n" if full else "ack\n")
        self.client.stdin.flush()
        return float(self.client.stdout.readline())

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(5)


def properties_cost() -> None:
    """paho-mqtt's Python MQTT 5 properties code against transport.properties, per message."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tflite_edge.transport.properties import ParsedProperties

    request = RequestHeader("0123abcd-17", "final", deadline_us=1_796_000_000_000_000)
    reply = ReplyHeader.success("0123abcd-17", 153, rx_us=1_796_000_000_000_000)
    cases = {
        "request": (dict(response_topic=Topics().reply("pi-1"), correlation=b"0123abcd-17", expiry_s=1,
                         user=request.to_pairs()), bytes(25_088)),
        "reply": (dict(correlation=b"0123abcd-17", user=reply.to_pairs()), bytes(40)),
    }

    def per_call_us(fn: Any, number: int = 2000) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    print("   MQTT 5 properties per message (µs; parsing with the frame behind them, as paho decodes):")
    for name, (values, frame) in cases.items():
        def paho_pack(values: dict[str, Any] = values) -> bytes:
            props = Properties(PacketTypes.PUBLISH)
            if values.get("expiry_s") is not None:
                props.MessageExpiryInterval = values["expiry_s"]
            if "response_topic" in values:
                props.ResponseTopic = values["response_topic"]
            props.CorrelationData = values["correlation"]
            props.UserProperty = list(values["user"])
            return props.pack()  # type: ignore[no-any-return]

        packet = paho_pack() + frame
        assert PackedProperties(**values).pack() == paho_pack()
        pack = (per_call_us(paho_pack), per_call_us(lambda values=values: PackedProperties(**values).pack()))
        parse = (per_call_us(lambda packet=packet: Properties(PacketTypes.PUBLISH).unpack(packet)),
                 per_call_us(lambda packet=packet: ParsedProperties(PacketTypes.PUBLISH).unpack(packet)))
        print(f"   {name:<8} pack: paho {pack[0]:6.1f}, tflite-edge {pack[1]:5.1f}   "
              f"parse: paho {parse[0]:6.1f}, tflite-edge {parse[1]:5.1f}")


def overhead(broker: MosquittoBroker, light: Bundle, requests: int) -> None:
    print("\n2. 25,088-byte int8 activation: framework round trip vs bare paho-mqtt, same broker, interleaved")
    properties_cost()
    bare = {parser: BareMqtt(broker.url, parser) for parser in ("stock", "one-pass")}
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(56, 56, 3)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in ("fw", "fw_total", "edge", "raw", "ack", "full", "ack1")}
    with DeviceRuntime(light, broker_url=broker.url, device_id="bench") as device:
        assert device.offload is not None
        offload = device.offload
        spec = light.manifest.segments[1].inputs[0]
        frame = encode_tensor(rng.integers(-128, 127, size=spec.shape, dtype=np.int8), spec,
                              bundle_id=light.bundle_id, segment=1)

        def protocol_only() -> float:
            # The request/reply exchange alone: no local segment, encode or decode.
            start = time.perf_counter()
            reply = offload.request(light.bundle_id, frame, RequestHeader(uuid.uuid4().hex[:12], "final"),
                                    timeout_s=1.0)
            assert reply is not None and reply.header.ok
            return (time.perf_counter() - start) * 1e3 - reply.header.edge_us / 1e3

        steps = {
            "fw": lambda: device.infer(x, partition=1, deadline_ms=1000),
            "raw": protocol_only,
            "ack": lambda: bare["stock"].request(full=False),
            "full": lambda: bare["stock"].request(full=True),
            "ack1": lambda: bare["one-pass"].request(full=False),
        }
        shuffle = random.Random(0)
        for i in range(requests + 20):
            # A new order each round: a contender that always ran after the same other one
            # (a rotation keeps neighbours) would inherit its wake-ups and warm caches.
            order = list(steps)
            shuffle.shuffle(order)
            done = {name: steps[name]() for name in order}
            if i < 20:  # warm-up
                continue
            r = done.pop("fw")
            assert r.request_bytes > 25_088 and not r.fell_back
            times["fw"].append(r.transfer_ms)
            times["fw_total"].append(r.total_ms - r.device_ms)
            times["edge"].append(r.edge_ms)
            for name, value in done.items():
                times[name].append(value)
    for reference in bare.values():
        reference.close()
    rows = [
        ("framework: request/reply - edge compute", "raw"),
        ("framework: infer transfer (+encode/decode)", "fw"),
        ("framework: round trip incl. edge tail", "fw_total"),
        ("bare paho: 25 KB request, 71 B reply", "ack"),
        ("bare paho: 25 KB echo both ways", "full"),
        ("bare paho + one-pass parser: 71 B reply", "ack1"),
    ]
    for label, key in rows:
        values = times[key]
        print(f"   {label:<42} median {statistics.median(values):7.3f} ms   p99 {percentile(values, 99):7.3f} ms")
    print(f"   edge compute of the tail: median {statistics.median(times['edge']):.3f} ms")
    for reference, key in (("bare paho", "ack"), ("bare paho + one-pass parser", "ack1")):
        for label, values in (("request/reply", times["raw"]), ("infer transfer", times["fw"])):
            print(f"   ratio framework {label} / {reference} (same bytes): median "
                  f"{statistics.median(values) / statistics.median(times[key]):.2f}x, "
                  f"p99 {percentile(values, 99) / percentile(times[key], 99):.2f}x")


def throughput(
    broker: MosquittoBroker, heavy: Bundle, paths: list[Path], window: int, seconds: float
) -> dict[int, float]:
    print(f"\n3. edge throughput, compute-heavy tail, {window} requests in flight, {seconds:g} s per run")
    spec = heavy.manifest.segments[1].inputs[0]
    frame = encode_tensor(np.zeros(spec.shape, np.int8), spec, bundle_id=heavy.bundle_id, segment=1)
    topics = Topics()
    rates = {}
    for workers in (1, 2):
        edge = start_edge(broker.url, paths, workers)
        try:
            client = make_client(broker.url, f"bench-load-{workers}")
            done = threading.Semaphore(0)
            counter = {"n": 0}

            def on_message(c: Any, u: Any, m: Any, counter: dict[str, int] = counter,
                           done: threading.Semaphore = done) -> None:
                counter["n"] += 1
                done.release()

            client.on_message = on_message
            client.on_connect = lambda c, *a: c.subscribe(topics.reply("bench-load"))
            connect_and_start(client)
            time.sleep(0.3)
            sent = 0

            def send(client: Any = client) -> None:
                nonlocal sent
                header = RequestHeader(f"r{sent}", "final")
                props = request_properties(header, response_topic=topics.reply("bench-load"))
                client.publish(topics.request(heavy.bundle_id), frame, properties=props)
                sent += 1

            for _ in range(window):
                send()
            warm_until = time.perf_counter() + 1.0
            while time.perf_counter() < warm_until:
                if done.acquire(timeout=5):
                    send()
            start_count, start = counter["n"], time.perf_counter()
            while time.perf_counter() - start < seconds:
                if done.acquire(timeout=5):
                    send()
            rates[workers] = (counter["n"] - start_count) / (time.perf_counter() - start)
            client.disconnect()
            client.loop_stop()
        finally:
            stop(edge)
        print(f"   {workers} worker(s): {rates[workers]:.1f} requests/s")
    print(f"   speed-up 2 vs 1: {rates[2] / rates[1]:.2f}x")
    return rates


def overload(
    broker: MosquittoBroker, heavy: Bundle, paths: list[Path], capacity_rps: float, seconds: float,
    deadline_ms: float, factor: float = 2.0,
) -> None:
    print(f"\n4. overload: open-loop requests at {factor:g}x one worker's capacity ({capacity_rps:.0f}/s), "
          f"deadline {deadline_ms:.0f} ms, {seconds:g} s per run")
    for dated in (False, True):
        edge = start_edge(broker.url, paths, workers=1)
        try:
            sent, on_time, late = _flood(broker, heavy, 1.0 / (capacity_rps * factor), seconds, deadline_ms, dated)
        finally:
            stop(edge)
        useful = on_time / seconds
        label = "with dl_us (edge sheds)" if dated else "without dl_us (broker expiry only)"
        print(f"   {label:<36} sent {sent}, on time {on_time}, late {late}: useful {useful:.1f}/s = "
              f"{useful / capacity_rps:.0%} of capacity; {on_time / max(on_time + late, 1):.0%} of answers in time")


def _flood(
    broker: MosquittoBroker, bundle: Bundle, interval_s: float, seconds: float, deadline_ms: float, dated: bool
) -> tuple[int, int, int]:
    """Send requests every ``interval_s`` for ``seconds``; count answers within / after the deadline.

    Dated requests carry ``dl_us`` as a device computes it (``ClockOffset.edge_deadline_us``,
    after a few round trips have given the clock offset and the way back)."""
    spec = bundle.manifest.segments[1].inputs[0]
    frame = encode_tensor(np.zeros(spec.shape, np.int8), spec, bundle_id=bundle.bundle_id, segment=1)
    topics = Topics()
    reply_topic = topics.reply("bench-overload")
    sent_at: dict[bytes, float] = {}
    counts = {"on_time": 0, "late": 0}
    answered = threading.Event()
    last: dict[str, Any] = {}

    def on_message(c: Any, u: Any, m: Any) -> None:
        received = time.perf_counter()
        correlation = bytes(m.properties.CorrelationData)
        sent = sent_at.get(correlation)
        if sent is not None:
            counts["on_time" if (received - sent) * 1e3 <= deadline_ms else "late"] += 1
        else:
            last.update(received=received, header=ReplyHeader.from_message(user_properties(m.properties), correlation))
            answered.set()

    subscribed = threading.Event()
    client = make_client(broker.url, "bench-overload")
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(reply_topic)
    connect_and_start(client)
    assert subscribed.wait(5)
    offset = ClockOffset()
    for i in range(20 if dated else 0):  # round trips, one at a time, as a device's first requests
        answered.clear()
        wall_send, t_send = time.time(), time.perf_counter()
        client.publish(topics.request(bundle.bundle_id), frame,
                       properties=request_properties(RequestHeader(f"w{i}", "final"), response_topic=reply_topic))
        assert answered.wait(5)
        header = last["header"]
        offset.add(wall_send, wall_send + (last["received"] - t_send), header.rx_us / 1e6, header.edge_us / 1e6)
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        rid = f"o{n}"
        deadline_us = offset.edge_deadline_us(time.time() + deadline_ms / 1e3) if dated else None
        sent_at[rid.encode()] = now
        props = request_properties(RequestHeader(rid, "final", deadline_us=deadline_us), response_topic=reply_topic,
                                   expiry_s=1)
        client.publish(topics.request(bundle.bundle_id), frame, properties=props)
        n += 1
        time.sleep(max(start + n * interval_s - time.perf_counter(), 0.0))
    time.sleep(deadline_ms / 1e3)  # answers to the last requests may still arrive in time
    client.disconnect()
    client.loop_stop()
    return n, counts["on_time"], counts["late"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement (default 300)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput run (default 5)")
    parser.add_argument("--window", type=int, default=8, help="requests in flight for throughput (default 8)")
    parser.add_argument("--skip-throughput", action="store_true", help="skip sections 3 and 4")
    parser.add_argument("--overload-deadline-ms", type=float,
                        help="deadline of the overload run's requests (default: 4 mean service times)")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build_bundles(args.build_only)
        return
    with tempfile.TemporaryDirectory() as tmp:
        digits, light, heavy, x = load_bundles(Path(tmp))
        with MosquittoBroker() as broker:
            edge = start_edge(broker.url, [digits.path, light.path], workers=1)
            try:
                round_trips(broker, digits, x, args.requests)
                overhead(broker, light, args.requests)
            finally:
                stop(edge)
            if not args.skip_throughput:
                rates = throughput(broker, heavy, [heavy.path], args.window, args.seconds)
                deadline_ms = args.overload_deadline_ms or 4e3 / rates[1]
                overload(broker, heavy, [heavy.path], rates[1], args.seconds, deadline_ms)


if __name__ == "__main__":
    main()
