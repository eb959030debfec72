"""Inputs the fuzzers found crashing a parser, kept as regression tests (each is now a typed error)."""

from __future__ import annotations

import json

import pytest

from tflite_edge.bundle.manifest import Manifest
from tflite_edge.errors import ManifestError, TelemetrySchemaError
from tflite_edge.telemetry import schema

STATUS = {"schema": schema.STATUS_SCHEMA, "device_id": "pi-1", "time_unix_s": 1.0, "state": "online",
          "reason": None, "software": "tflite-edge"}


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,  # RecursionError inside json.loads
        '{"a":' * 3000 + "1" + "}" * 3000,
        "1" * 5000,  # ValueError: more than 4300 digits
    ],
)
def test_manifest_loader_refuses_hostile_json(text: str) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_json(text)


def test_manifest_loader_refuses_a_number_beyond_float_range(digits_bundle) -> None:
    doc = digits_bundle.manifest.to_dict()
    doc["exits"][0]["accuracy"] = 10**400  # OverflowError in float()
    with pytest.raises(ManifestError, match="finite"):
        Manifest.from_json(json.dumps(doc))


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 2000 + "]" * 2000,  # RecursionError inside json.loads
        json.dumps({**STATUS, "time_unix_s": 10**400}),  # OverflowError in math.isfinite
        json.dumps({**STATUS, "schema": []}),  # TypeError: unhashable list
        json.dumps({**STATUS, "schema": {"a": 1}}),
    ],
)
def test_telemetry_parser_refuses_hostile_json(payload: str) -> None:
    with pytest.raises(TelemetrySchemaError):
        schema.decode(payload)


def test_the_reproducers_start_from_a_valid_message() -> None:
    assert schema.decode(json.dumps(STATUS)).state == "online"  # so each case fails only for its own change


def test_frame_with_a_scale_beyond_float32_is_a_mismatch_without_warnings(digits_bundle) -> None:
    """A frame whose scale is 1e300 (finite in float64, inf in float32) raised a RuntimeWarning
    ("overflow encountered in cast") for every such frame; with warnings as errors, a crash."""
    import warnings

    import numpy as np

    from tflite_edge.errors import FrameMismatchError
    from tflite_edge.transport import wire

    manifest = digits_bundle.manifest
    spec = manifest.segments[1].inputs[0]
    frame = wire.encode_frame(np.zeros(spec.shape, spec.dtype), bundle_id=manifest.bundle_id, segment=1,
                              tensor=spec.name, scale=1e300, zero_point=spec.zero_point)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FrameMismatchError, match="quantization"):
            wire.decode_activation(frame, manifest)
