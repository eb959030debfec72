"""Why requests fell back, said once at the end of a run instead of on every result line."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

__all__ = ["FallbackSummary"]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class FallbackSummary:
    """Counts results, offloads and fall-backs by reason (numbers in reasons ignored)."""

    def __init__(self) -> None:
        self.results = 0
        self.offloaded = 0
        self.fell_back = 0
        self._reasons: Counter[str] = Counter()
        self._example: dict[str, str] = {}

    def add(self, result: Any) -> None:
        self.results += 1
        self.offloaded += bool(result.offloaded)
        if result.fell_back:
            self.fell_back += 1
            reason = result.error or "unknown reason"
            key = _NUMBER.sub("N", reason)
            self._reasons[key] += 1
            self._example.setdefault(key, reason)

    @property
    def nothing_offloaded(self) -> bool:
        """Offloading was planned for some request, and no request was offloaded."""
        return self.fell_back > 0 and self.offloaded == 0

    def lines(self) -> list[str]:
        """One line about the fall-backs (none when nothing fell back), most common reason first."""
        if not self.fell_back:
            return []
        reasons = "; ".join(f"{self._example[key]} ({count})" for key, count in self._reasons.most_common(3))
        more = len(self._reasons) - 3
        if more > 0:
            reasons += f"; {more} other reason(s)"
        return [f"{self.fell_back} of {self.results} requests were answered on the device instead of the edge "
                f"({self.offloaded} offloaded): {reasons}"]
