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


def test_run_with_tflite_runtime_matches_the_host(digits_bundle, digits_split, tmp_path):
    x = digits_split[2][:16]
    np.save(tmp_path / "x.npy", x)
    result = device("-m", "tflite_edge", "run", str(digits_bundle.path), "--input", str(tmp_path / "x.npy"),
                    "--backend", "tflite-runtime", "-o", str(tmp_path / "y.npz"))
    assert result.returncode == 0, result.stderr
    assert "tflite-runtime" in result.stdout
    host = BundleRunner(digits_bundle).predict(x)
    manifest = digits_bundle.manifest
    with np.load(tmp_path / "y.npz") as on_device:
        for name, value in host.items():
            # tflite-runtime 2.14 and LiteRT 2.3 round int8 requantization differently (one
            # step at the first cut, a few by the exits): close, but not bit-exact.
            step = manifest.segments[manifest.exit(name).segment].output(name).scale
            steps = np.abs(on_device[name] - value).max() / step
            assert steps <= 8, (name, steps)
            assert np.mean(on_device[name].argmax(-1) == value.argmax(-1)) >= 0.9, name
