"""The device environment: tflite-runtime 2.14, numpy<2, no TensorFlow (.venv-device)."""

import json
import subprocess

import numpy as np
import pytest

from tflite_edge.runtime import BundleRunner

from ..conftest import DEVICE_PYTHON

pytestmark = pytest.mark.skipif(not DEVICE_PYTHON.exists(), reason=".venv-device is missing: run `make setup`")


def device(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DEVICE_PYTHON), *args], capture_output=True, text=True, timeout=120)


def test_import_without_tensorflow():
    result = device("-c", "import sys, json, numpy, tflite_edge, tflite_edge.runtime; "
                          "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'numpy': numpy.__version__}))")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["tf"] is False and info["numpy"].startswith("1.")


def _run_on_device(bundle_path, x_path, y_path, *extra: str) -> None:
    result = device("-m", "tflite_edge", "run", str(bundle_path), "--input", str(x_path),
                    "--backend", "tflite-runtime", "-o", str(y_path), *extra)
    assert result.returncode == 0, result.stderr
    assert "tflite-runtime" in result.stdout


def test_run_with_tflite_runtime_agrees_with_the_host(digits_bundle, digits_split, tmp_path):
    x, y = digits_split[2], digits_split[3]
    np.save(tmp_path / "x.npy", x)
    _run_on_device(digits_bundle.path, tmp_path / "x.npy", tmp_path / "y.npz")
    host = BundleRunner(digits_bundle).predict(x)
    with np.load(tmp_path / "y.npz") as on_device:
        for name, value in host.items():
            # The host's default LiteRT kernels (XNNPACK) round int8 differently from
            # tflite-runtime's builtin kernels: compare what a user sees, the top-1 class and
            # each exit's accuracy, not raw quantization steps.
            agreement = np.mean(on_device[name].argmax(-1) == value.argmax(-1))
            assert agreement >= 0.98, (name, agreement)
            accuracy_gap = abs(np.mean(on_device[name].argmax(-1) == y) - np.mean(value.argmax(-1) == y))
            assert accuracy_gap <= 0.01, (name, accuracy_gap)


def test_builtin_kernels_reproduce_the_host_bit_for_bit(digits_bundle, digits_split, tmp_path):
    x = digits_split[2]
    np.save(tmp_path / "x.npy", x)
    _run_on_device(digits_bundle.path, tmp_path / "x.npy", tmp_path / "y.npz", "--kernels", "builtin")
    host = BundleRunner(digits_bundle, kernels="builtin").predict(x)
    assert BundleRunner(digits_bundle).backend_name == "litert"
    with np.load(tmp_path / "y.npz") as on_device:
        for name, value in host.items():
            np.testing.assert_array_equal(on_device[name], value, err_msg=name)
