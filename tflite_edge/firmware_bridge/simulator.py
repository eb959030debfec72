"""A simulated microcontroller that speaks the bridge protocol and runs TFLite Micro.

``SimulatedMcu.handle`` is the firmware's request handler as a pure function of frames
(bytes in, bytes out); ``serve`` drives it over any byte link: a pty master
(``open_pty``), a loopback TCP connection, or a pyserial port. Segments run in the real
TFLM kernels of the ``tflite-micro`` package, with a configurable arena limit. The link
speed is modelled by sleeping 10 bit times per byte (8N1 framing) in each direction, and
the power reading is a synthetic signal: idle draw plus active draw in proportion to the
recent invoke duty cycle, with seeded noise.
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import threading
import time
import tty
import zlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import MicroModelError, SerialMessageError
from .fragments import Reassembler, split_payload
from .framing import PROTOCOL_VERSION, Frame, FrameDecoder, encode_frame
from .messages import (
    Capabilities,
    ErrorCode,
    ErrorReply,
    Fragment,
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
    decode_message,
    encode_message,
)
from .micro import MicroModel

__all__ = ["PowerModel", "SimulatedMcu", "ByteLink", "FdLink", "SocketLink", "open_pty", "serve"]

log = logging.getLogger(__name__)
FIRMWARE = "tflite-edge-sim 1"
_REQUEST_TYPES = frozenset(int(t) for t in MessageType if not t & 0x80)


@dataclass
class PowerModel:
    """Synthetic power draw of a Cortex-M4-class board (illustrative figures, not measured)."""

    idle_mw: float = 12.0
    active_mw: float = 45.0
    noise_mw: float = 0.8
    supply_mv: float = 3300.0
    #: Supply droop per mW drawn, through the regulator and cable resistance.
    droop_mv_per_mw: float = 0.4
    ambient_c: float = 25.0
    #: Die temperature rise per mW of average draw.
    heating_c_per_mw: float = 0.08
    window_s: float = 1.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _busy: list[tuple[float, float]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def record_busy(self, start_s: float, end_s: float) -> None:
        self._busy.append((start_s, end_s))

    def duty(self, now_s: float) -> float:
        """Fraction of the last window spent invoking."""
        start = now_s - self.window_s
        self._busy = [(a, b) for a, b in self._busy if b > start]
        busy = sum(min(b, now_s) - max(a, start) for a, b in self._busy)
        return max(0.0, min(1.0, busy / self.window_s))

    def reading(self, now_s: float) -> tuple[float, float, float]:
        """(power_mw, voltage_mv, temperature_c) now."""
        power = self.idle_mw + (self.active_mw - self.idle_mw) * self.duty(now_s) + self._rng.gauss(0, self.noise_mw)
        power = max(0.0, power)
        voltage = self.supply_mv - self.droop_mv_per_mw * power + self._rng.gauss(0, 2.0)
        temperature = self.ambient_c + self.heating_c_per_mw * power + self._rng.gauss(0, 0.1)
        return power, voltage, temperature


@dataclass
class _Slot:
    expected_bytes: int = 0
    crc32: int = 0
    data: bytearray = field(default_factory=bytearray)
    loading: bool = False
    model: MicroModel | None = None
    info: ModelInfo | None = None


class SimulatedMcu:
    """The firmware's protocol logic with TFLite Micro behind it."""

    def __init__(
        self,
        *,
        arena_bytes: int = 64 * 1024,
        model_slots: int = 1,
        max_payload_bytes: int = 1024,
        max_model_bytes: int = 256 * 1024,
        max_message_bytes: int = 64 * 1024,
        board: str = "sim-cortex-m4",
        power: PowerModel | None = None,
        cpu_slowdown: float = 1.0,
    ) -> None:
        self.arena_bytes = arena_bytes
        self.max_payload_bytes = max_payload_bytes
        self.max_model_bytes = max_model_bytes
        self.max_message_bytes = max_message_bytes
        self._reassembler = Reassembler(max_message_bytes)
        self.board = board
        self.power = power or PowerModel()
        # How much slower than this host the modelled MCU computes (e.g. ~50 for a 64 MHz M4).
        self.cpu_slowdown = max(1.0, cpu_slowdown)
        self.slots = [_Slot() for _ in range(model_slots)]
        self.host_max_payload = max_payload_bytes
        self.host_max_message = max_payload_bytes
        self.invokes = 0
        self._started = time.monotonic()

    # -- one request ------------------------------------------------------------------
    def handle(self, frame: Frame) -> bytes | None:
        """The wire bytes of the reply to one request frame (None for frames that are not requests)."""
        if frame.msg_type & 0x80:
            return None  # a reply type: the host never sends these; ignore, as firmware would
        try:
            msg_type, payload = frame.msg_type, frame.payload
            if msg_type not in _REQUEST_TYPES:
                raise _Refusal(ErrorCode.UNKNOWN_TYPE, f"unknown request type 0x{msg_type:02x}")
            if msg_type == MessageType.FRAGMENT:
                fragment = decode_message(msg_type, payload)
                assert isinstance(fragment, Fragment)
                joined = self._reassembler.push(frame.seq, fragment)
                if joined is None:
                    return None  # more to come, or a fragment was lost: the host retries
                msg_type, payload = joined
                if msg_type not in _REQUEST_TYPES:
                    raise _Refusal(ErrorCode.UNKNOWN_TYPE, f"unknown request type 0x{msg_type:02x}")
            request = decode_message(msg_type, payload)
            reply = self._dispatch(request)
        except SerialMessageError as e:
            reply = ErrorReply(ErrorCode.BAD_MESSAGE, str(e))
        except _Refusal as e:
            reply = ErrorReply(e.code, e.text)
        msg_type, payload = encode_message(reply)
        frame_limit = min(self.max_payload_bytes, self.host_max_payload)
        if len(payload) > max(frame_limit, self.host_max_message):
            msg_type, payload = encode_message(ErrorReply(
                ErrorCode.INTERNAL, f"reply of {len(payload)} bytes exceeds the host's limit of {self.host_max_message}"
            ))
        return b"".join(encode_frame(t, frame.seq, p) for t, p in split_payload(msg_type, payload, frame_limit))

    def _dispatch(self, request: Message) -> Message:
        if isinstance(request, Hello):
            if request.protocol_version != PROTOCOL_VERSION:
                raise _Refusal(ErrorCode.VERSION, f"firmware speaks protocol {PROTOCOL_VERSION}")
            self.host_max_payload = request.max_payload_bytes
            self.host_max_message = request.max_message_bytes
            return Capabilities(PROTOCOL_VERSION, len(self.slots), self.max_payload_bytes, self.arena_bytes,
                                self.max_model_bytes, self.max_message_bytes, self.board, FIRMWARE)
        if isinstance(request, LoadBegin):
            self._slot(request.slot)
            if request.total_bytes > self.max_model_bytes:
                raise _Refusal(ErrorCode.MODEL_TOO_LARGE, f"model of {request.total_bytes} bytes exceeds "
                               f"{self.max_model_bytes} bytes of model memory")
            # A new load replaces whatever the slot held.
            self.slots[request.slot] = _Slot(request.total_bytes, request.crc32, bytearray(), True)
            return LoadAck(request.slot, 0)
        if isinstance(request, LoadChunk):
            slot = self._slot(request.slot)
            if not slot.loading:
                raise _Refusal(ErrorCode.LOAD_ORDER, "LOAD_CHUNK without LOAD_BEGIN")
            have = len(slot.data)
            end = request.offset + len(request.data)
            if request.offset == have and end <= slot.expected_bytes:
                slot.data += request.data
            elif not end <= have:  # a repeated chunk (a retry) is acknowledged, anything else is out of order
                raise _Refusal(ErrorCode.LOAD_ORDER, f"chunk at offset {request.offset}, expected {have}")
            return LoadAck(request.slot, len(slot.data))
        if isinstance(request, LoadEnd):
            return self._finish_load(request.slot)
        if isinstance(request, Invoke):
            return self._invoke(request)
        if isinstance(request, GetTelemetry):
            return self.telemetry()
        raise _Refusal(ErrorCode.UNKNOWN_TYPE, f"{type(request).__name__} is not a request")

    def _slot(self, index: int) -> _Slot:
        if index >= len(self.slots):
            raise _Refusal(ErrorCode.BAD_SLOT, f"slot {index} does not exist; this board has {len(self.slots)}")
        return self.slots[index]

    def _finish_load(self, index: int) -> ModelInfo:
        slot = self._slot(index)
        if not slot.loading:
            if slot.info is not None:
                return slot.info  # a retried LOAD_END after success
            raise _Refusal(ErrorCode.LOAD_ORDER, "LOAD_END without LOAD_BEGIN")
        if len(slot.data) != slot.expected_bytes:
            raise _Refusal(ErrorCode.LOAD_ORDER, f"received {len(slot.data)} of {slot.expected_bytes} bytes")
        if zlib.crc32(slot.data) != slot.crc32:
            self.slots[index] = _Slot()
            raise _Refusal(ErrorCode.CHECKSUM, "model CRC-32 does not match; send it again")
        model_bytes = bytes(slot.data)
        slot.loading = False
        slot.data = bytearray()
        try:
            # Probe with a generous arena, then enforce the board's limit on what was measured:
            # TFLM itself crashes instead of failing cleanly when an arena is far too small.
            model = MicroModel(model_bytes, arena_bytes=max(self.arena_bytes, 10 * len(model_bytes)),
                               label=f"slot {index}")
        except MicroModelError as e:
            code = ErrorCode.UNSUPPORTED_OP if "operators" in str(e) else ErrorCode.INTERNAL
            raise _Refusal(code, str(e)) from e
        if model.arena_used_bytes > self.arena_bytes:
            raise _Refusal(ErrorCode.ARENA_TOO_SMALL,
                           f"arena too small: model needs {model.arena_used_bytes} bytes, board has {self.arena_bytes}")
        slot.model = model
        slot.info = ModelInfo(index, model.arena_used_bytes, model.inputs, model.outputs)
        return slot.info

    def _invoke(self, request: Invoke) -> Result:
        slot = self._slot(request.slot)
        if slot.model is None:
            raise _Refusal(ErrorCode.NO_MODEL, f"slot {request.slot} holds no model; load one first")
        model = slot.model
        by_index = {t.index: t for t in request.tensors}
        if sorted(by_index) != list(range(len(model.inputs))):
            raise _Refusal(ErrorCode.TENSOR_MISMATCH, f"the model takes inputs 0..{len(model.inputs) - 1}")
        arrays = []
        for i, desc in enumerate(model.inputs):
            got = by_index[i].desc
            if (got.dtype, got.shape) != (desc.dtype, desc.shape):
                raise _Refusal(ErrorCode.TENSOR_MISMATCH,
                               f"input {i} must be {desc.dtype}{list(desc.shape)}, got {got.dtype}{list(got.shape)}")
            arrays.append(by_index[i].to_array())
        start = time.monotonic()
        try:
            outputs, latency_us = model.invoke(arrays)
        except MicroModelError as e:
            raise _Refusal(ErrorCode.INVOKE_FAILED, str(e)) from e
        if self.cpu_slowdown > 1.0:
            latency_us = int(latency_us * self.cpu_slowdown)
            time.sleep(max(0.0, start + latency_us / 1e6 - time.monotonic()))
        self.power.record_busy(start, time.monotonic())
        self.invokes += 1
        tensors = tuple(
            Tensor.from_array(i, np.asarray(out), desc.scale, desc.zero_point)
            for i, (out, desc) in enumerate(zip(outputs, model.outputs, strict=True))
        )
        return Result(latency_us, tensors)

    def telemetry(self) -> Telemetry:
        now = time.monotonic()
        power, voltage, temperature = self.power.reading(now)
        used = sum(s.info.arena_used_bytes for s in self.slots if s.info is not None)
        loaded = sum(len(s.data) + (s.model.model_bytes if s.model else 0) for s in self.slots)
        free = max(0, self.arena_bytes + self.max_model_bytes - used - loaded)
        return Telemetry(int((now - self._started) * 1000) & 0xFFFFFFFF, power, voltage, temperature, free,
                         self.invokes & 0xFFFFFFFF)


class _Refusal(Exception):
    """A request the firmware answers with an ERROR reply."""

    def __init__(self, code: ErrorCode, text: str) -> None:
        super().__init__(text)
        self.code = int(code)
        self.text = text


# -- byte links ----------------------------------------------------------------------------


class ByteLink(Protocol):
    """The two calls ``serve`` needs from a link."""

    def read(self, timeout_s: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...


class FdLink:
    """A file descriptor (a pty master) as a byte link."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 4096)
        except OSError:  # EIO while no process has the other end open
            time.sleep(timeout_s)
            return b""

    def write(self, data: bytes, *, give_up_s: float = 2.0) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + give_up_s
        while view and time.monotonic() < deadline:
            # Nobody draining the other end for a while: drop the rest, as a UART would.
            _, ready, _ = select.select([], [self.fd], [], 0.1)
            if ready:
                view = view[os.write(self.fd, view) :]


class SocketLink:
    """A connected TCP socket as a byte link (the MCU end of a ``socket://`` URL)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            return b""
        data = self.sock.recv(4096)
        if not data:
            raise ConnectionResetError("the host closed the connection")
        return data

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


def open_pty() -> tuple[int, int, str]:
    """A raw pty pair: (master fd for the simulator, slave fd kept open, slave path for the host).

    Holding the slave fd open keeps the master readable while the host closes and reopens
    the path, just as a USB-serial MCU stays powered while the gateway reconnects.
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def serve(mcu: SimulatedMcu, link: ByteLink, stop: threading.Event, *, baud: int | None = None,
          poll_s: float = 0.05) -> None:
    """Answer requests on ``link`` until ``stop`` is set or the link closes; ``baud`` models its speed."""
    decoder = FrameDecoder(max_payload_bytes=mcu.max_payload_bytes)
    byte_time_s = 10.0 / baud if baud else 0.0
    while not stop.is_set():
        try:
            data = link.read(poll_s)
        except ConnectionError:
            log.info("the host closed the link")
            return
        if not data:
            continue
        if byte_time_s:
            time.sleep(len(data) * byte_time_s)  # the bytes took this long to arrive
        for frame in decoder.feed(data):
            reply = mcu.handle(frame)
            if reply is None:
                continue
            if byte_time_s:
                time.sleep(len(reply) * byte_time_s)
            link.write(reply)
    log.debug("simulator stopped; decoder stats %s", decoder.stats)
