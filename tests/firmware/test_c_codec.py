"""The C codec (tflite_edge/firmware_bridge/c) against the Python codec, on the same vectors.

The test compiles the C files and a small driver with the host C compiler, feeds both
sides the same byte streams and compares every decoded message (in a canonical text form),
every re-encoded frame (byte for byte) and the decoders' frame and drop counts.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

import tflite_edge.firmware_bridge as fb
from tflite_edge.errors import SerialMessageError
from tflite_edge.firmware_bridge.fragments import Reassembler, split_payload
from tflite_edge.firmware_bridge.framing import FrameDecoder, encode_frame
from tflite_edge.firmware_bridge.messages import Capabilities, ErrorReply, Fragment, decode_message, encode_message

from .vectors import canonical, example_messages

C_DIR = Path(fb.__file__).parent / "c"
DRIVER = Path(__file__).parent / "codec_driver.c"
MAX_PAYLOAD = 1024
JOIN_BYTES = 4096  # the C driver's reassembly buffer


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C codec cannot be built here")
    exe = tmp_path_factory.mktemp("c") / "codec_driver"
    command = [compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g",
               f"-DTFE_MAX_PAYLOAD={MAX_PAYLOAD}", f"-I{C_DIR}", str(C_DIR / "tfe_bridge.c"), str(DRIVER),
               "-o", str(exe)]
    # With AddressSanitizer and UBSan where the compiler has them: any out-of-bounds access or
    # overflow on the hostile inputs below aborts the driver and fails the test.
    sanitized = subprocess.run([*command, "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                               capture_output=True, text=True)
    if sanitized.returncode != 0:
        subprocess.run(command, check=True, capture_output=True, text=True)
    return exe


def run_c(driver: Path, streams: list[bytes]) -> list[list[str]]:
    """Each stream's output lines from the C driver."""
    out = subprocess.run([str(driver)], input="".join(s.hex() + "\n" for s in streams),
                         capture_output=True, text=True, check=True, timeout=60).stdout
    results: list[list[str]] = [[]]
    for line in out.splitlines():
        results[-1].append(line)
        if line.startswith("END"):
            results.append([])
    return results[:-1]


def run_python(stream: bytes) -> list[str]:
    """What the C driver should print for ``stream``, computed by the Python codec."""
    decoder = FrameDecoder(max_payload_bytes=MAX_PAYLOAD)
    joiner = Reassembler(JOIN_BYTES)
    lines = []
    for frame in decoder.feed(stream):
        lines.append(f"FRAME {frame.msg_type} {frame.seq}")
        try:
            message = decode_message(frame.msg_type, frame.payload)
        except SerialMessageError:
            lines.append("MSGERR")
            continue
        lines.append("MSG " + canonical(message))
        lines.append("WIRE " + encode_frame(*_typed(encode_message(message), frame.seq)).hex())
        if isinstance(message, Fragment):
            try:
                joined = joiner.push(frame.seq, message)
                if joined is not None:
                    lines.append("JOINED " + canonical(decode_message(*joined)))
            except SerialMessageError:
                lines.append("JOINERR")
    lines.append(f"END {decoder.stats.frames} {decoder.stats.dropped}")
    return lines


def _typed(pair: tuple[int, bytes], seq: int) -> tuple[int, int, bytes]:
    return pair[0], seq, pair[1]


def normalise(lines: list[str]) -> list[str]:
    # The C driver adds its status code to MSGERR; the Python side raises one error type.
    return ["MSGERR" if line.startswith("MSGERR") else line for line in lines]


def test_c_and_python_agree_on_every_message(driver: Path) -> None:
    streams = []
    for seq, message in enumerate(example_messages()):
        wire = encode_frame(*_typed(encode_message(message), seq * 257))
        streams.append(wire)
    for stream, c_lines in zip(streams, run_c(driver, streams), strict=True):
        assert normalise(c_lines) == run_python(stream)
        # The C side re-encodes the frame to exactly the bytes Python sent.
        assert c_lines[2] == "WIRE " + stream.hex()


def test_c_and_python_agree_on_hostile_payloads(driver: Path) -> None:
    payloads = [
        bytes([0, 1, 0, 9, 2]) + (1000).to_bytes(2, "little") * 2 + bytes(8),  # 1 MB claimed
        bytes([0, 17]),  # too many tensors
        bytes([0, 1, 0, 9, 7]),  # rank 7
        bytes([0, 1, 0, 42, 1]),  # unknown dtype
        bytes([0, 1, 0, 9, 1, 0, 0]) + bytes(8),  # zero dimension
        bytes([0, 1, 0, 9, 1, 1, 0]) + bytes.fromhex("0000c07f") + bytes(4) + b"x",  # NaN scale
        bytes([0, 1, 0, 9, 1, 1, 0]) + bytes(8) + b"xy",  # trailing byte
    ]
    streams = [encode_frame(0x05, 1, p) for p in payloads] + [encode_frame(0x42, 1, b"")]
    for stream, c_lines in zip(streams, run_c(driver, streams), strict=True):
        assert normalise(c_lines) == run_python(stream) and "MSGERR" in normalise(c_lines)


def test_c_and_python_agree_on_mutated_payloads(driver: Path) -> None:
    # Intact frames around damaged payloads: the message decoders themselves are compared.
    rng = random.Random(7)
    # CAPABILITIES and ERROR carry text, which Python decodes leniently and C keeps as bytes.
    examples = [m for m in example_messages() if not isinstance(m, (Capabilities, ErrorReply))]
    streams = []
    for _ in range(400):
        msg_type, payload = encode_message(rng.choice(examples))
        data = bytearray(payload)
        kind = rng.random()
        if kind < 0.3 and data:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.5:
            data = data[: rng.randint(0, len(data))]
        elif kind < 0.6:
            data += rng.randbytes(rng.randint(1, 8))
        elif kind < 0.8:
            data = bytearray(rng.randbytes(rng.randint(0, 64)))
        else:
            msg_type = rng.choice([0x02, 0x03, 0x04, 0x05, 0x06, 0x82, 0x84, 0x85, 0x86, 0x07, 0x7F])
            data = bytearray(rng.randbytes(rng.randint(0, 96)))
        streams.append(encode_frame(msg_type, rng.randrange(0x10000), bytes(data)))
    outcomes = set()
    for stream, c_lines in zip(streams, run_c(driver, streams), strict=True):
        assert normalise(c_lines) == run_python(stream)
        outcomes.add(normalise(c_lines)[1].split()[0])
    assert {"MSG", "MSGERR"} <= outcomes  # both accepted and rejected payloads were exercised


def test_c_and_python_agree_on_fragmented_messages(driver: Path) -> None:
    rng = random.Random(8)
    big = [m for m in example_messages() if len(encode_message(m)[1]) > 40]
    streams = []
    for _ in range(120):
        message = rng.choice(big)
        msg_type, payload = encode_message(message)
        limit = rng.randint(6, 64)
        seq = rng.randrange(0x10000)
        frames = [encode_frame(t, seq, p) for t, p in split_payload(msg_type, payload, limit)]
        kind = rng.random()
        if kind < 0.2 and len(frames) > 1:
            del frames[rng.randrange(1, len(frames))]  # a lost fragment
        elif kind < 0.3:
            frames = frames + frames  # the retry after a timeout
        elif kind < 0.4:
            frames = [encode_frame(t, seq, p) for t, p in split_payload(msg_type, payload + bytes(5000), limit)]
        streams.append(b"".join(frames))
    joined = 0
    for stream, c_lines in zip(streams, run_c(driver, streams), strict=True):
        assert normalise(c_lines) == run_python(stream)
        joined += sum(line.startswith("JOINED") for line in c_lines)
    assert joined > 60


def test_c_and_python_agree_on_damaged_streams(driver: Path) -> None:
    rng = random.Random(6)
    frames = [encode_frame(*_typed(encode_message(m), i)) for i, m in enumerate(example_messages())]
    streams = []
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 6)):
            frame = bytearray(rng.choice(frames))
            kind = rng.random()
            if kind < 0.2:
                frame = frame[: rng.randint(1, len(frame))]  # torn
            elif kind < 0.4:
                frame[rng.randrange(len(frame))] ^= rng.randint(1, 255)  # corrupted byte
            elif kind < 0.5:
                frame = bytearray(rng.randbytes(rng.randint(0, 3000)))  # noise, sometimes overlong
            parts.append(bytes(frame))
        streams.append(b"".join(parts))
    for stream, c_lines in zip(streams, run_c(driver, streams), strict=True):
        assert normalise(c_lines) == run_python(stream)


@pytest.mark.parametrize(
    "compiler, flags",
    [
        ("cc", ["-std=c99", "-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wcast-qual"]),
        ("c++", ["-std=c++11", "-x", "c++"]),  # Arduino and most TFLM firmware build it as C++
    ],
)
def test_c_codec_builds_strictly(compiler: str, flags: list[str], tmp_path: Path) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} on PATH")
    done = subprocess.run([compiler, *flags, "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{C_DIR}", "-c",
                           str(C_DIR / "tfe_bridge.c"), "-o", str(tmp_path / "tfe_bridge.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
