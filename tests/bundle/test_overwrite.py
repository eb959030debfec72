"""`--force` / ``overwrite=True`` replaces only a bundle, keeps usual permissions, touches no sibling."""

from __future__ import annotations

import os
import stat

import pytest

from tflite_edge.bundle import load_bundle, write_bundle
from tflite_edge.cli import main
from tflite_edge.errors import BundleError


@pytest.fixture
def files(digits_bundle):
    files = {s.file: digits_bundle.read_segment(s.index) for s in digits_bundle.manifest.segments}
    files.update({f.file: digits_bundle.read_fused(f.start, f.stop) for f in digits_bundle.manifest.fused})
    return files


def test_force_refuses_a_directory_that_is_not_a_bundle(digits_bundle, files, tmp_path):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"\xff\xd8 not a bundle")
    with pytest.raises(BundleError, match="not a bundle directory"):
        write_bundle(target, digits_bundle.manifest, files, overwrite=True)
    assert (target / "holiday.jpg").read_bytes() == b"\xff\xd8 not a bundle"


def test_force_refuses_a_bundle_directory_holding_other_files(digits_bundle, files, tmp_path):
    target = tmp_path / "bundle"
    write_bundle(target, digits_bundle.manifest, files)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"notes\.txt"):
        write_bundle(target, digits_bundle.manifest, files, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine"


def test_force_refuses_a_file(digits_bundle, files, tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("keep me")
    with pytest.raises(BundleError, match="not a bundle"):
        write_bundle(target, digits_bundle.manifest, files, overwrite=True)
    assert target.read_text() == "keep me"


def test_force_replaces_a_bundle_and_leaves_an_old_sibling_alone(digits_bundle, files, tmp_path):
    target = tmp_path / "bundle"
    write_bundle(target, digits_bundle.manifest, files)
    (target / "bundle.sig").write_text("{}")  # a signed bundle is still a bundle
    sibling = tmp_path / ".bundle.old"
    sibling.mkdir()
    (sibling / "precious").write_text("not ours")
    again = write_bundle(target, digits_bundle.manifest, files, overwrite=True)
    assert again.bundle_id == digits_bundle.bundle_id
    assert (sibling / "precious").read_text() == "not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.old", "bundle"]  # nothing staged left over


def test_a_new_bundle_gets_the_usual_permissions(digits_bundle, files, tmp_path):
    previous = os.umask(0o022)
    try:
        bundle = write_bundle(tmp_path / "bundle", digits_bundle.manifest, files)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(bundle.path.stat().st_mode) == 0o755
    assert stat.S_IMODE((bundle.path / "segment_0.tflite").stat().st_mode) == 0o644
    assert load_bundle(bundle.path).bundle_id == digits_bundle.bundle_id


def test_convert_force_refuses_a_non_bundle_before_loading_the_model(tmp_path, capsys):
    target = tmp_path / "work"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    # The model file is not a model: the refusal must come first, before it is loaded.
    (tmp_path / "model.keras").write_text("not a model")
    code = main(["convert", str(tmp_path / "model.keras"), "-o", str(target), "--force", "--quantize", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "not a bundle" in err, err
    assert (target / "thesis.tex").read_text() == "years of work"
