"""The device runtime from .venv-device (tflite-runtime, numpy<2, no TensorFlow) against an edge
process from the host venv, through a real broker."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.cli import main as cli_main
from tflite_edge.transport.broker import MosquittoBroker

pytestmark = pytest.mark.slow

DEVICE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-device" / "bin" / "python"

# Runs inside .venv-device: every partition through the `tflite-edge device` command, then
# proves that neither TensorFlow nor anything but tflite-runtime ran the segments.
DEVICE_SCRIPT = r"""
import contextlib, io, json, sys
from tflite_edge.cli import main
broker, bundle, inputs, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lines = []
for k in range(partitions + 1):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["device", "--broker", broker, "--bundle", bundle, "--id", "venv-device", "--input", inputs,
                     "--partition", str(k), "--deadline-ms", "5000", "--json"])
    assert code == 0, code
    lines += out.getvalue().splitlines()
from tflite_edge.runtime import resolve_backend
import numpy
print(json.dumps({"results": [json.loads(l) for l in lines], "tensorflow": "tensorflow" in sys.modules,
                  "backend": resolve_backend().name, "numpy": numpy.__version__}))
"""


@pytest.mark.skipif(not DEVICE_PYTHON.exists(), reason=f"{DEVICE_PYTHON} is absent; create it with `make setup`")
def test_device_venv_against_host_edge(
    broker: MosquittoBroker, digits_bundle: Bundle, digits_split, tmp_path: Path,
    edge_processes: Callable[..., subprocess.Popen[str]],
) -> None:
    x = digits_split[2][:5].astype(np.float32)
    inputs = tmp_path / "x.npy"
    np.save(inputs, x)
    # The reference: `tflite-edge run` on the same bundle, in the host environment.
    assert cli_main(["run", str(digits_bundle.path), "--input", str(inputs), "--exit", "final",
                     "-o", str(tmp_path / "local.npz")]) == 0
    local = np.load(tmp_path / "local.npz")["final"]
    segments = digits_bundle.manifest.num_segments
    edge_processes(broker.url, digits_bundle.path)  # `tflite-edge edge` in its own process, host venv
    done = subprocess.run(
        [str(DEVICE_PYTHON), "-c", DEVICE_SCRIPT, broker.url, str(digits_bundle.path), str(inputs), str(segments)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tensorflow"] is False
    assert report["backend"] == "tflite-runtime" and report["numpy"].startswith("1.")
    results = report["results"]
    assert len(results) == (segments + 1) * len(x)
    for n, r in enumerate(results):
        k, i = divmod(n, len(x))
        assert r["partition"] == k and r["exit"] == "final" and not r["fell_back"], r
        assert r["ran_on"] == ("edge" if k == 0 else "device" if k == segments else "split")
        assert r["top1_class"] == int(np.argmax(local[i]))
        assert r["top1_score"] == round(float(local[i].max()), 6)
