"""Devices verify signed bundles with the device environment alone (no TensorFlow)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.security.signing import generate_key_pair, load_private_key, sign_bundle

DEVICE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-device" / "bin" / "python"

pytestmark = pytest.mark.skipif(not DEVICE_PYTHON.exists(), reason=".venv-device is missing: run `make setup`")

SCRIPT = """
import sys
from tflite_edge.errors import SignatureError
from tflite_edge.security.signing import load_public_key, verify_bundle
try:
    bundle = verify_bundle(sys.argv[1], load_public_key(sys.argv[2]))
except SignatureError as e:
    print("refused:", e)
    sys.exit(3)
assert "tensorflow" not in sys.modules
print("verified", bundle.bundle_id)
"""


def test_device_environment_verifies_and_refuses(digits_bundle: Bundle, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, bundle)
    generate_key_pair(tmp_path / "k")
    sign_bundle(bundle, load_private_key(tmp_path / "k"))
    run = [str(DEVICE_PYTHON), "-c", SCRIPT, str(bundle), str(tmp_path / "k.pub")]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and f"verified {digits_bundle.bundle_id}" in ok.stdout, ok.stderr
    segment = bundle / "segment_0.tflite"
    data = segment.read_bytes()
    segment.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
    refused = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3 and "segment 0" in refused.stdout, refused.stderr
