"""Reading files that someone else may control: regular files only, sizes bounded before reading.

Every file tflite-edge reads whole (bundle.json, segments, signatures, keys, arrays, state
files) goes through ``open_regular`` or ``read_regular``. They open without blocking (a FIFO
would otherwise wait forever for a writer), refuse anything that is not a regular file once
opened (a FIFO, a socket, ``/dev/zero`` behind a symlink), and check the size from ``fstat``
against the caller's bound, and against the exact size the caller expects, *before* a byte
is read. Reading stops one byte past the size seen, so a file that grows meanwhile is
refused too. Checks run on the open file descriptor, so renaming files around the check does
not change what is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import TfliteEdgeError

__all__ = ["open_regular", "read_regular"]


def _describe_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def open_regular(
    path: str | os.PathLike[str],
    *,
    what: str,
    max_bytes: int,
    error: type[TfliteEdgeError],
    expected_bytes: int | None = None,
) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file of at most ``max_bytes`` bytes.

    Returns the open binary file and its size. With ``expected_bytes``, the size must be
    exactly that. Every refusal is an ``error`` naming ``what`` and the path.
    """
    file = Path(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise error(f"{what}: {file} is missing") from e
    except IsADirectoryError as e:
        raise error(f"{what}: {file} is a directory, not a file") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise error(f"{what}: cannot open {file}: {reason}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what}: {file} is {_describe_kind(info.st_mode)}; a regular file is needed")
        if info.st_size > max_bytes:
            raise error(f"{what}: {file} is {info.st_size:,} bytes, more than the limit of {max_bytes:,}")
        if expected_bytes is not None and info.st_size != expected_bytes:
            raise error(f"{what}: {file} is {info.st_size:,} bytes, but {expected_bytes:,} are expected: "
                        "the file is truncated, padded or replaced")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return handle, info.st_size


def read_regular(
    path: str | os.PathLike[str],
    *,
    what: str,
    max_bytes: int,
    error: type[TfliteEdgeError],
    expected_bytes: int | None = None,
) -> bytes:
    """The bytes of ``path``, read once, with the checks of ``open_regular``."""
    handle, size = open_regular(path, what=what, max_bytes=max_bytes, error=error, expected_bytes=expected_bytes)
    with handle:
        try:
            data = handle.read(size + 1)
        except OSError as e:
            raise error(f"{what}: cannot read {path}: {e.strerror}") from e
    if len(data) != size:
        raise error(f"{what}: {path} changed size while it was read ({size:,} -> {len(data):,} bytes)")
    return data
