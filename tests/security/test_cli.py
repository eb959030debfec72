"""tflite-edge keys / sign / verify / broker-config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.cli import main


def test_keys_sign_verify_round_trip(digits_bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, bundle)
    monkeypatch.setenv("RELEASE_KEY_PASSWORD", "correct horse")
    assert main(["keys", "generate", "-o", str(tmp_path / "release.key"),
                 "--password-env", "RELEASE_KEY_PASSWORD"]) == 0
    assert main(["keys", "generate", "-o", str(tmp_path / "other.key")]) == 0
    assert main(["sign", str(bundle), "--key", str(tmp_path / "release.key")]) == 2  # encrypted: needs the password
    assert "password" in capsys.readouterr().err
    assert main(["sign", str(bundle), "--key", str(tmp_path / "release.key"),
                 "--password-env", "RELEASE_KEY_PASSWORD"]) == 0
    assert (bundle / "bundle.sig").is_file()
    capsys.readouterr()
    assert main(["verify", str(bundle), "--public-key", str(tmp_path / "release.key.pub"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["kind"] == "bundle"
    assert main(["verify", str(bundle), "--public-key", str(tmp_path / "other.key.pub")]) == 2
    assert "not trusted" in capsys.readouterr().err
    segment = bundle / "segment_2.tflite"
    segment.write_bytes(segment.read_bytes() + b"\x00")
    assert main(["verify", str(bundle), "--public-key", str(tmp_path / "release.key.pub")]) == 2
    assert "segment 2" in capsys.readouterr().err


def test_sign_and_verify_a_policy_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.tflite").write_bytes(b"TFL3")
    (policy / "policy.json").write_text("{}")
    assert main(["keys", "generate", "-o", str(tmp_path / "k")]) == 0
    assert main(["sign", str(policy), "--key", str(tmp_path / "k")]) == 0
    assert main(["verify", str(policy), "--public-key", str(tmp_path / "k.pub")]) == 0
    assert "OK" in capsys.readouterr().out


def test_broker_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], digits_bundle: Bundle) -> None:
    out = tmp_path / "broker"
    assert main(["broker-config", "--devices", "pi-1,pi-2", "--edge", "edge-1", "--reader", "dash",
                 "--no-plain", "--tls-port", "8883", "--cert", "s.crt", "--key", "s.key", "--ca", "ca.crt",
                 "--require-certificate", "-o", str(out)]) == 0
    conf = (out / "mosquitto.conf").read_text()
    assert "listener 8883" in conf and "require_certificate true" in conf and "listener 1883" not in conf
    roles = {r["rolename"]: r["acls"] for r in json.loads((out / "dynamic-security.json").read_text())["roles"]}
    assert {"acltype": "publishClientSend", "topic": "tflite-edge/v1/req/+", "priority": 0, "allow": True} in roles[
        "device:pi-2"]
    assert {"acltype": "subscribeLiteral", "topic": "tflite-edge/v1/dev/pi-2/res", "priority": 0, "allow": True} in \
        roles["device:pi-2"]
    assert "memory_limit 1073741824" in conf and "max_queued_bytes 67108864" in conf
    credentials = json.loads((out / "credentials.json").read_text())
    assert credentials["broker_url_template"].startswith("mqtts://") and set(credentials["users"]) == {
        "pi-1", "pi-2", "edge-1", "dash"}
    capsys.readouterr()
    assert main(["broker-config", "--devices", "pi-1", "--bundle", "abc", "-o", str(tmp_path / "b2")]) == 0
    device = json.loads((tmp_path / "b2" / "dynamic-security.json").read_text())["roles"][0]["acls"]
    assert [a["topic"] for a in device if a["acltype"] == "publishClientSend"][0] == "tflite-edge/v1/req/abc"
    bundle_dir = str(digits_bundle.path)
    assert main(["broker-config", "--devices", "pi-1", "--bundle", bundle_dir, "-o", str(tmp_path / "b3")]) == 0
    device = json.loads((tmp_path / "b3" / "dynamic-security.json").read_text())["roles"][0]["acls"]
    assert device[0]["topic"] == f"tflite-edge/v1/req/{digits_bundle.bundle_id}"
    capsys.readouterr()
    for bad in (["--devices", "pi/1"], ["--devices", "+"], ["--devices", "a b"], ["--devices", "x", "--edge", "x"],
                ["--devices", "x", "--bundle", "a/b"], ["--devices", "x", "--dynsec-plugin", "/nonexistent.so"],
                ["--devices", "x,x-policy"], ["--devices", "x", "--max-queued-bytes", "10"],
                ["--devices", "x", "--cert", "s.crt"], ["--devices", "x", "--tls-port", "8883"], []):
        assert main(["broker-config", *bad, "-o", str(tmp_path / "bad")]) == 2, bad
        assert capsys.readouterr().err.startswith("error:")
