"""The host end of the bridge: a pyserial client with timeouts, retries and reconnection.

``BridgeClient`` opens any port pyserial understands (``/dev/ttyACM0``, a pty path,
``socket://127.0.0.1:7000``, ``loop://``), and turns each call into request frames with
fresh sequence numbers. A reply is accepted only with the sequence number of the attempt in
flight, so a late answer to an earlier attempt can never be mistaken for the current one.
Lost or corrupted frames are retried; a port that disappears (USB unplugged, pty closed) is
reopened. Every retried request is idempotent on the firmware side: chunks carry their
offset, LOAD_BEGIN restarts a load, a repeated LOAD_END returns the same model info.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..errors import BridgeTimeoutError, McuError, SerialMessageError, SerialPortError
from .fragments import Reassembler, split_payload
from .framing import MAX_PAYLOAD_BYTES, PROTOCOL_VERSION, FrameDecoder, encode_frame
from .messages import (
    Capabilities,
    ErrorCode,
    ErrorReply,
    FragmentReply,
    GetTelemetry,
    Hello,
    Invoke,
    LoadAck,
    LoadBegin,
    LoadChunk,
    LoadEnd,
    Message,
    MessageType,
    ModelInfo,
    Result,
    Telemetry,
    Tensor,
    TensorDesc,
    decode_message,
    encode_message,
)

__all__ = ["BridgeClient", "InvokeResult", "ClientStats"]

log = logging.getLogger(__name__)
_CHUNK_HEADER_BYTES = 5  # slot u8 + offset u32
_M = TypeVar("_M")


@dataclass(frozen=True)
class InvokeResult:
    """Outputs of one on-chip invoke, in the model's output order."""

    outputs: tuple[np.ndarray, ...]
    descs: tuple[TensorDesc, ...]
    latency_us: int
    round_trip_ms: float


@dataclass
class ClientStats:
    """Counters for what the link needed to get requests through."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    reconnects: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    frames_dropped: int = field(default=0)


class BridgeClient:
    """Talks to one microcontroller (or ``SimulatedMcu``) over a serial link."""

    def __init__(
        self,
        port: str,
        *,
        baud: int = 115200,
        timeout_s: float = 1.0,
        retries: int = 3,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_message_bytes: int = 4 * 1024 * 1024,
        reconnect_delay_s: float = 0.1,
    ) -> None:
        self.url = port
        self.baud = baud
        self.timeout_s = timeout_s
        self.retries = retries
        self.reconnect_delay_s = reconnect_delay_s
        self.max_payload_bytes = max_payload_bytes
        self.max_message_bytes = max_message_bytes
        self._reassembler = Reassembler(max_message_bytes)
        self.capabilities: Capabilities | None = None
        self.models: dict[int, ModelInfo] = {}
        self.last_telemetry: Telemetry | None = None
        self.stats = ClientStats()
        self._decoder = FrameDecoder(max_payload_bytes=max_payload_bytes)
        self._port: Any = None
        self._seq = 0
        # One request at a time: the telemetry thread and the inference path share the link.
        self._lock = threading.RLock()

    # -- port ---------------------------------------------------------------------------
    def open(self) -> BridgeClient:
        """Open the port (done on first use anyway)."""
        if self._port is None:
            import serial

            try:
                self._port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.02,
                                                   write_timeout=self.timeout_s)
            except (serial.SerialException, OSError, ValueError) as e:
                raise SerialPortError(
                    f"cannot open serial port {self.url!r}: {e}; check the device is plugged in and that "
                    "this user may open it (e.g. the dialout group)"
                ) from e
            self._decoder.reset()
        return self

    def close(self) -> None:
        """Close the port; the next request reopens it."""
        if self._port is not None:
            try:
                self._port.close()
            except Exception:  # closing a port that already went away may fail in many ways
                log.debug("error closing %s", self.url, exc_info=True)
            self._port = None

    def __enter__(self) -> BridgeClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------
    def hello(self) -> Capabilities:
        """Greet the MCU and learn its capabilities; the frame limit becomes the smaller of both."""
        caps = self.request(Hello(PROTOCOL_VERSION, self.max_payload_bytes, self.max_message_bytes), Capabilities)
        if caps.protocol_version != PROTOCOL_VERSION:
            raise McuError(f"the MCU speaks protocol {caps.protocol_version}, this host {PROTOCOL_VERSION}",
                           ErrorCode.VERSION)
        self.capabilities = caps
        return caps

    @property
    def link_payload_bytes(self) -> int:
        """Largest payload both ends accept."""
        if self.capabilities is None:
            return min(self.max_payload_bytes, 256)
        return min(self.max_payload_bytes, self.capabilities.max_payload_bytes)

    @property
    def link_message_bytes(self) -> int:
        """Largest message the MCU accepts in fragments (a frame's payload before HELLO)."""
        if self.capabilities is None:
            return self.link_payload_bytes
        return max(self.link_payload_bytes, self.capabilities.max_message_bytes)

    def load(self, model: bytes, *, slot: int = 0) -> ModelInfo:
        """Send a model in CRC-checked chunks; returns what the MCU reports after loading it."""
        if self.capabilities is None:
            self.hello()
        assert self.capabilities is not None
        if len(model) > self.capabilities.max_model_bytes:
            raise McuError(
                f"the model has {len(model)} bytes but {self.capabilities.board} holds at most "
                f"{self.capabilities.max_model_bytes}", ErrorCode.MODEL_TOO_LARGE,
            )
        self.request(LoadBegin(slot, len(model), zlib.crc32(model)), LoadAck)
        chunk = self.link_payload_bytes - _CHUNK_HEADER_BYTES
        offset = 0
        while offset < len(model):
            ack = self.request(LoadChunk(slot, offset, model[offset : offset + chunk]), LoadAck)
            # The MCU says where it is; that also covers a chunk it already had from a retry.
            if not offset < ack.next_offset <= len(model):
                raise SerialMessageError(f"MCU acknowledged offset {ack.next_offset} after a chunk at {offset}")
            offset = ack.next_offset
        info = self.request(LoadEnd(slot), ModelInfo)
        self.models[slot] = info
        return info

    def invoke(self, inputs: Sequence[np.ndarray] | Mapping[int, np.ndarray], *, slot: int = 0) -> InvokeResult:
        """Run the model in ``slot`` on inputs given in the model's input order (or by position)."""
        items = dict(inputs) if isinstance(inputs, Mapping) else dict(enumerate(inputs))
        info = self.models.get(slot)
        tensors = []
        for index, array in sorted(items.items()):
            desc = info.inputs[index] if info is not None and index < len(info.inputs) else None
            scale, zero_point = (desc.scale, desc.zero_point) if desc is not None else (0.0, 0)
            tensors.append(Tensor.from_array(index, np.asarray(array), scale, zero_point))
        start = time.perf_counter()
        result = self.request(Invoke(slot, tuple(tensors)), Result)
        round_trip_ms = (time.perf_counter() - start) * 1000.0
        ordered = sorted(result.tensors, key=lambda t: t.index)
        return InvokeResult(tuple(t.to_array() for t in ordered), tuple(t.desc for t in ordered),
                            result.latency_us, round_trip_ms)

    def telemetry(self) -> Telemetry:
        """One power and health reading from the MCU."""
        reading = self.request(GetTelemetry(), Telemetry)
        self.last_telemetry = reading
        return reading

    def request(self, message: Message, expect: type[_M]) -> _M:
        """Send ``message`` and return the reply of type ``expect``, retrying lost frames.

        Raises ``McuError`` for an ERROR reply, ``BridgeTimeoutError`` when no reply came after
        every retry, ``SerialPortError`` when the port cannot be reopened.
        """
        with self._lock:
            return self._request(message, expect)

    def _request(self, message: Message, expect: type[_M]) -> _M:
        msg_type, payload = encode_message(message)
        if len(payload) > self.link_message_bytes:
            raise SerialMessageError(
                f"{type(message).__name__} needs {len(payload)} payload bytes but the MCU accepts at most "
                f"{self.link_message_bytes}; split the model at a smaller activation"
            )
        parts = split_payload(msg_type, payload, self.link_payload_bytes)
        self.stats.requests += 1
        last_problem = "no reply"
        port_error: SerialPortError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self._seq = (self._seq + 1) & 0xFFFF
            wire = b"".join(encode_frame(t, self._seq, p) for t, p in parts)
            try:
                self.open()
                self._port.write(wire)
                self._port.flush()
                self.stats.bytes_out += len(wire)
                reply = self._await(self._seq, len(wire))
            except SerialPortError as e:
                # A USB device node vanishes for a moment while it re-enumerates: keep trying.
                port_error, last_problem = e, str(e)
                time.sleep(self.reconnect_delay_s)
                continue
            except (OSError, _serial_exception()) as e:
                # The port went away (unplugged, pty closed): reopen and try again.
                last_problem = f"port error: {e}"
                log.info("serial port %s failed (%s); reopening", self.url, e)
                self.close()
                self.stats.reconnects += 1
                time.sleep(self.reconnect_delay_s)
                continue
            if reply is None:
                self.stats.timeouts += 1
                last_problem = f"no reply within {self.timeout_s:g} s"
                continue
            if isinstance(reply, ErrorReply):
                raise McuError(f"the MCU refused {type(message).__name__}: {reply.text} (code {reply.code})",
                               reply.code)
            if not isinstance(reply, expect):
                raise SerialMessageError(f"expected {expect.__name__} in reply to {type(message).__name__}, "
                                         f"got {type(reply).__name__}")
            return reply
        if port_error is not None and last_problem == str(port_error):
            raise port_error
        dropped = self._decoder.stats.last_error
        hint = f"; the last frame dropped here: {dropped}" if dropped is not None else ""
        raise BridgeTimeoutError(
            f"{type(message).__name__} to {self.url} failed after {self.retries + 1} attempts ({last_problem}); "
            f"check the cable, the baud rate and that the firmware is running{hint}"
        )

    def _await(self, seq: int, sent_bytes: int) -> Message | None:
        # The timeout counts from when the request has left at the link's speed (10 bits per
        # byte), and restarts while reply bytes keep coming, so that a large fragmented reply
        # on a slow link is not cut off; a hard cap bounds it all the same.
        byte_s = 10.0 / self.baud if self.baud else 0.0
        now = time.monotonic()
        deadline = now + self.timeout_s + sent_bytes * byte_s
        cap = deadline + self.max_message_bytes * byte_s
        while time.monotonic() < deadline:
            waiting = self._port.in_waiting
            data = self._port.read(max(1, min(waiting, 65536)))
            if not data:
                continue
            deadline = min(cap, max(deadline, time.monotonic() + self.timeout_s))
            self.stats.bytes_in += len(data)
            dropped = self._decoder.stats.dropped
            frames = self._decoder.feed(data)
            self.stats.frames_dropped += self._decoder.stats.dropped - dropped
            for frame in frames:
                if not frame.msg_type & 0x80:
                    continue  # a request type: our own bytes echoed (loop://) or line noise
                try:
                    message = decode_message(frame.msg_type, frame.payload)
                    if isinstance(message, FragmentReply):
                        if frame.seq != seq:
                            continue
                        joined = self._reassembler.push(frame.seq, message)
                        if joined is None:
                            continue
                        message = decode_message(*joined)
                except SerialMessageError:
                    log.warning("malformed %s reply from the MCU dropped", MessageType(frame.msg_type).name
                                if frame.msg_type in MessageType._value2member_map_ else hex(frame.msg_type))
                    continue
                if isinstance(message, Telemetry):
                    self.last_telemetry = message
                if frame.seq == seq:
                    return message
        return None


def _serial_exception() -> type[Exception]:
    import serial

    return serial.SerialException  # type: ignore[no-any-return]
