"""Output that C++ libraries write straight to file descriptor 2, moved to the log.

TensorFlow, LiteRT, absl and TFLite Micro print start-up and status lines from C++
("Created TensorFlow Lite XNNPACK delegate", oneDNN and CPU-feature notes, absl's
pre-initialisation warning) that bypass ``sys.stderr`` and Python logging, and that a user
cannot act on. Inside these blocks file descriptor 2 points at a temporary file; what was
written there goes to the log afterwards (INFO: ``tflite-edge -v`` shows it). One thread at
a time may redirect the process's stderr; Python code writing to stderr inside the block
is captured too, so the blocks stay short (imports, interpreter creation).

Imports only the standard library: devices use it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["capture_native_stderr", "native_stderr_logged"]

_LOCK = threading.RLock()


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 inside the block: the list gets one
    string when the block ends."""
    captured: list[str] = []
    with _LOCK, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                try:
                    sys.stderr.flush()  # Python's own buffered lines belong to the capture too
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


@contextlib.contextmanager
def native_stderr_logged(logger: logging.Logger, what: str, level: int = logging.INFO) -> Iterator[None]:
    """Run the block with C++ stderr output going to ``logger`` (as one record about ``what``)."""
    captured: list[str] = []
    try:
        with capture_native_stderr() as captured:
            yield
    finally:
        text = captured[0].strip() if captured else ""
        if text:
            logger.log(level, "%s:\n%s", what, text)
