import logging

import numpy as np
import pytest

from tflite_edge.errors import BackendError, DelegateError, InputError
from tflite_edge.runtime import BundleRunner, SegmentInterpreter, available_backends, resolve_backend
from tflite_edge.runtime.backends import _edgetpu_options


def test_preference_order_and_names():
    assert available_backends()[0] == "litert"  # the host venv has ai-edge-litert
    assert resolve_backend().name == "litert"
    assert resolve_backend("tensorflow").name == "tf"
    with pytest.raises(BackendError, match="unknown backend 'onnx'"):
        resolve_backend("onnx")


def test_a_backend_that_is_not_installed_says_how_to_install_it():
    if "tflite-runtime" in available_backends():
        pytest.skip("tflite-runtime is installed in this environment")
    with pytest.raises(BackendError, match="pip install tflite-runtime"):
        resolve_backend("tflite-runtime")


def test_all_installed_backends_agree_bit_for_bit(digits_bundle, digits_split):
    if len(available_backends()) < 2:
        pytest.skip(f"only one interpreter backend is installed ({available_backends()[0]}): nothing to compare")
    x = digits_split[2][:20]
    results = {name: BundleRunner(digits_bundle, backend=name).predict(x) for name in available_backends()}
    reference = results.pop("litert")
    for outputs in results.values():
        for name, value in outputs.items():
            np.testing.assert_array_equal(value, reference[name])


def test_named_io_is_checked(digits_bundle):
    interpreter = SegmentInterpreter(digits_bundle.read_segment(0), label="segment 0")
    assert interpreter.input_names == ["image"]
    assert set(interpreter.output_names) == {"exit_1", "block_1_out"}
    with pytest.raises(InputError, match=r"segment 0 input 'image' must be int8\[1, 8, 8, 1\], got float32"):
        interpreter.run({"image": np.zeros((1, 8, 8, 1), np.float32)})
    with pytest.raises(InputError, match="takes inputs"):
        interpreter.run({"pixels": np.zeros((1, 8, 8, 1), np.int8)})


def test_runner_rejects_wrong_sample_shape(digits_bundle):
    with pytest.raises(InputError, match=r"shape \[8, 8, 1\]"):
        BundleRunner(digits_bundle).quantize_input(np.zeros((7, 7), np.float32))


def test_partial_chain_matches_full_chain(digits_bundle, digits_split):
    runner = BundleRunner(digits_bundle)
    feed = {"image": runner.quantize_input(digits_split[2][0])}
    full = runner.run(feed)
    head = runner.run(feed, stop=1)
    tail = runner.run({"block_1_out": head["block_1_out"]}, start=1)
    np.testing.assert_array_equal(full["final"], tail["final"])
    with pytest.raises(InputError, match="outside"):
        runner.run(feed, start=2, stop=1)


def test_edgetpu_delegate_missing_is_a_clear_error(digits_bundle):
    with pytest.raises(DelegateError, match="libedgetpu.so.1 is not installed"):
        SegmentInterpreter(digits_bundle.read_segment(0), delegate="edgetpu")


def test_edgetpu_fallback_is_logged(digits_bundle, caplog):
    with caplog.at_level(logging.WARNING):
        interpreter = SegmentInterpreter(digits_bundle.read_segment(0), delegate="edgetpu:usb:0", allow_fallback=True)
    assert interpreter.delegate is None
    assert "falling back to the CPU" in caplog.text


def test_delegate_grammar():
    assert _edgetpu_options("edgetpu") == {}
    assert _edgetpu_options("edgetpu:usb:0") == {"device": "usb:0"}
    assert _edgetpu_options("edgetpu:pci") == {"device": "pci"}
    with pytest.raises(DelegateError, match="unknown delegate"):
        _edgetpu_options("gpu")
