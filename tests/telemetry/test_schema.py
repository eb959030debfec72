import copy
import json

import pytest

from tflite_edge.errors import TelemetrySchemaError
from tflite_edge.telemetry.schema import (
    MAX_MESSAGE_BYTES,
    ExperienceBatch,
    ExperienceRecord,
    LatencyStats,
    LinkStats,
    PowerStats,
    RequestStats,
    StatusMessage,
    SystemStats,
    TelemetryMessage,
    decode,
    encode,
    validate,
)


def telemetry() -> TelemetryMessage:
    return TelemetryMessage(
        device_id="pi-01",
        seq=3,
        time_unix_s=1764160000.25,
        window_s=5.0,
        requests=RequestStats(10, 8, 1, 1, {"exit_0": 6, "exit_2": 3}, {"1": 6, "3": 3}),
        latency=LatencyStats(12.5, 40.0, 51.0, 4.0, 6.5, 1.25, {"0": 2.0, "1": 2.0}),
        link=LinkStats(9.5, 7.0, 0.4, 12.3, 75264, 0, 1, 0.1, -56.0, 54.0),
        power=PowerStats(3251.2, 5080.0, 640.0, "hwmon:ina219:ch1", False, 41.5),
        system=SystemStats(37.5, 52.0, 41.0),
    )


def test_round_trip_of_every_kind():
    messages = [
        telemetry(),
        StatusMessage("pi-01", "online", 1764160000.0, None, "tflite-edge 0.1.0"),
        ExperienceBatch(
            "pi-01", 1, 1764160000.5,
            [ExperienceRecord(1764160000.4, {"uplink_mbps": 12.3, "power_mw": None}, {"exit": "exit_0", "partition": 1},
                              0.8, 12.5, 50.0, True, 41.5, "r-1")],
        ),
    ]
    for message in messages:
        payload = encode(message)
        assert json.loads(payload)["schema"] == message.schema
        assert list(json.loads(payload))[0] == "schema"
        assert decode(payload) == message


def mutate(path: str, value=None, delete: bool = False):
    doc = json.loads(encode(telemetry()))
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "delete", "error"),
    [
        ("seq", None, True, "missing field"),
        ("power.estimated", 1, False, "true or false"),
        ("power.power_mw", True, False, "expected a number"),
        ("power.power_mw", -1.0, False, ">= 0"),
        ("link.loss_ratio", 1.5, False, "<= 1"),
        ("link.bogus_ms", 1.0, False, "unknown field"),
        ("requests.count", 2.5, False, "integer"),
        ("requests.count", 3, False, "exceeds count"),
        ("requests.exits", {"exit_0": 20}, False, "more than requests.count"),
        ("device_id", "", False, "non-empty"),
        ("schema", "tflite-edge/telemetry/9", False, "unknown"),
        ("latency.device_segments_mean_ms", [1.0], False, "an object"),
    ],
)
def test_validation_is_strict(path, value, delete, error):
    with pytest.raises(TelemetrySchemaError, match=error):
        validate(mutate(path, value, delete))


def test_decode_rejects_non_json_non_finite_and_oversized():
    with pytest.raises(TelemetrySchemaError, match="not JSON"):
        decode(b"\xff{")
    doc = json.loads(encode(telemetry()))
    doc["power"]["power_mw"] = float("nan")
    with pytest.raises(TelemetrySchemaError, match="finite"):
        decode(json.dumps(doc))
    with pytest.raises(TelemetrySchemaError, match="exceeds"):
        decode(b" " * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(TelemetrySchemaError, match="JSON object"):
        validate([1, 2])


def test_experience_action_names_exit_and_partition():
    batch = ExperienceBatch("d", 1, 1.0, [ExperienceRecord(1.0, {}, {"exit": "e"}, 0.0, 1.0, None, None, None)])
    with pytest.raises(TelemetrySchemaError, match="partition"):
        encode(batch)


def test_status_state_is_online_or_offline():
    with pytest.raises(TelemetrySchemaError, match="online"):
        encode(StatusMessage("d", "sleeping", 1.0, None, "x"))


def test_docs_example_is_valid():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "telemetry.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    kinds = {validate(json.loads(block)) for block in blocks}
    assert kinds == {"tflite-edge/telemetry/1", "tflite-edge/status/1", "tflite-edge/experience/1"}


def test_encoding_does_not_modify_the_message():
    message = telemetry()
    before = copy.deepcopy(message)
    encode(message)
    assert message == before


def test_experience_action_may_carry_thresholds_but_partition_is_an_integer():
    record = ExperienceRecord(1.0, {}, {"exit": "final", "partition": 1, "thr_exit_1": 0.9, "hold": 4}, 0.0, 1.0,
                              None, None, None)
    assert decode(encode(ExperienceBatch("d", 1, 1.0, [record]))).records[0].action["thr_exit_1"] == 0.9
    bad = ExperienceRecord(1.0, {}, {"exit": "final", "partition": 1.5}, 0.0, 1.0, None, None, None)
    with pytest.raises(TelemetrySchemaError, match="partition"):
        encode(ExperienceBatch("d", 1, 1.0, [bad]))
