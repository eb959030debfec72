"""Edge TPU segments: pre-check, compiled variants in a bundle, their selection and checksums,
the compile command (skipped where Coral's compiler is not installed)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.bundle import Bundle, SegmentVariant, load_bundle, write_bundle
from tflite_edge.bundle.store import sha256_hex
from tflite_edge.cli import main
from tflite_edge.edgetpu import check_bundle, check_model, compile_bundle, parse_compile_log
from tflite_edge.errors import BundleError, ChecksumError, DelegateError, EdgeTpuCompileError
from tflite_edge.runtime import BundleRunner
from tflite_edge.runtime import backends as backends_module

COMPILER = shutil.which("edgetpu_compiler")

# The operator table of `edgetpu_compiler -s`, in the layout Coral documents.
COMPILE_LOG = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 12 ms.

Input model: segment_0.tflite
Input size: 5.86KiB
Output model: out/segment_0_edgetpu.tflite
Output size: 41.21KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 6
Operation log: out/segment_0_edgetpu.log

Operator                       Count      Status

FULLY_CONNECTED                1          Mapped to Edge TPU
SOFTMAX                        1          Operation is otherwise supported, but not mapped due to some \
unspecified limitation
CONV_2D                        1          Mapped to Edge TPU
MAX_POOL_2D                    1          Mapped to Edge TPU
AVERAGE_POOL_2D                1          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
"""


def with_variant(bundle: Bundle, directory: Path, data: bytes = b"\x00compiled for the edge tpu") -> Bundle:
    """A copy of ``bundle`` whose segment 0 has an ``edgetpu`` variant holding ``data``."""
    manifest = bundle.manifest
    variant = SegmentVariant("edgetpu", "segment_0_edgetpu.tflite", sha256_hex(data), len(data), "16.0", 6)
    first = dataclasses.replace(manifest.segments[0], variants=(variant,))
    files = {s.file: bundle.read_segment(s.index) for s in manifest.segments}
    files.update({f.file: bundle.read_fused(f.start, f.stop) for f in manifest.fused})
    files[variant.file] = data
    return write_bundle(directory, dataclasses.replace(manifest, segments=(first, *manifest.segments[1:])), files)


def test_parse_compile_log_counts_mapped_and_cpu_operators():
    log = parse_compile_log(COMPILE_LOG)
    assert log.version == "16.0.384591198" and log.mapped_ops == 5
    assert log.cpu_ops == ("SOFTMAX x1: Operation is otherwise supported, but not mapped due to some "
                           "unspecified limitation",)
    assert parse_compile_log("garbage").version == "unknown"


def test_precheck_passes_the_int8_digits_segments(digits_bundle):
    checks = check_bundle(digits_bundle)
    assert [c.label for c in checks] == ["segment 0", "segment 1", "segment 2"]
    assert all(c.ok and c.first_cpu_op is None for c in checks), [c.problems for c in checks]
    assert "CONV_2D" in checks[0].operators and "SOFTMAX" in checks[0].operators


@pytest.mark.slow  # imports TensorFlow to convert a function
def test_precheck_names_float_tensors_dynamic_shapes_and_unlisted_operators():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def model(x):
        return tf.exp(tf.nn.relu(x) * 2.0)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    check = check_model(converter.convert(), label="float model")
    assert not check.ok
    problems = "\n".join(check.problems)
    assert "EXP is not an Edge TPU operation" in problems
    assert "is float32; the Edge TPU needs int8/uint8" in problems
    assert "dynamic shape [-1, 4]" in problems
    assert check.first_cpu_op == check.operators.index("EXP")


def test_cli_check_reports_each_segment(digits_bundle, capsys):
    assert main(["edgetpu", "check", str(digits_bundle.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all("every operator can run on the Edge TPU" in line for line in out)


def test_variant_is_selected_with_the_edgetpu_delegate_only(digits_bundle, tmp_path, monkeypatch):
    bundle = with_variant(digits_bundle, tmp_path / "b")
    opened: list[tuple[str, bytes, str | None]] = []

    class Recorder:
        def __init__(self, model_content: bytes, *, label: str, delegate: str | None = None, **_: object) -> None:
            opened.append((label, model_content, delegate))

    monkeypatch.setattr(backends_module, "SegmentInterpreter", Recorder)
    BundleRunner(bundle, delegate="edgetpu:usb").interpreter(0)
    BundleRunner(bundle, delegate="edgetpu").interpreter(1)  # no variant: the CPU file, through the delegate
    BundleRunner(bundle).interpreter(0)  # no delegate: the CPU file
    assert opened == [
        ("segment 0 (Edge TPU)", bundle.read_variant(0, "edgetpu"), "edgetpu:usb"),
        ("segment 1", bundle.read_segment(1), "edgetpu"),
        ("segment 0", bundle.read_segment(0), None),
    ]


def test_missing_delegate_is_an_error_or_a_fallback_to_the_cpu_file(digits_bundle, digits_split, tmp_path, caplog):
    bundle = with_variant(digits_bundle, tmp_path / "b")
    with pytest.raises(DelegateError, match="libedgetpu"):
        BundleRunner(bundle, delegate="edgetpu").interpreter(0)
    x = digits_split[2][:4]
    fallback = BundleRunner(bundle, delegate="edgetpu", allow_fallback=True).predict(x)
    assert "running segment 0 on the CPU" in caplog.text
    for name, value in BundleRunner(digits_bundle).predict(x).items():
        np.testing.assert_array_equal(fallback[name], value)


def test_tampered_variant_is_refused_even_with_fallback(digits_bundle, tmp_path):
    bundle = with_variant(digits_bundle, tmp_path / "b")
    compiled = bundle.path / "segment_0_edgetpu.tflite"
    compiled.write_bytes(b"\x01" + compiled.read_bytes()[1:])  # one byte changed, same size
    load_bundle(bundle.path)  # the CPU files are intact: CPU users are unaffected
    with pytest.raises(ChecksumError, match="edgetpu variant .* does not match its sha256"):
        BundleRunner(load_bundle(bundle.path), delegate="edgetpu", allow_fallback=True).interpreter(0)
    compiled.write_bytes(b"\x00")
    with pytest.raises(BundleError, match="is 1 bytes, but 26 are expected"):
        load_bundle(bundle.path).read_variant(0, "edgetpu")
    compiled.unlink()
    with pytest.raises(BundleError, match="segment_0_edgetpu.tflite"):
        load_bundle(bundle.path).read_variant(0, "edgetpu")
    with pytest.raises(BundleError, match="no edgetpu variant"):
        load_bundle(bundle.path).read_variant(1, "edgetpu")


@pytest.mark.skipif(COMPILER is not None, reason="edgetpu_compiler is installed here")
def test_compile_without_the_compiler_names_what_to_install(digits_bundle, capsys):
    with pytest.raises(EdgeTpuCompileError, match="edgetpu_compiler is not installed; install .*edgetpu-compiler"):
        compile_bundle(digits_bundle)
    assert main(["edgetpu", "compile", str(digits_bundle.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: edgetpu_compiler is not installed")


@pytest.mark.skipif(COMPILER is None, reason="edgetpu_compiler is not installed (Coral's apt repository, x86-64 only)")
def test_compile_records_variants_beside_the_cpu_segments(digits_bundle, tmp_path):
    copy = Path(shutil.copytree(digits_bundle.path, tmp_path / "b"))
    compiled = compile_bundle(load_bundle(copy), [0, 1])
    assert compiled.bundle_id == digits_bundle.bundle_id
    for index in (0, 1):
        variant = compiled.manifest.segments[index].variant("edgetpu")
        assert variant is not None and variant.mapped_ops > 0 and variant.compiler_version != "unknown"
        assert b"edgetpu-custom-op" in compiled.read_variant(index, "edgetpu")
    assert compiled.manifest.segments[2].variant("edgetpu") is None
