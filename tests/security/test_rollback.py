"""Bundle rollback: signed bundles carry a version; with --state-file a device or edge never goes below it."""

from __future__ import annotations

import json
import shutil

import numpy as np

from tflite_edge.bundle import MANIFEST_NAME, load_bundle
from tflite_edge.cli import main
from tflite_edge.security.signing import generate_key_pair, load_public_keys, verify_bundle


def test_signed_bundle_versions_never_go_down_on_a_device(digits_bundle, digits_split, tmp_path, capsys):
    generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub")
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for path, version in ((v1, 1), (v2, 2)):
        shutil.copytree(digits_bundle.path, path)
        assert main(["sign", str(path), "--key", str(tmp_path / "k.pem"), "--bundle-version", str(version)]) == 0
    capsys.readouterr()
    # The version is inside the signed bundle.json: editing it breaks the signature.
    assert json.loads((v2 / MANIFEST_NAME).read_text())["bundle_version"] == 2
    assert verify_bundle(v2, load_public_keys([tmp_path / "k.pub"])).manifest.bundle_version == 2
    assert load_bundle(v2).bundle_id == digits_bundle.bundle_id  # a release number, not new content

    np.save(tmp_path / "x.npy", digits_split[2][:1])
    state = tmp_path / "state.json"

    def device(bundle) -> tuple[int, str]:
        code = main(["device", "--bundle", str(bundle), "--input", str(tmp_path / "x.npy"), "--json",
                     "--bundle-key", str(tmp_path / "k.pub"), "--state-file", str(state)])
        return code, capsys.readouterr().err

    assert device(v1)[0] == 0
    assert device(v2)[0] == 0
    assert json.loads(state.read_text())["bundle"] == {digits_bundle.manifest.model_name: 2}
    code, err = device(v1)  # the older signed bundle, after a "restart"
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and "rollback" in err, err
    assert device(v2)[0] == 0

    edge = ["edge", "--broker", "mqtt://127.0.0.1:1", "--bundle", str(v1), "--bundle-key", str(tmp_path / "k.pub"),
            "--state-file", str(state)]
    assert main(edge) != 0  # refused before any connection is tried
    assert "rollback" in capsys.readouterr().err


def test_unversioned_signed_bundle_is_refused_once_a_floor_exists(digits_bundle, digits_split, tmp_path, capsys):
    generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub")
    plain, versioned = tmp_path / "plain", tmp_path / "versioned"
    shutil.copytree(digits_bundle.path, plain)
    shutil.copytree(digits_bundle.path, versioned)
    assert main(["sign", str(plain), "--key", str(tmp_path / "k.pem")]) == 0
    assert main(["sign", str(versioned), "--key", str(tmp_path / "k.pem"), "--bundle-version", "5"]) == 0
    assert "bundle_version" not in json.loads((plain / MANIFEST_NAME).read_text())  # old readers still load it
    np.save(tmp_path / "x.npy", digits_split[2][:1])
    base = ["device", "--input", str(tmp_path / "x.npy"), "--bundle-key", str(tmp_path / "k.pub"),
            "--state-file", str(tmp_path / "s.json")]
    assert main([*base, "--bundle", str(versioned)]) == 0
    assert main([*base, "--bundle", str(plain)]) != 0
    assert "version 0, older than version 5" in capsys.readouterr().err
