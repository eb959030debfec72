"""Fixed-seed fuzzing of every parser that reads untrusted bytes: zero crashes, zero hangs.

The same targets run with at least 10,000 cases each in ``bench/bench_fuzz.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bench.fuzz_targets import Target, make_targets
from tflite_edge.bundle import Bundle

EXAMPLES = 300
NAMES = ("wire", "handler", "manifest", "telemetry", "serial", "policy", "arrays", "bundle files")


@pytest.fixture(scope="module")
def targets(digits_bundle: Bundle) -> dict[str, Target]:
    return dict(zip(NAMES, make_targets(digits_bundle), strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_no_crash_no_hang(targets: dict[str, Target], name: str) -> None:
    target = targets[name]

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def fuzz(case: Any) -> None:
        crash = target.check(case)
        assert crash is None, crash

    fuzz()
    outcome = target.outcome
    # The strategies must reach past the first check: some inputs accepted, some rejected.
    assert outcome.rejected > 0
    assert outcome.accepted > 0 or name == "telemetry"
