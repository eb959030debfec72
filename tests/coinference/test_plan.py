"""Plans and the early-exit rule (pure logic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tflite_edge.bundle.manifest import Manifest
from tflite_edge.device.plan import ExitRule, Plan, entropy_nats, resolve_plan
from tflite_edge.errors import InputError


def test_top1_rule() -> None:
    rule = ExitRule({"early": 0.8})
    assert rule.confident("early", np.array([0.85, 0.15]))
    assert not rule.confident("early", np.array([0.6, 0.4]))
    assert not rule.confident("logits", np.array([1.0, 0.0]))  # no threshold, never early
    assert not ExitRule() and rule


def test_entropy_rule() -> None:
    assert entropy_nats(np.array([1.0, 0.0])) == 0.0
    assert math.isclose(entropy_nats(np.full(4, 0.25)), math.log(4))
    rule = ExitRule({"early": 0.5}, kind="entropy")
    assert rule.confident("early", np.array([0.95, 0.05]))
    assert not rule.confident("early", np.full(10, 0.1))


def test_bad_rules() -> None:
    with pytest.raises(InputError):
        ExitRule({"early": -1.0})
    with pytest.raises(InputError):
        ExitRule({"early": float("nan")})
    with pytest.raises(InputError):
        ExitRule({}, kind="margin")


def test_resolve_plan(tiny_manifest: Manifest) -> None:
    local = resolve_plan(tiny_manifest, Plan())
    assert (local.exit, local.partition, local.offload) == ("logits", 2, False)
    edge = resolve_plan(tiny_manifest, Plan(partition=0))
    assert edge.offload and edge.local_stop == 0
    split = resolve_plan(tiny_manifest, Plan("logits", 1, 20.0))
    assert split.offload and split.local_stop == 1 and split.deadline_ms == 20.0
    # The early exit is in segment 0: partition 1 already computes it, nothing to offload.
    early = resolve_plan(tiny_manifest, Plan("early", 1))
    assert not early.offload and early.exit_segment == 0


@pytest.mark.parametrize(
    "plan",
    [Plan("nope"), Plan(partition=3), Plan(partition=-1), Plan(deadline_ms=0), Plan(deadline_ms=float("inf")),
     Plan(rule=ExitRule({"nope": 0.5}))],
)
def test_bad_plans(tiny_manifest: Manifest, plan: Plan) -> None:
    with pytest.raises(InputError):
        resolve_plan(tiny_manifest, plan)


def test_token_bucket_emulates_a_link() -> None:
    from tflite_edge.device.link import TokenBucket

    link = TokenBucket(8.0, burst_bytes=1000)  # 1 MB/s
    assert link.delay_s(1000, now=0.0) == 0.0  # the burst goes at once
    assert link.delay_s(500, now=0.0) == pytest.approx(0.0005)  # then 500 B at 1 MB/s
    assert link.delay_s(500, now=0.0) == pytest.approx(0.001)  # queued behind the first
    assert link.delay_s(100, now=1.0) == 0.0  # refilled after a second, up to the burst
    assert link.transfer_ms(26_000) == pytest.approx(25.0)
    with pytest.raises(InputError):
        TokenBucket(0)
