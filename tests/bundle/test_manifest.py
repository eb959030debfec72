import copy
import json

import pytest

from tflite_edge.bundle import CutSpec, ExitSpec, Manifest, SegmentSpec, TensorSpec, check_chain
from tflite_edge.errors import ChainError, ManifestError, SchemaVersionError

SHA = "ab" * 32


def q(name, shape, scale=0.05, zp=-128):
    return TensorSpec(name, shape, "int8", scale, zp)


def make_manifest() -> Manifest:
    image = q("image", (1, 8, 8, 1), 1 / 255)
    cut = q("block_1_out", (1, 4, 4, 16))
    return Manifest(
        model_name="digits",
        quantization="int8",
        input=TensorSpec("image", (1, 8, 8, 1), "float32"),
        segments=(
            SegmentSpec(0, "segment_0.tflite", SHA, 1000, (image,), (q("exit_1", (1, 10)), cut)),
            SegmentSpec(1, "segment_1.tflite", SHA, 2000, (cut,), (q("final", (1, 10)),)),
        ),
        exits=(ExitSpec("exit_1", 0, 10, 0.9, 0.91), ExitSpec("final", 1, 10)),
        cuts=(CutSpec("block_1_out", 0, 256),),
        converter_version="0.1.0",
        tensorflow_version="2.21.0",
    )


def test_round_trip_is_lossless():
    manifest = make_manifest()
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.bundle_id == manifest.bundle_id and len(again.bundle_id) == 16
    assert json.loads(manifest.to_json())["segments"][0]["outputs"][1]["bytes"] == 256


def test_bundle_id_changes_with_a_segment_checksum():
    manifest = make_manifest()
    doc = manifest.to_dict()
    doc["segments"][1]["sha256"] = "cd" * 32
    del doc["bundle_id"]
    assert Manifest.from_dict(doc).bundle_id != manifest.bundle_id


def test_edited_bundle_id_is_rejected():
    doc = make_manifest().to_dict()
    doc["bundle_id"] = "0" * 16
    with pytest.raises(ManifestError, match="bundle_id"):
        Manifest.from_dict(doc)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("segments"), "missing field.*segments"),
        (lambda d: d.update(colour="blue"), "unknown field.*colour"),
        (lambda d: d["segments"][0].update(extra=1), r"segments\[0\]: unknown field.*extra"),
        (lambda d: d["segments"][0]["outputs"][0].pop("dtype"), r"outputs\[0\]: missing field.*dtype"),
        (lambda d: d["segments"][0].update(size_bytes="big"), "size_bytes: expected int"),
        (lambda d: d["segments"][0].update(size_bytes=True), "size_bytes: expected int, got a boolean"),
        (lambda d: d["segments"][0].update(sha256="xyz"), "sha256"),
        (lambda d: d["segments"][0].update(file="../etc/passwd"), "plain file name"),
        (lambda d: d["input"].update(shape=[1, -8]), "positive"),
        (lambda d: d["input"].update(dtype="complex128"), "unsupported dtype"),
        (lambda d: d["input"].update(bytes=7), "does not match"),
        (lambda d: d.update(quantization="int4"), "quantization"),
        (lambda d: d["exits"][0].update(segment=5), "not a segment"),
        (lambda d: d["exits"].append(d["exits"][0]), "duplicate exit"),
        (lambda d: d.update(cuts=[]), "need 1 cuts"),
        (lambda d: d.update(exits=[]), "at least one exit"),
        (lambda d: d["exits"][0].update(accuracy=float("nan")), "finite"),
    ],
)
def test_malformed_manifests_name_the_field(mutate, message):
    doc = copy.deepcopy(make_manifest().to_dict())
    doc.pop("bundle_id")
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(doc)


def test_newer_schema_asks_for_an_upgrade():
    doc = make_manifest().to_dict()
    doc["schema_version"] = 99
    doc["something_new"] = {}
    with pytest.raises(SchemaVersionError, match="upgrade tflite-edge"):
        Manifest.from_dict(doc)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"text"', b"\xff\xfe"])
def test_not_json_or_not_an_object(text):
    with pytest.raises(ManifestError):
        Manifest.from_json(text)


def test_chain_errors_name_segment_and_tensor():
    doc = make_manifest().to_dict()
    doc.pop("bundle_id")
    doc["segments"][1]["inputs"][0]["name"] = "block_9_out"
    doc["cuts"][0]["layer"] = "block_9_out"
    with pytest.raises(ChainError, match="segment 1 reads tensor 'block_9_out'"):
        check_chain(Manifest.from_dict(doc))


def test_chain_errors_on_a_different_scale():
    doc = make_manifest().to_dict()
    doc.pop("bundle_id")
    doc["segments"][1]["inputs"][0]["scale"] = 0.0557
    with pytest.raises(ChainError, match="segment 1 reads tensor 'block_1_out'.*scale=0.0557.*segment 0 produces"):
        check_chain(Manifest.from_dict(doc))
