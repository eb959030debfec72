"""Loading user arrays: one loader for every command that reads .npy or .npz files.

``load_array`` reads a ``.npy`` file, or one named array (``x`` unless told otherwise) of an
``.npz`` file, and refuses with one ``InputError`` line whatever it cannot use:

- anything that is not a regular file, or is larger than ``MAX_ARRAY_BYTES``;
- a file that is neither format (told apart by its first bytes, not its name);
- an ``.npz`` without the named array (the error lists the arrays it has);
- a header whose shape and dtype do not match the bytes that follow, checked *before* the
  array is allocated (a 40-byte file claiming shape (1e9, 8, 8, 1) allocates nothing);
- object, string, structured and complex arrays (complex would silently lose its
  imaginary part on the way to float32);
- NaN or infinite values where ``finite`` (inputs: nothing is computed from NaN).

``load_labeled`` reads the ``x`` and ``y`` arrays of an ``.npz`` and checks they pair up.
Numpy only: devices import this module.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import InputError
from .files import open_regular

__all__ = ["MAX_ARRAY_BYTES", "check_values", "load_array", "load_labeled"]

MAX_ARRAY_BYTES = 4 << 30
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_HEADER_BYTES = 10_000


def load_array(
    path: str | os.PathLike[str],
    *,
    what: str = "input",
    key: str = "x",
    finite: bool = True,
    max_bytes: int = MAX_ARRAY_BYTES,
) -> np.ndarray:
    """The array in ``path`` (a ``.npy``, or the ``key`` array of a ``.npz``), checked as described above."""
    return _load(path, what=what, key=key, finite=finite, max_bytes=max_bytes, npz_only=False)


def _load(path: str | os.PathLike[str], *, what: str, key: str, finite: bool, max_bytes: int,
          npz_only: bool) -> np.ndarray:
    file = Path(path)
    handle, size = open_regular(file, what=what, max_bytes=max_bytes, error=InputError)
    with handle:
        head = handle.read(len(_NPY_MAGIC))
        handle.seek(0)
        if head.startswith(_NPY_MAGIC) and npz_only:
            raise InputError(f"{what} {file} is a single .npy array; labelled data is an .npz with arrays x "
                             "(inputs) and y (labels): numpy.savez(file, x=..., y=...)")
        if head.startswith(_NPY_MAGIC):
            array = _read_npy(handle, size, f"{what} {file}")
        elif head.startswith(_ZIP_MAGIC):
            array = _read_npz_member(handle, key, f"{what} {file}", max_bytes)
        else:
            raise InputError(f"{what} {file} is not a NumPy .npy or .npz file; save arrays with numpy.save "
                             "or numpy.savez")
    check_values(array, f"{what} {file}", finite=finite)
    return array


def load_labeled(path: str | os.PathLike[str], *, what: str = "labelled data") -> tuple[np.ndarray, np.ndarray]:
    """``x`` (finite inputs) and ``y`` (class labels, or one-hot rows) of an ``.npz`` file, of equal length."""
    x = _load(path, what=what, key="x", finite=True, max_bytes=MAX_ARRAY_BYTES, npz_only=True)
    y = _load(path, what=what, key="y", finite=True, max_bytes=MAX_ARRAY_BYTES, npz_only=True)
    if x.ndim == 0 or y.ndim not in (1, 2) or len(x) != len(y):
        raise InputError(f"{what} {path}: x has shape {list(x.shape)} and y {list(y.shape)}; y needs one class "
                         "label (or one one-hot row) per sample of x")
    return x, y


def check_values(array: np.ndarray, where: str, *, finite: bool = True) -> None:
    """``InputError`` unless ``array`` is real-valued numbers (bool, int or float), finite when asked."""
    kind = array.dtype.kind
    if kind == "c":
        raise InputError(f"{where} holds complex values ({array.dtype}); give real-valued inputs")
    if kind not in "biuf":
        raise InputError(f"{where} holds {array.dtype} values; numeric (int or float) arrays are needed")
    if finite and kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{where} contains {bad} NaN or infinite value(s); nothing was computed from them: "
                         "clean the data first")


def _read_header(handle: IO[bytes], where: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)  # type: ignore[no-untyped-call]
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle, max_header_size=_MAX_HEADER_BYTES)  # type: ignore[no-untyped-call]
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle, max_header_size=_MAX_HEADER_BYTES)  # type: ignore[no-untyped-call]
        else:
            raise InputError(f"{where}: .npy format version {version} is not supported (1.0 and 2.0 are)")
    except InputError:
        raise
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError...
        raise InputError(f"{where} has a malformed .npy header: {e}") from e
    if any(type(d) is not int or d < 0 for d in shape):  # a bool is an int to isinstance
        raise InputError(f"{where} has a malformed .npy header: shape {shape}")
    return tuple(shape), bool(fortran), dtype


def _check_claim(shape: tuple[int, ...], dtype: np.dtype[Any], data_bytes: int, where: str) -> None:
    # The header's claim must match the bytes that are actually there, before any allocation.
    if dtype.hasobject:
        raise InputError(f"{where} holds Python objects; only numeric arrays are read (never unpickled)")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != data_bytes:
        raise InputError(f"{where}: its header claims shape {list(shape)} of {dtype} ({claimed:,} bytes), "
                         f"but the file holds {data_bytes:,} bytes of data; the file is truncated or corrupt")


def _read_npy(handle: IO[bytes], size: int, where: str) -> np.ndarray:
    shape, _, dtype = _read_header(handle, where)
    _check_claim(shape, dtype, size - handle.tell(), where)
    handle.seek(0)
    return _read_array(handle, where)


def _read_array(handle: IO[bytes], where: str) -> np.ndarray:
    try:
        return np.asarray(np.lib.format.read_array(handle, allow_pickle=False,  # type: ignore[no-untyped-call]
                                                   max_header_size=_MAX_HEADER_BYTES))
    except (ValueError, TypeError, OSError, EOFError) as e:
        raise InputError(f"{where} cannot be read: {e}") from e


def _read_npz_member(handle: IO[bytes], key: str, where: str, max_bytes: int) -> np.ndarray:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"{where} is not a readable .npz file: {e}") from e
    with archive:
        names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        if key not in names:
            raise InputError(f"{where} holds arrays {names}; an array named {key!r} is needed "
                             f"(save it with numpy.savez(file, {key}=...))")
        info = archive.getinfo(f"{key}.npy")
        if info.file_size > max_bytes:
            raise InputError(f"{where}: array {key!r} is {info.file_size:,} bytes, more than the limit of "
                             f"{max_bytes:,}")
        try:
            with archive.open(info) as member:
                shape, _, dtype = _read_header(member, f"{where} [{key}]")
                _check_claim(shape, dtype, info.file_size - member.tell(), f"{where} [{key}]")
            with archive.open(info) as member:
                return _read_array(member, f"{where} [{key}]")
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, ValueError, EOFError,
                zlib.error) as e:  # bad CRC or offsets, unknown compression, a corrupt deflate stream
            raise InputError(f"{where}: array {key!r} cannot be read: {e}") from e
