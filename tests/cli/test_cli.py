"""The command line, in process (main()) and as a real subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tflite_edge.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "tflite_edge", "--help"], capture_output=True, text=True, check=True)
    for command in ("convert", "inspect", "run", "evaluate", "profile", "zoo"):
        assert command in result.stdout
    assert "tensorflow" not in result.stderr.lower()


def test_help_does_not_import_tensorflow():
    code = "import sys; from tflite_edge.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_inspect_text_and_json(capsys, digits_bundle):
    code, out, _ = run_cli(capsys, "inspect", digits_bundle.path)
    assert code == 0
    assert "exit_1: segment 0" in out and "bit-exact" in out and "K=1: 256" in out
    code, out, _ = run_cli(capsys, "inspect", digits_bundle.path, "--json")
    doc = json.loads(out)
    assert doc["bundle_id"] == digits_bundle.bundle_id
    assert doc["derived"]["num_segments"] == 3
    assert [p["bytes_sent"] for p in doc["derived"]["partitions"]] == [64, 256, 128, 0]


def test_run_writes_dequantized_exits(capsys, digits_bundle, digits_split, tmp_path):
    x = digits_split[2][:4]
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capsys, "run", digits_bundle.path, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert code == 0
    with np.load(tmp_path / "y.npz") as y:
        assert sorted(y.files) == ["exit_1", "exit_2", "final"]
        assert y["final"].dtype == np.float32 and y["final"].shape == (4, 10)
        np.testing.assert_allclose(y["final"].sum(axis=1), 1.0, atol=0.05)
    code, _, _ = run_cli(capsys, "run", digits_bundle.path, "--input", tmp_path / "x.npy", "--exit", "exit_2",
                         "-o", tmp_path / "z.npz")
    with np.load(tmp_path / "z.npz") as z:
        assert z.files == ["exit_2"]
    code, _, err = run_cli(capsys, "run", digits_bundle.path, "--input", tmp_path / "x.npy", "--exit", "exit_9",
                           "-o", tmp_path / "z.npz")
    assert code == 2 and "unknown exit 'exit_9'" in err


def test_evaluate_against_keras(capsys, digits_bundle, digits_npz, digits_model_file):
    code, out, _ = run_cli(capsys, "evaluate", digits_bundle.path, "--data", digits_npz, "--model", digits_model_file,
                           "--json")
    assert code == 0
    report = json.loads(out)
    for exit_name, figures in report["exits"].items():
        assert figures["agreement"] >= 0.97, exit_name
        assert figures["accuracy"] == pytest.approx(digits_bundle.manifest.exit(exit_name).accuracy)


def test_profile_json(capsys, digits_bundle, tmp_path):
    code, out, _ = run_cli(capsys, "profile", digits_bundle.path, "--repeats", "5", "--json", "-o", tmp_path / "p.json")
    assert code == 0
    doc = json.loads(out)
    assert [s["index"] for s in doc["segments"]] == [0, 1, 2]
    assert all(s["median_ms"] > 0 for s in doc["segments"])
    assert json.loads((tmp_path / "p.json").read_text()) == doc


def test_convert_end_to_end_and_errors(capsys, digits_model_file, digits_split, tmp_path):
    np.save(tmp_path / "calib.npy", digits_split[0][:50])
    code, out, err = run_cli(capsys, "convert", digits_model_file, "-o", tmp_path / "b", "--cut", "block_2_out",
                             "--calibration", tmp_path / "calib.npy")
    assert code == 0 and "segments: 2" in out and "verifying" in err
    code, _, err = run_cli(capsys, "convert", digits_model_file, "-o", tmp_path / "b")
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(capsys, "convert", digits_model_file, "-o", tmp_path / "c")
    assert code == 2 and "--calibration" in err
    code, out, _ = run_cli(capsys, "convert", digits_model_file, "-o", tmp_path / "c", "--list-cuts")
    assert code == 0 and "block_1_out\t4x4x16" in out
    assert not (tmp_path / "c").exists()


def test_errors_are_one_line_not_tracebacks(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", tmp_path / "missing")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


def test_cli_reference_is_up_to_date():
    from pathlib import Path

    from tflite_edge.cli.reference import render_reference

    docs = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert docs.read_text() == render_reference(), "regenerate: python -m tflite_edge.cli.reference > docs/cli.md"


def test_a_closed_pipe_ends_quietly(digits_bundle, digits_split, tmp_path):
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", np.repeat(digits_split[2][:1], 3000, axis=0))
    command = (f"{sys.executable} -m tflite_edge device --bundle {digits_bundle.path} "
               f"--input {tmp_path / 'x.npy'} --json | head -1")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("{")
    assert "Traceback" not in result.stderr, result.stderr


def test_device_paces_requests_with_interval_ms(capsys, digits_bundle, digits_split, tmp_path):
    import time

    np.save(tmp_path / "x.npy", digits_split[2][:5])
    start = time.monotonic()
    code, out, _ = run_cli(capsys, "device", "--bundle", digits_bundle.path, "--input", tmp_path / "x.npy",
                           "--interval-ms", "50", "--json")
    assert code == 0 and len(out.splitlines()) == 5
    assert time.monotonic() - start >= 0.2  # four gaps of 50 ms
