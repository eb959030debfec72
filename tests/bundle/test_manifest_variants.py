"""Optional manifest parts: compiled segment variants and the runtime that measured accuracy."""

import dataclasses
import json

import pytest

from tflite_edge.bundle import Manifest, MeasuredOn, SegmentVariant
from tflite_edge.errors import ManifestError

from .test_manifest import make_manifest

VARIANT = SegmentVariant("edgetpu", "segment_0_edgetpu.tflite", "cd" * 32, 1200, "16.0.384591198", 5,
                         ("SOFTMAX x1: Operation is otherwise supported, but not mapped",))
MEASURED = MeasuredOn("tflite-runtime", "2.14.0", "builtin", "aarch64")


def with_extras() -> Manifest:
    manifest = make_manifest()
    first = dataclasses.replace(manifest.segments[0], variants=(VARIANT,))
    return dataclasses.replace(manifest, segments=(first, *manifest.segments[1:]), accuracy_measured_on=MEASURED)


def test_round_trip_keeps_variants_and_the_measuring_runtime():
    manifest = with_extras()
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.segments[0].variant("edgetpu") == VARIANT and again.segments[1].variant("edgetpu") is None
    assert again.accuracy_measured_on == MEASURED
    assert MEASURED.describe() == "tflite-runtime 2.14.0, builtin kernels, aarch64"


def test_optional_parts_leave_the_bundle_id_and_plain_documents_alone():
    plain = make_manifest()
    assert with_extras().bundle_id == plain.bundle_id  # a compiled variant computes the same segment
    doc = json.loads(plain.to_json())
    assert "accuracy_measured_on" not in doc and "variants" not in doc["segments"][0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["segments"][0]["variants"][0].update(flags=1), r"variants\[0\]: unknown field.*flags"),
        (lambda d: d["segments"][0]["variants"][0].pop("sha256"), r"variants\[0\]: missing field.*sha256"),
        (lambda d: d["segments"][0]["variants"][0].update(target="gpu"), "target: 'gpu' is not one of edgetpu"),
        (lambda d: d["segments"][0]["variants"][0].update(file="../x.tflite"), "plain file name"),
        (lambda d: d["segments"][0]["variants"][0].update(file="segment_1.tflite"), "used twice"),
        (lambda d: d["segments"][0]["variants"][0].update(file="segment_0.tflite"), "segment's own file"),
        (lambda d: d["segments"][0]["variants"].append(dict(d["segments"][0]["variants"][0], file="b.tflite")),
         "more than one variant"),
        (lambda d: d["segments"][0]["variants"][0].update(mapped_ops="5"), "mapped_ops: expected int"),
        (lambda d: d["segments"][0]["variants"][0].update(cpu_ops="SOFTMAX"), "cpu_ops: expected list"),
        (lambda d: d["segments"][0].update(variants={}), r"segments\[0\].variants: expected list"),
        (lambda d: d["accuracy_measured_on"].update(threads=2), "accuracy_measured_on: unknown field.*threads"),
        (lambda d: d["accuracy_measured_on"].pop("kernels"), "accuracy_measured_on: missing field.*kernels"),
    ],
)
def test_malformed_optional_parts_are_named(mutate, message):
    doc = with_extras().to_dict()
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(doc)
