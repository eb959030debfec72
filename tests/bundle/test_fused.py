"""Fused files: consecutive segments as one interpreter, verified against the chain they replace."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from tflite_edge.bundle import Bundle, FusedSpec, Manifest, load_bundle
from tflite_edge.device import DeviceRuntime
from tflite_edge.errors import ChecksumError, ManifestError
from tflite_edge.runtime import BundleRunner

from .test_manifest import SHA, make_manifest


def with_fused(*fused: FusedSpec) -> Manifest:
    return dataclasses.replace(make_manifest(), fused=fused)


GOOD = FusedSpec(0, 2, "fused_0_2.tflite", SHA, 3000, ("exit_1", "block_1_out", "final"))


def test_fused_entries_round_trip_and_are_optional() -> None:
    manifest = with_fused(GOOD)
    again = Manifest.from_json(manifest.to_json())
    assert again.fused == (GOOD,) and again.fused_span(0, 2) == GOOD and again.fused_span(0, 1) is None
    assert "fused" not in json.loads(make_manifest().to_json())  # older readers see the same document
    assert manifest.bundle_id == make_manifest().bundle_id  # derived files do not change the identity


@pytest.mark.parametrize(
    ("fused", "message"),
    [
        (dataclasses.replace(GOOD, stop=3), "not a range of 2 or more segments"),
        (dataclasses.replace(GOOD, start=1), "not a range of 2 or more segments"),
        (dataclasses.replace(GOOD, outputs=("final",)), "are not the outputs of segments 0..1"),
        (dataclasses.replace(GOOD, file="segment_0.tflite"), "listed twice"),
        (dataclasses.replace(GOOD, file="../x.tflite"), "plain file name"),
    ],
)
def test_inconsistent_fused_entries_are_refused(fused: FusedSpec, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(with_fused(fused).to_json())


def test_the_converter_writes_a_verified_fused_prefix_per_partition(digits_bundle: Bundle) -> None:
    manifest = digits_bundle.manifest
    assert [(f.start, f.stop) for f in manifest.fused] == [(0, k) for k in range(2, manifest.num_segments + 1)]
    for fused in manifest.fused:
        assert (digits_bundle.path / fused.file).stat().st_size == fused.size_bytes


def test_fused_runs_leave_exactly_the_chains_tensors(digits_bundle: Bundle, digits_split) -> None:
    x_val = digits_split[2][:40]
    fused_runner = BundleRunner(digits_bundle)
    chain_runner = BundleRunner(digits_bundle, use_fused=False)
    name = digits_bundle.manifest.input.name
    for stop in range(2, digits_bundle.manifest.num_segments + 1):
        assert fused_runner.has_fused(0, stop) and not chain_runner.has_fused(0, stop)
        for sample in x_val:
            feed = {name: chain_runner.quantize_input(sample)}
            got, expected = fused_runner.run(feed, stop=stop), chain_runner.run(feed, stop=stop)
            assert got.keys() == expected.keys()
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key])
    assert set(fused_runner._fused) == {(0, k) for k in range(2, digits_bundle.manifest.num_segments + 1)}


def test_device_uses_the_fused_head_without_a_rule_and_answers_the_same(
    digits_bundle: Bundle, digits_split
) -> None:
    x_val = digits_split[2][:20]
    last = digits_bundle.manifest.num_segments
    chain = BundleRunner(digits_bundle, use_fused=False)
    with DeviceRuntime(digits_bundle) as device:
        for sample in x_val:
            result = device.infer(sample, exit="final", partition=last)
            expected = chain.exit_probabilities(chain.run_sample(sample), "final")
            np.testing.assert_array_equal(result.probabilities, expected)
            assert result.ran_on == "device" and not result.fell_back
        assert (0, last) in device.runner._fused
        assert all(ms > 0 for ms in device.segment_ms)  # the fallback budget still has per-segment times
        # With an early-exit rule the segments run one by one, so an exit can stop the run.
        early = device.infer(x_val[0], exit="final", partition=last, rule=_always_confident(digits_bundle))
        assert early.early_exit and early.exit == digits_bundle.manifest.exits[0].name


def _always_confident(bundle: Bundle):
    from tflite_edge.device.plan import ExitRule

    return ExitRule({bundle.manifest.exits[0].name: 0.0})


def test_a_tampered_fused_file_is_caught(digits_bundle: Bundle, tmp_path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, copy)
    fused = digits_bundle.manifest.fused[-1]
    data = bytearray((copy / fused.file).read_bytes())
    data[-1] ^= 1
    (copy / fused.file).write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"fused segments \[0, 3\)"):
        load_bundle(copy)
