"""Small composable checks for decoded JSON: each ``check(value, where)`` raises or returns.

``schema`` builds the telemetry message validators from these. Booleans are never numbers,
numbers must be finite, and every failure names the path of the offending field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import TelemetrySchemaError

__all__ = ["MAX_MAP_ENTRIES", "Check", "boolean", "fail", "integer", "list_of", "map_of", "nullable", "number",
           "obj", "one_of", "string"]

#: most entries in one JSON object of free keys (exit names, segment indices, context features)
MAX_MAP_ENTRIES = 256

Check = Callable[[Any, str], None]


def fail(where: str, message: str) -> None:
    raise TelemetrySchemaError(f"{where}: {message}")


def number(minimum: float | None = None, maximum: float | None = None) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(where, f"expected a number, got {type(value).__name__}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond float range, e.g. a 400-digit number
            finite = False
        if not finite:
            fail(where, "must be finite")
        if minimum is not None and value < minimum:
            fail(where, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            fail(where, f"must be <= {maximum}, got {value}")

    return check


def integer(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(where, f"expected an integer, got {type(value).__name__}")
    if value < 0:
        fail(where, f"must be >= 0, got {value}")


def string(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value:
        fail(where, "expected a non-empty string")


def boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        fail(where, f"expected true or false, got {type(value).__name__}")


def nullable(check: Check) -> Check:
    def wrapped(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)

    return wrapped


def one_of(*allowed: str) -> Check:
    def check(value: Any, where: str) -> None:
        if value not in allowed:
            fail(where, f"expected one of {list(allowed)}, got {value!r}")

    return check


def map_of(values: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            fail(where, f"expected an object, got {type(value).__name__}")
        if len(value) > MAX_MAP_ENTRIES:
            fail(where, f"more than {MAX_MAP_ENTRIES} entries")
        for key, item in value.items():
            if not key:
                fail(where, "empty key")
            values(item, f"{where}.{key}")

    return check


def obj(fields: Mapping[str, Check]) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            fail(where, f"expected an object, got {type(value).__name__}")
        missing = sorted(set(fields) - set(value))
        unknown = sorted(set(value) - set(fields))
        if missing:
            fail(where, f"missing field(s) {missing}")
        if unknown:
            fail(where, f"unknown field(s) {unknown}")
        for name, sub in fields.items():
            sub(value[name], f"{where}.{name}" if where else name)

    return check


def list_of(item: Check, max_items: int) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            fail(where, f"expected a list, got {type(value).__name__}")
        if len(value) > max_items:
            fail(where, f"more than {max_items} items")
        for i, element in enumerate(value):
            item(element, f"{where}[{i}]")

    return check
