"""Fuzz targets shared by the fixed-seed tests (tests/hardening) and bench/bench_fuzz.py.

Each target is a parser that reads untrusted bytes, a hypothesis strategy that produces
mostly *almost valid* inputs (valid messages with a few mutations, which reach deep into
the parser) mixed with raw noise, and the typed error the parser may raise. Anything else
that escapes, including ``RecursionError``, ``OverflowError`` or a numpy error, is a crash;
a case that uses more than ``HANG_S`` of CPU time is a hang (CPU time, not wall time, so
that a busy machine descheduling the fuzzer is not mistaken for a parser that spins).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import signal
import struct
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tflite_edge.bundle import Bundle
from tflite_edge.bundle.manifest import Manifest
from tflite_edge.bundle.store import check_chain
from tflite_edge.errors import (
    BundleError,
    PolicyError,
    SerialFrameError,
    SerialMessageError,
    SignatureError,
    TelemetrySchemaError,
    WireFormatError,
)
from tflite_edge.firmware_bridge import framing, messages
from tflite_edge.telemetry import schema
from tflite_edge.transport import wire

__all__ = ["HANG_S", "Outcome", "Target", "make_targets"]

HANG_S = 1.0
STUCK_S = 10  # wall-clock watchdog: a case still running after this is stopped and counted as a hang


class _Stuck(BaseException):
    """Raised by the watchdog inside a case that never returns (BaseException: no parser catches it)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Stuck()


@dataclass
class Outcome:
    """What a target did with its cases."""

    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: list[str] = field(default_factory=list)
    hangs: int = 0
    hang_inputs: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest_cpu_s: float = 0.0


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    run: Callable[[Any], bool | None]  # False: a clean refusal that is not an exception (an error reply)
    allowed: tuple[type[BaseException], ...]
    outcome: Outcome = field(default_factory=Outcome)

    def check(self, case: Any) -> str | None:
        """Run one case; return a crash description, or None when it was accepted or rejected cleanly."""
        watchdog = threading.current_thread() is threading.main_thread()
        if watchdog:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.alarm(STUCK_S)
        start = time.perf_counter()
        start_cpu = time.thread_time()
        crash = None
        try:
            if self.run(case) is False:
                self.outcome.rejected += 1
            else:
                self.outcome.accepted += 1
        except self.allowed:
            self.outcome.rejected += 1
        except _Stuck:
            crash = f"hang: still running after {STUCK_S} s on input {_short(case)}"
            self.outcome.hangs += 1
            self.outcome.hang_inputs.append(crash)
            self.outcome.cases += 1
            return crash
        except Exception as e:  # anything else is exactly what the fuzzer looks for
            crash = f"{type(e).__name__}: {str(e)[:200]} on input {_short(case)}"
            self.outcome.crashes.append(crash)
        finally:
            if watchdog:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)
        took = time.perf_counter() - start
        cpu = time.thread_time() - start_cpu
        self.outcome.cases += 1
        self.outcome.slowest_s = max(self.outcome.slowest_s, took)
        self.outcome.slowest_cpu_s = max(self.outcome.slowest_cpu_s, cpu)
        if cpu > HANG_S:
            self.outcome.hangs += 1
            self.outcome.hang_inputs.append(f"{took:.2f} s on input {_short(case)}")
            crash = crash or f"hang: {took:.2f} s on input {_short(case)}"
        return crash


def _short(case: Any) -> str:
    text = repr(case)
    return text if len(text) <= 300 else text[:300] + f"... ({len(text)} chars)"


# -- generic mutators --------------------------------------------------------------------

def _byte_mutations(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid bytes with flips, truncation, insertion or an overwritten little-endian field."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.integers(0, 4))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if op == 0 and data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:
                del data[at:]
            elif op == 2:
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif op == 3 and len(data) >= at + 4:
                data[at:at + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 2**31 - 1, 2**32 - 1])))
            elif data:
                data[at] = draw(st.integers(0, 255))
        return bytes(data)

    return mutate()


_JSON_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.integers(10**300, 10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    _JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _json_mutations(valid_docs: list[Any]) -> st.SearchStrategy[str | bytes]:
    """A valid document with values replaced, keys deleted or added, then serialised."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str | bytes:
        doc = copy.deepcopy(draw(st.sampled_from(valid_docs)))
        for _ in range(draw(st.integers(1, 3))):
            paths = _paths(doc)
            path = paths[draw(st.integers(0, len(paths) - 1))]
            if not path:
                continue
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.integers(0, 2))
            if op == 0:
                parent[path[-1]] = draw(JSON_VALUES)
            elif op == 1:
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
            else:
                parent.append(draw(JSON_VALUES))
        text = json.dumps(doc, allow_nan=True)
        return text.encode() if draw(st.booleans()) else text

    return mutate()


def _deep_nesting() -> st.SearchStrategy[str]:
    return st.integers(500, 100_000).map(lambda n: "[" * n + "]" * n) | st.integers(500, 50_000).map(
        lambda n: '{"a":' * n + "1" + "}" * n)


def _json_inputs(valid_docs: list[Any]) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        _json_mutations(valid_docs),
        _byte_mutations(st.sampled_from([json.dumps(d).encode() for d in valid_docs])),
        st.binary(max_size=256),
        JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
        _deep_nesting(),
    )


# -- the targets -------------------------------------------------------------------------

def _valid_frames(bundle: Bundle) -> st.SearchStrategy[bytes]:
    """Frames the edge would accept for ``bundle``: every segment input, any codec."""
    manifest = bundle.manifest
    specs = [(s.index, t) for s in manifest.segments for t in s.inputs]

    @st.composite
    def frame(draw: st.DrawFn) -> bytes:
        segment, spec = draw(st.sampled_from(specs))
        seed = draw(st.integers(0, 2**32 - 1))
        values = np.random.default_rng(seed).integers(-128, 128, size=spec.shape)
        codec = draw(st.sampled_from(wire.available_codecs()))
        return wire.encode_tensor(values.astype(spec.dtype), spec, bundle_id=manifest.bundle_id, segment=segment,
                                  codec=codec)

    return frame()


def _frame_inputs(bundle: Bundle) -> st.SearchStrategy[bytes]:
    return st.one_of(_byte_mutations(_valid_frames(bundle)), st.binary(max_size=256),
                     st.binary(max_size=64).map(lambda b: wire.MAGIC + b))


def wire_target(bundle: Bundle) -> Target:
    manifest = bundle.manifest

    def run(data: bytes) -> None:
        wire.decode_frame(data)
        wire.decode_activation(data, manifest)

    return Target("activation decoder (transport/wire.py)", _frame_inputs(bundle), run, (WireFormatError,))


_HEADER_KEYS = ("exit", "thr", "thr_kind")


def handler_target(bundle: Bundle) -> Target:
    from tflite_edge.edge.handler import EdgeHandler
    from tflite_edge.transport.protocol import ErrorCode

    handler = EdgeHandler([bundle])
    exits = list(bundle.manifest.exit_names)
    text = st.text(max_size=24)
    value = st.one_of(
        text, st.sampled_from(exits), st.floats(allow_nan=True).map(repr), st.sampled_from(["top1", "entropy"]),
        st.lists(st.tuples(st.sampled_from([*exits, "x", ""]), st.floats(allow_nan=True)), max_size=4).map(
            lambda items: ";".join(f"{k}={v!r}" for k, v in items)),
    )
    properties = st.dictionaries(st.sampled_from(_HEADER_KEYS) | text, value, max_size=8)
    valid_properties = st.fixed_dictionaries(
        {"exit": st.sampled_from(exits)}, optional={"thr": value, "thr_kind": value},
    )
    correlation = st.none() | st.binary(max_size=40) | text.map(str.encode)
    noisy = st.tuples(
        st.sampled_from([bundle.bundle_id]) | text, _frame_inputs(bundle), valid_properties | properties,
        correlation,
    )
    # Requests that should be served, so the fuzzer also drives the interpreters and the reply encoder.
    servable = st.tuples(
        st.just(bundle.bundle_id), _valid_frames(bundle),
        st.fixed_dictionaries({"exit": st.just(exits[-1])}, optional={"thr": value, "thr_kind": value}),
        st.text(min_size=1, max_size=16).map(str.encode),
    )
    cases = noisy | servable
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()} | {
        c.code for c in (wire.FrameHeaderError, wire.FrameLimitError, wire.FrameMismatchError,
                         wire.FrameTruncatedError, wire.CompressionError)} | {"bad_frame"}

    def run(case: tuple[str, bytes, dict[str, str], bytes | None]) -> bool:
        reply = handler.handle(*case)  # must never raise: errors become error replies
        if not reply.header.ok and reply.header.code not in codes:
            raise AssertionError(f"error reply with undocumented code {reply.header.code!r}")
        return reply.header.ok

    return Target("MQTT request handler (edge/handler.py)", cases, run, ())


def manifest_target(bundle: Bundle) -> Target:
    def run(text: str | bytes) -> None:
        check_chain(Manifest.from_json(text))

    return Target("manifest loader (bundle/manifest.py)", _json_inputs([bundle.manifest.to_dict()]), run,
                  (BundleError,))


def _telemetry_docs() -> list[Any]:
    s = schema
    telemetry = s.TelemetryMessage(
        device_id="pi-01", seq=3, time_unix_s=1764160000.25, window_s=5.0,
        requests=s.RequestStats(10, 8, 1, 1, {"exit_0": 6, "exit_2": 3}, {"1": 6, "3": 3}),
        latency=s.LatencyStats(12.5, 40.0, 51.0, 4.0, 6.5, 1.25, {"0": 2.0, "1": 2.0}),
        link=s.LinkStats(9.5, 7.0, 0.4, 12.3, 75264, 0, 1, 0.1, -56.0, 54.0),
        power=s.PowerStats(3251.2, 5080.0, 640.0, "hwmon:ina219:ch1", False, 41.5),
        system=s.SystemStats(37.5, 52.0, 41.0),
    )
    status = s.StatusMessage("pi-01", "online", 1764160000.0, None, "tflite-edge 0.1.0")
    experience = s.ExperienceBatch("pi-01", 1, 1764160000.5, [s.ExperienceRecord(
        1764160000.4, {"uplink_mbps": 12.3, "power_mw": None}, {"exit": "exit_0", "partition": 1},
        0.8, 12.5, 50.0, True, 41.5, "r-1")])
    return [json.loads(s.encode(m)) for m in (telemetry, status, experience)]


def telemetry_target() -> Target:
    docs = _telemetry_docs()
    assert all(dataclasses.is_dataclass(schema.decode(json.dumps(d))) for d in docs)
    return Target("telemetry parser (telemetry/schema.py)", _json_inputs(docs), schema.decode, (TelemetrySchemaError,))


def _valid_serial_messages() -> st.SearchStrategy[tuple[int, bytes]]:
    m = messages
    desc = st.builds(m.TensorDesc, st.sampled_from(["int8", "uint8", "float32", "int32"]),
                     st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), st.floats(0, 1),
                     st.integers(-128, 127))
    tensor = st.builds(lambda i, shape: m.Tensor.from_array(i, np.zeros(shape, np.int8), 0.5, -3),
                       st.integers(0, 3), st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple))
    # Fields are drawn by their declared type, so the strategy follows the codec as it grows;
    # small non-negative ints fit every field width (u8, u16, u32).
    by_type: dict[str, st.SearchStrategy[Any]] = {
        "int": st.integers(0, 255), "str": st.text(max_size=20), "bytes": st.binary(max_size=64),
        "float": st.floats(0, 1e6, width=32), "tuple[TensorDesc, ...]": st.lists(desc, max_size=3).map(tuple),
        "tuple[Tensor, ...]": st.lists(tensor, max_size=3).map(tuple),
    }

    def build(cls: type) -> st.SearchStrategy[Any]:
        fields = {f.name: by_type[str(f.type)] for f in dataclasses.fields(cls) if str(f.type) in by_type}
        return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))

    message = st.one_of([build(cls) for cls in typing.get_args(m.Message)])
    return message.map(m.encode_message)


def serial_target() -> Target:
    valid = _valid_serial_messages()

    @st.composite
    def case(draw: st.DrawFn) -> tuple[int, bytes, bytes]:
        msg_type, payload = draw(valid)
        payload = draw(_byte_mutations(st.just(payload)) | st.just(payload))
        msg_type = draw(st.just(msg_type) | st.integers(0, 255))
        stream = framing.encode_frame(msg_type, draw(st.integers(0, 0xFFFF)), payload)
        stream = draw(_byte_mutations(st.just(stream)) | st.just(stream) | st.binary(max_size=128))
        return msg_type, payload, stream

    def run(c: tuple[int, bytes, bytes]) -> None:
        msg_type, payload, stream = c
        decoder = framing.FrameDecoder()
        frames = decoder.feed(stream) + decoder.feed(b"\x00")  # the streaming decoder never raises
        for chunk in stream.split(b"\x00"):
            if chunk:
                try:
                    framing.decode_frame(chunk)
                except SerialFrameError:
                    pass
        for frame in frames:
            messages.decode_message(frame.msg_type, frame.payload)
        messages.decode_message(msg_type, payload)

    return Target("serial codec (firmware_bridge/framing.py + messages.py)", case(), run,
                  (SerialFrameError, SerialMessageError))


def policy_message_target(bundle: Bundle) -> Target:
    """Signed policy updates (retained MQTT messages): the envelope check, then the package parser.

    Mutated envelopes must fail the signature; mutated packages (as a compromised or buggy
    signer might send) go straight to ``decode_package``. The TFLite interpreter is not fed
    fuzzed models: only signed, trusted bytes ever reach it.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tflite_edge.agents.policy_message import PolicyPackage, decode_package, encode_package
    from tflite_edge.security.signing import open_message, sign_message

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    metadata = st.fixed_dictionaries({"bundle_id": st.just(bundle.bundle_id) | st.text(max_size=16)},
                                     optional={"actions": JSON_VALUES, "features": JSON_VALUES})
    packages = st.builds(lambda v, m, t: encode_package(PolicyPackage(v, m, t)), st.integers(1, 2**63 - 1),
                         metadata.filter(lambda m: _finite_json(m)), st.binary(max_size=64))
    envelopes = packages.map(lambda body: sign_message(body, key, kind="policy"))
    cases = st.one_of(
        st.tuples(st.just("envelope"), _byte_mutations(envelopes)),
        st.tuples(st.just("envelope"), envelopes),
        st.tuples(st.just("package"), _byte_mutations(packages)),
        st.tuples(st.just("package"), st.binary(max_size=128)),
    )

    def run(case: tuple[str, bytes]) -> None:
        kind, data = case
        body = open_message(data, public, kind="policy") if kind == "envelope" else data
        decode_package(body)

    return Target("policy message (agents/policy_message.py + signing)", cases, run, (PolicyError, SignatureError))


# -- files: user arrays and bundle files ---------------------------------------------------

_NPY_DESCRS = ("<f4", "<f8", "|i1", "|u1", "<i8", "<c8", "<c16", "|O", "<U3", "|b1", "<f2", ">f4", "[('a', '<f4')]",
               "<V8", "bogus")
_SHAPE_DIMS = st.sampled_from([0, 1, 2, 3, 8, 64, 10**9, 2**31, 2**62, -1])


def _npy_header(descr: str, shape: tuple[Any, ...], fortran: bool) -> bytes:
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}".encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


@st.composite
def _npy_files(draw: st.DrawFn) -> bytes:
    """.npy bytes: real arrays (with NaN/Inf sometimes), or a header claiming any shape and dtype."""
    if draw(st.booleans()):
        import io

        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
        dtype = draw(st.sampled_from(["float32", "float64", "int8", "uint8", "complex64", "bool", "float16"]))
        values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(size=shape).astype(dtype)
        if values.size and dtype.startswith("float") and draw(st.booleans()):
            values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        buffer = io.BytesIO()
        np.save(buffer, values)
        return buffer.getvalue()
    shape = tuple(draw(st.lists(_SHAPE_DIMS, max_size=5))) if draw(st.integers(0, 9)) else draw(
        st.sampled_from([(1.5,), ("a",), None, (True,)]))
    header = _npy_header(draw(st.sampled_from(_NPY_DESCRS)), shape, draw(st.booleans()))
    return header + draw(st.binary(max_size=64))


@st.composite
def _npz_files(draw: st.DrawFn) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for key in draw(st.lists(st.sampled_from(["x", "y", "images", "x.npy"]), min_size=0, max_size=3, unique=True)):
            archive.writestr(f"{key}.npy", draw(_npy_files()))
    return buffer.getvalue()


def _array_file_cases() -> st.SearchStrategy[tuple[str, Any]]:
    """(kind, content): bytes written to a regular file, or a special file of some kind and size."""
    contents = st.one_of(_npy_files(), _npz_files(), _byte_mutations(_npy_files()), _byte_mutations(_npz_files()),
                         st.binary(max_size=128))
    specials = st.sampled_from(["fifo", "dev_zero", "directory", "missing"]).map(lambda k: (k, None))
    sparse = st.sampled_from([1 << 20, 1 << 32, 1 << 33]).map(lambda n: ("sparse", n))
    return st.one_of(contents.map(lambda data: ("bytes", data)), specials, sparse)


def _place(path: Any, kind: str, content: Any) -> None:
    """Put a file of ``kind`` at ``path`` (which does not exist)."""
    import os

    if kind == "bytes":
        path.write_bytes(content)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse":
        with open(path, "wb") as handle:
            handle.truncate(content)  # no disk space used


def _clear(path: Any) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def array_file_target() -> Target:
    """The one array loader (arrays.py): file types and sizes, .npy header shapes and dtypes, non-finite values."""
    import tempfile
    from pathlib import Path

    from tflite_edge.arrays import load_array
    from tflite_edge.errors import InputError

    path = Path(tempfile.mkdtemp(prefix="tfe-fuzz-arrays-")) / "input.npy"

    def run(case: tuple[str, Any]) -> None:
        kind, content = case
        try:
            if kind != "missing":
                _place(path, kind, content)
            load_array(path, what="input", max_bytes=1 << 24)
        finally:
            _clear(path)

    return Target("array loader (arrays.py)", _array_file_cases(), run, (InputError,))


def bundle_file_target(bundle: Bundle) -> Target:
    """Bundle directories with one file replaced (FIFO, /dev/zero, sparse GiBs, a directory, other bytes),
    loaded plainly and with signature verification."""
    import shutil
    import tempfile
    from pathlib import Path

    from tflite_edge.bundle import load_bundle
    from tflite_edge.security.signing import (
        generate_key_pair,
        load_private_key,
        load_public_key,
        sign_bundle,
        verify_bundle,
    )

    root = Path(tempfile.mkdtemp(prefix="tfe-fuzz-bundle-"))
    pristine = root / "pristine"
    shutil.copytree(bundle.path, pristine)
    generate_key_pair(root / "k.pem", root / "k.pub")
    sign_bundle(pristine, load_private_key(root / "k.pem"))
    public = load_public_key(root / "k.pub")
    names = sorted(p.name for p in pristine.iterdir())
    work = root / "work"
    replacement = st.one_of(
        st.just(("keep", None)),
        st.sampled_from(["fifo", "dev_zero", "directory", "missing"]).map(lambda k: (k, None)),
        st.sampled_from([1 << 20, 1 << 32, 5 << 30]).map(lambda n: ("sparse", n)),
        _byte_mutations(st.sampled_from([(pristine / n).read_bytes() for n in names])).map(lambda b: ("bytes", b)),
    )
    cases = st.tuples(st.sampled_from(names), replacement, st.booleans())

    def run(case: tuple[str, tuple[str, Any], bool]) -> None:
        name, (kind, content), signed = case
        shutil.copytree(pristine, work)
        try:
            if kind != "keep":
                (work / name).unlink()
                if kind != "missing":
                    _place(work / name, kind, content)
            if signed:
                verify_bundle(work, public)
            else:
                load_bundle(work)
        finally:
            shutil.rmtree(work)

    return Target("bundle files (bundle/store.py + signing)", cases, run, (BundleError, SignatureError))


def _finite_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except ValueError:
        return False


def make_targets(bundle: Bundle) -> list[Target]:
    """Every target, in report order."""
    return [wire_target(bundle), handler_target(bundle), manifest_target(bundle), telemetry_target(), serial_target(),
            policy_message_target(bundle), array_file_target(), bundle_file_target(bundle)]
