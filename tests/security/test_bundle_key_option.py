"""`--bundle-key`: device and edge refuse a bundle that is unsigned or signed by another key."""

import shutil

import numpy as np

from tflite_edge.cli import main
from tflite_edge.security.signing import generate_key_pair, load_private_key, sign_bundle


def test_device_and_edge_use_only_bundles_signed_by_a_trusted_key(digits_bundle, digits_split, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, bundle)
    np.save(tmp_path / "x.npy", digits_split[2][:2])
    generate_key_pair(tmp_path / "ours.pem", tmp_path / "ours.pub.pem")
    generate_key_pair(tmp_path / "theirs.pem", tmp_path / "theirs.pub.pem")
    device = ["device", "--bundle", str(bundle), "--input", str(tmp_path / "x.npy"), "--json"]

    assert main([*device, "--bundle-key", str(tmp_path / "ours.pub.pem")]) == 2
    assert "has no bundle.sig" in capsys.readouterr().err

    sign_bundle(bundle, load_private_key(tmp_path / "theirs.pem"))
    assert main([*device, "--bundle-key", str(tmp_path / "ours.pub.pem")]) == 2
    capsys.readouterr()

    sign_bundle(bundle, load_private_key(tmp_path / "ours.pem"))
    assert main([*device, "--bundle-key", str(tmp_path / "ours.pub.pem")]) == 0
    assert capsys.readouterr().out.count('"exit"') == 2

    edge = ["edge", "--broker", "mqtt://127.0.0.1:1", "--bundle", str(bundle),
            "--bundle-key", str(tmp_path / "theirs.pub.pem")]
    assert main(edge) == 2  # refused before any connection is tried
    assert "error: " in capsys.readouterr().err
