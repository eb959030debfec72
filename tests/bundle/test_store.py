import json

import pytest

from tflite_edge.bundle import MANIFEST_NAME, load_bundle, write_bundle
from tflite_edge.errors import BundleError, ChecksumError, ManifestError, SchemaVersionError


def copy_bundle(bundle, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for f in bundle.path.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_loads_the_converted_bundle(digits_bundle):
    again = load_bundle(digits_bundle.path)
    assert again.manifest == digits_bundle.manifest
    assert again.manifest.num_segments == 3


def test_tampered_segment_is_detected(digits_bundle, tmp_path):
    path = copy_bundle(digits_bundle, tmp_path)
    data = bytearray((path / "segment_1.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "segment_1.tflite").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"segment 1 \(segment_1.tflite\)"):
        load_bundle(path)


def test_missing_segment_file(digits_bundle, tmp_path):
    path = copy_bundle(digits_bundle, tmp_path)
    (path / "segment_2.tflite").unlink()
    with pytest.raises(BundleError, match="segment 2.*missing"):
        load_bundle(path)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path)


def test_newer_schema_on_disk(digits_bundle, tmp_path):
    path = copy_bundle(digits_bundle, tmp_path)
    doc = json.loads((path / MANIFEST_NAME).read_text())
    doc["schema_version"] = 2
    (path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(SchemaVersionError):
        load_bundle(path)


def test_write_is_atomic_and_refuses_to_overwrite(digits_bundle, tmp_path):
    files = {s.file: digits_bundle.read_segment(s.index) for s in digits_bundle.manifest.segments}
    files.update({f.file: digits_bundle.read_fused(f.start, f.stop) for f in digits_bundle.manifest.fused})
    target = tmp_path / "out"
    write_bundle(target, digits_bundle.manifest, files)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(target, digits_bundle.manifest, files)
    broken = dict(files)
    broken.pop("segment_0.tflite")
    with pytest.raises(ManifestError):
        write_bundle(tmp_path / "other", digits_bundle.manifest, broken)
    assert not (tmp_path / "other").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind
    assert load_bundle(write_bundle(target, digits_bundle.manifest, files, overwrite=True).path)
