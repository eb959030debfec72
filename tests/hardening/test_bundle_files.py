"""Hostile bundle files on a real file system: each is a fast, typed error, nothing is read unbounded.

FIFOs, /dev/zero behind a symlink, a 4 GiB sparse segment, an oversized bundle.sig, a NUL
byte in a segment's file name, and manifest values out of range.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from tflite_edge.bundle import MANIFEST_NAME, Manifest, load_bundle
from tflite_edge.cli import main
from tflite_edge.errors import BundleError, ManifestError, SignatureError
from tflite_edge.security.signing import generate_key_pair, load_public_keys, verify_bundle


@pytest.fixture
def bundle_dir(digits_bundle, tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, target)
    return target


def finishes(call, timeout_s: float = 30.0) -> BaseException | None:
    """Run ``call`` in a thread; fail if it has not returned or raised within ``timeout_s``."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, f"still blocked after {timeout_s} s"
    return outcome[0]


def unblock_fifo(path: Path) -> None:
    # If the reader did block on the FIFO (the defect), give it a writer so the thread ends.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.mark.parametrize("name", ["segment_1.tflite", MANIFEST_NAME])
def test_a_fifo_in_the_bundle_is_refused_at_once(bundle_dir, name):
    (bundle_dir / name).unlink()
    os.mkfifo(bundle_dir / name)
    try:
        error = finishes(lambda: load_bundle(bundle_dir))
    finally:
        unblock_fifo(bundle_dir / name)
    assert isinstance(error, BundleError) and "FIFO" in str(error), error


def test_a_segment_symlinked_to_dev_zero_is_refused(bundle_dir):
    (bundle_dir / "segment_0.tflite").unlink()
    (bundle_dir / "segment_0.tflite").symlink_to("/dev/zero")
    error = finishes(lambda: load_bundle(bundle_dir))
    assert isinstance(error, BundleError) and "character device" in str(error), error


def test_a_4_gib_sparse_segment_is_refused_by_its_size_before_reading(bundle_dir):
    path = bundle_dir / "segment_2.tflite"
    with open(path, "r+b") as handle:
        handle.truncate(4 << 30)  # sparse: no disk space used
    error = finishes(lambda: load_bundle(bundle_dir))
    # The size check names both sizes; a checksum error would mean the 4 GiB were read.
    assert isinstance(error, BundleError) and "4,294,967,296 bytes" in str(error), error


def test_an_oversized_signature_file_is_refused_unread(bundle_dir, tmp_path):
    generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub")
    with open(bundle_dir / "bundle.sig", "wb") as handle:
        handle.truncate(1 << 30)
    error = finishes(lambda: verify_bundle(bundle_dir, load_public_keys([tmp_path / "k.pub"])))
    assert isinstance(error, SignatureError) and "limit" in str(error), error
    (bundle_dir / "bundle.sig").unlink()
    os.mkfifo(bundle_dir / "bundle.sig")
    try:
        error = finishes(lambda: verify_bundle(bundle_dir, load_public_keys([tmp_path / "k.pub"])))
    finally:
        unblock_fifo(bundle_dir / "bundle.sig")
    assert isinstance(error, SignatureError) and "FIFO" in str(error), error


def test_a_directory_in_place_of_a_segment(bundle_dir):
    (bundle_dir / "segment_1.tflite").unlink()
    (bundle_dir / "segment_1.tflite").mkdir()
    with pytest.raises(BundleError, match="directory"):
        load_bundle(bundle_dir)


def test_cli_names_the_fifo_in_one_line(bundle_dir, capsys):
    (bundle_dir / "segment_1.tflite").unlink()
    os.mkfifo(bundle_dir / "segment_1.tflite")
    try:
        code = main(["inspect", str(bundle_dir)])
    finally:
        unblock_fifo(bundle_dir / "segment_1.tflite")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "FIFO" in err, err


# -- manifest values -----------------------------------------------------------------------------

def _doc(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / MANIFEST_NAME).read_text())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["segments"][0].__setitem__("file", "seg\x00ment_0.tflite"), "plain file name"),
        (lambda d: d["segments"][0].__setitem__("file", ""), "plain file name"),
        (lambda d: d["segments"][1].__setitem__("file", d["segments"][0]["file"]), "used twice"),
        (lambda d: d["segments"][0]["inputs"][0].__setitem__("scale", -0.5), "scale.*positive"),
        (lambda d: d["segments"][0]["inputs"][0].__setitem__("scale", 0.0), "scale.*positive"),
        (lambda d: d["exits"][0].__setitem__("num_classes", -1), "num_classes"),
        (lambda d: d["exits"][0].__setitem__("num_classes", 0), "num_classes"),
        (lambda d: d["exits"][0].__setitem__("accuracy", 7.5), "accuracy"),
        (lambda d: d["segments"][0].__setitem__("size_bytes", -5), "size_bytes"),
        (lambda d: d["segments"][0].__setitem__("size_bytes", 1 << 40), "size_bytes"),
        (lambda d: d["cuts"][0].__setitem__("activation_bytes", -1), "activation_bytes"),
        (lambda d: d["input"].__setitem__("shape", [1, 1 << 40, 1, 1]), "exceeds"),
        (lambda d: d["input"].__setitem__("shape", [1] * 9), "rank"),
        (lambda d: d["segments"][0]["inputs"][0].__setitem__("zero_point", 1 << 40), "zero_point"),
        (lambda d: d.__setitem__("bundle_version", -1), "bundle_version"),
    ],
)
def test_manifest_values_out_of_range_are_refused(bundle_dir, mutate, message):
    doc = _doc(bundle_dir)
    mutate(doc)
    doc.pop("bundle_id", None)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(doc)
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=message):
        load_bundle(bundle_dir)


def test_nul_byte_in_a_segment_name_is_one_cli_line(bundle_dir, capsys):
    doc = _doc(bundle_dir)
    doc["segments"][2]["file"] = "segment_2\x00.tflite"
    doc.pop("bundle_id")
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(doc))
    code = main(["inspect", str(bundle_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "plain file name" in err, err


def test_inspect_never_prints_an_absurd_byte_count(bundle_dir, capsys):
    doc = _doc(bundle_dir)
    doc["segments"][0]["outputs"][0]["shape"] = [1, 1 << 40]
    doc["segments"][0]["outputs"][0].pop("bytes")
    doc.pop("bundle_id")
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(doc))
    code = main(["inspect", str(bundle_dir)])
    out, err = capsys.readouterr()
    assert code == 2 and not out and "exceeds" in err

