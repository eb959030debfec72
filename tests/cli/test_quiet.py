"""Host commands print what the user asked for, not the C++ libraries' start-up notes; -v shows those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tflite_edge", *args], capture_output=True, text=True, timeout=180)


def test_running_a_bundle_prints_no_interpreter_notes(digits_bundle, digits_split, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, digits_split[2][:3].astype(np.float32))
    quiet = _run("run", str(digits_bundle.path), "--input", str(x), "-o", str(tmp_path / "y.npz"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.startswith("wrote ")
    verbose = _run("-v", "run", str(digits_bundle.path), "--input", str(x), "-o", str(tmp_path / "y.npz"))
    assert verbose.returncode == 0
    if "litert" in verbose.stdout:  # LiteRT announces its XNNPACK delegate; -v shows it, in the log
        assert "creating the interpreter for" in verbose.stderr and "XNNPACK" in verbose.stderr


def test_the_device_command_prints_results_only(digits_bundle, digits_split, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, digits_split[2][:2].astype(np.float32))
    done = _run("device", "--bundle", str(digits_bundle.path), "--input", str(x))
    assert done.returncode == 0 and done.stderr == "" and len(done.stdout.splitlines()) == 2
