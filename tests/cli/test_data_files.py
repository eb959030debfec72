"""One array loader for every command: .npy or .npz (array x), bounded headers, finite real values.

Each bad file is one `error:` line and a non-zero exit, before any long work starts, and
nothing is computed from NaN, infinity or complex numbers.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.arrays import load_array, load_labeled
from tflite_edge.cli import main
from tflite_edge.errors import InputError
from tflite_edge.runtime import BundleRunner


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def huge_header_npy(path: Path) -> Path:
    """A 150-byte .npy whose header claims shape (1e9, 8, 8, 1) of float32 (256 GB)."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 8, 8, 1), }"
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
    return path


@pytest.fixture
def x_val(digits_split) -> np.ndarray:
    return digits_split[2][:4].astype(np.float32)


# -- the loader itself ---------------------------------------------------------------------------

def test_npy_and_npz_give_the_same_array(tmp_path, x_val):
    np.save(tmp_path / "x.npy", x_val)
    np.savez(tmp_path / "x.npz", x=x_val)
    np.savez_compressed(tmp_path / "xc.npz", x=x_val, y=np.arange(4))
    for name in ("x.npy", "x.npz", "xc.npz"):
        np.testing.assert_array_equal(load_array(tmp_path / name), x_val)
    x, y = load_labeled(tmp_path / "xc.npz")
    assert len(x) == len(y) == 4


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: np.savez(p / "f.npz", images=np.zeros((2, 8, 8, 1))), "named 'x'"),
        (lambda p: huge_header_npy(p / "f.npz"), "claims shape [1000000000, 8, 8, 1]"),
        (lambda p: np.save(p / "f.npz", np.array([1.0, np.nan])), "NaN"),
        (lambda p: np.save(p / "f.npz", np.array([np.inf, 1.0])), "NaN or infinite"),
        (lambda p: np.save(p / "f.npz", np.array([1 + 2j])), "complex"),
        (lambda p: np.save(p / "f.npz", np.array(["a", "b"])), "numeric"),
        (lambda p: (p / "f.npz").write_text('{"topic": "t"}\n'), "not a NumPy"),
        (lambda p: (p / "f.npz").write_bytes(b"\x93NUMPY\x01\x00\xff"), "header"),
        (lambda p: os.mkfifo(p / "f.npz"), "FIFO"),
    ],
)
def test_bad_array_files_are_one_input_error(tmp_path, make, needle):
    make(tmp_path)
    path = tmp_path / "f.npz"
    if not path.exists():
        path = next(tmp_path.iterdir())
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_array(path)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # a FIFO that blocked: free the thread, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the loader blocked")
    assert outcome and isinstance(outcome[0], InputError) and needle in str(outcome[0]), outcome


def test_labelled_data_must_be_an_npz_with_x_and_y(tmp_path, x_val):
    np.save(tmp_path / "calib.npy", x_val)
    with pytest.raises(InputError, match="single .npy array"):
        load_labeled(tmp_path / "calib.npy")
    np.savez(tmp_path / "bad_y.npz", x=x_val, y=np.zeros((4, 8, 8, 1)))
    with pytest.raises(InputError, match="one class label"):
        load_labeled(tmp_path / "bad_y.npz")


def test_the_runner_computes_nothing_from_nan_or_complex(digits_bundle, x_val):
    runner = BundleRunner(digits_bundle)
    bad = x_val.copy()
    bad[1, 3, 3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        runner.predict(bad)
    with pytest.raises(InputError, match="complex"):
        runner.quantize_input(x_val[0].astype(np.complex64))


# -- every command -------------------------------------------------------------------------------

def test_run_and_device_read_npz_inputs(capsys, digits_bundle, tmp_path, x_val):
    np.savez(tmp_path / "val.npz", x=x_val, y=np.arange(4))
    code, out, err = run_cli(capsys, "run", digits_bundle.path, "--input", tmp_path / "val.npz",
                             "-o", tmp_path / "y.npz")
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as y:
        assert y["final"].shape == (4, 10)
    code, out, err = run_cli(capsys, "device", "--bundle", digits_bundle.path, "--input", tmp_path / "val.npz",
                             "--json")
    assert code == 0 and out.count('"exit"') == 4, err


@pytest.mark.parametrize("command", ["run", "device"])
def test_nan_inputs_are_refused_before_anything_runs(capsys, digits_bundle, tmp_path, x_val, command):
    bad = x_val.copy()
    bad[2, 0, 0, 0] = np.inf
    np.save(tmp_path / "x.npy", bad)
    argv = (["run", digits_bundle.path, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz"]
            if command == "run" else ["device", "--bundle", digits_bundle.path, "--input", tmp_path / "x.npy"])
    code, out, err = run_cli(capsys, *argv)
    one_error_line(code, err, "NaN or infinite", "x.npy")
    assert out == "" and not (tmp_path / "y.npz").exists()


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: np.save(p, np.zeros((2, 8, 8, 1), np.complex64)), "complex"),
        (huge_header_npy, "claims shape"),
        (lambda p: np.savez(p, images=np.zeros((2, 8, 8, 1))), "named 'x'"),
    ],
)
def test_run_and_device_bad_inputs_are_one_line(capsys, digits_bundle, tmp_path, make, needle):
    path = tmp_path / "x.npy"
    make(path)
    path = path if path.exists() else path.with_suffix(".npy.npz")
    for argv in (["run", digits_bundle.path, "--input", path, "-o", tmp_path / "y.npz"],
                 ["device", "--bundle", digits_bundle.path, "--input", path]):
        code, out, err = run_cli(capsys, *argv)
        one_error_line(code, err, needle)


def test_evaluate_with_an_npy_is_one_line(capsys, digits_bundle, tmp_path, x_val):
    np.save(tmp_path / "x.npy", x_val)
    code, _, err = run_cli(capsys, "evaluate", digits_bundle.path, "--data", tmp_path / "x.npy")
    one_error_line(code, err, "--data", "single .npy array")


def test_convert_checks_its_data_files_before_loading_the_model(capsys, tmp_path, x_val):
    """The model file is not even a model: the data error must come first, before it is loaded."""
    np.save(tmp_path / "calib.npy", x_val)
    (tmp_path / "model.keras").write_text("not a model")
    code, _, err = run_cli(capsys, "convert", tmp_path / "model.keras", "-o", tmp_path / "out",
                           "--calibration", tmp_path / "calib.npy", "--validation", tmp_path / "calib.npy")
    one_error_line(code, err, "--validation", "single .npy array")
    bad = x_val.copy()
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    code, _, err = run_cli(capsys, "convert", tmp_path / "model.keras", "-o", tmp_path / "out",
                           "--calibration", tmp_path / "nan.npy")
    one_error_line(code, err, "--calibration", "NaN")
    assert not (tmp_path / "out").exists()


def test_plot_of_an_array_file_is_one_line(capsys, tmp_path, x_val):
    np.save(tmp_path / "x.npy", x_val)
    code, _, err = run_cli(capsys, "plot", tmp_path / "x.npy", "-o", tmp_path / "plots")
    one_error_line(code, err, "not a telemetry recording")


def test_a_header_that_breaks_numpys_tokenizer_is_an_input_error(tmp_path):
    """Found by bench/bench_fuzz.py: numpy raised tokenize.TokenError for this header."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,(, }"
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    with pytest.raises(InputError, match="malformed .npy header"):
        load_array(tmp_path / "x.npy")


def test_fuzzer_findings_in_headers_and_archives_are_input_errors(tmp_path):
    """Found by bench/bench_fuzz.py: a bool in the shape (TypeError), an .npz with broken offsets (OSError)."""
    header = b"{'descr': '|b1', 'fortran_order': True, 'shape': (True,), }"
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\xd3")
    with pytest.raises(InputError, match="malformed .npy header"):
        load_array(tmp_path / "b.npy")
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x01")
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")
    data[central + 42:central + 46] = struct.pack("<I", 2**31 + 12345)  # the member's offset points far away
    (tmp_path / "x.npz").write_bytes(bytes(data))
    with pytest.raises(InputError):
        load_array(tmp_path / "x.npz")
