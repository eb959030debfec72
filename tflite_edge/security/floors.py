"""Version floors: the highest signed versions a device has used, kept across restarts.

A signature says who made a bundle or a policy, not whether it is the newest: an old,
validly signed policy replayed on the policy topic (or an old signed bundle copied back)
would verify. A device therefore remembers, per bundle id, the highest policy version it
accepted, and per model name the highest ``bundle_version`` of a signed bundle it ran, and
refuses anything older. The floors live in a small JSON state file (``--state-file``),
written atomically (temporary file, fsync, rename) every time a floor rises::

    {"format": "tflite-edge-state/1",
     "policy": {"<bundle id>": 7},
     "bundle": {"<model name>": 3}}

A version equal to the floor is accepted: after a restart the retained policy message is
the one the device used last. A state file that exists but cannot be read is an error, not
an empty state: forgetting the floors is exactly what a rollback needs.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..errors import RollbackError, StateFileError
from ..files import read_regular

__all__ = ["STATE_FORMAT", "VersionFloors"]

STATE_FORMAT = "tflite-edge-state/1"
_KINDS = ("policy", "bundle")
MAX_STATE_BYTES = 1 << 20
_MAX_VERSION = (1 << 63) - 1


class VersionFloors:
    """The floors in ``path`` (created on the first raise); thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._floors: dict[str, dict[str, int]] = {kind: {} for kind in _KINDS}
        if self.path.exists() or self.path.is_symlink():
            self._floors = self._parse(read_regular(self.path, what="state file", max_bytes=MAX_STATE_BYTES,
                                                    error=StateFileError))

    def _parse(self, data: bytes) -> dict[str, dict[str, int]]:
        bad = f"state file {self.path} is corrupt; restore it from a backup (deleting it forgets the version floors)"
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise StateFileError(f"{bad}: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or set(doc) - {"format", *_KINDS}:
            raise StateFileError(bad)
        floors: dict[str, dict[str, int]] = {}
        for kind in _KINDS:
            table = doc.get(kind, {})
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and type(v) is int and 0 <= v <= _MAX_VERSION for k, v in table.items()
            ):
                raise StateFileError(bad)
            floors[kind] = dict(table)
        return floors

    def floor(self, kind: str, key: str) -> int:
        """The highest ``kind`` version accepted for ``key`` (0 when none)."""
        with self._lock:
            return self._floors[kind].get(key, 0)

    def check(self, kind: str, key: str, version: int, what: str) -> None:
        """``RollbackError`` when ``version`` is below the floor of (``kind``, ``key``)."""
        floor = self.floor(kind, key)
        if version < floor:
            raise RollbackError(
                f"{what} has version {version}, older than version {floor} already used here "
                f"(floor kept in {self.path}): refused as a rollback"
            )

    def raise_to(self, kind: str, key: str, version: int) -> None:
        """Record ``version`` as the floor of (``kind``, ``key``) if it is higher; persisted before returning."""
        with self._lock:
            if version <= self._floors[kind].get(key, 0):
                return
            updated = {k: dict(v) for k, v in self._floors.items()}
            updated[kind][key] = version
            self._write(updated)
            self._floors = updated

    def _write(self, floors: dict[str, dict[str, int]]) -> None:
        text = json.dumps({"format": STATE_FORMAT, **floors}, indent=2, sort_keys=True) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as e:
            raise StateFileError(f"cannot write the state file {self.path}: {e.strerror or e}") from e
