"""The fuzz targets live in bench/fuzz_targets.py, shared with bench/bench_fuzz.py."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
