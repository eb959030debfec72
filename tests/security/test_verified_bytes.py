"""What is verified is what runs: swapping a signed bundle's directory after the check serves nothing unsigned.

The attack: `edge --bundle-key` verifies the signed bundle, then the directory (or its
bundle.json) is replaced by a different, self-consistent, unsigned bundle before the worker
processes load it. Every process must run the verified bytes, not re-read the path.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.bundle import MANIFEST_NAME, load_bundle
from tflite_edge.bundle.store import sha256_hex
from tflite_edge.device import DeviceRuntime, Plan
from tflite_edge.errors import SignatureError
from tflite_edge.security.signing import (
    generate_key_pair,
    load_private_key,
    load_public_keys,
    sign_bundle,
    verify_bundle,
)
from tflite_edge.transport.broker import MosquittoBroker


def unsigned_variant(source: Path, target: Path) -> str:
    """A valid bundle at ``target`` that differs from ``source`` (padded last segment, new id); returns its id."""
    shutil.copytree(source, target)
    (target / "bundle.sig").unlink(missing_ok=True)
    manifest = load_bundle(target).manifest
    last = manifest.segments[-1]
    data = (target / last.file).read_bytes() + b"\0" * 16  # TFLite ignores trailing bytes
    (target / last.file).write_bytes(data)
    segments = (*manifest.segments[:-1], dataclasses.replace(last, sha256=sha256_hex(data), size_bytes=len(data)))
    changed = dataclasses.replace(manifest, segments=segments, bundle_id="")
    (target / MANIFEST_NAME).write_text(changed.to_json())
    return load_bundle(target).bundle_id


@pytest.fixture
def signed(digits_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, bundle)
    generate_key_pair(tmp_path / "release.pem", tmp_path / "release.pub")
    sign_bundle(bundle, load_private_key(tmp_path / "release.pem"))
    return bundle, tmp_path / "release.pub"


def swap(bundle: Path) -> tuple[Path, str]:
    """Move the signed bundle aside and put an unsigned one at its path; returns (moved path, unsigned id)."""
    aside = bundle.with_name("signed-aside")
    bundle.rename(aside)
    return aside, unsigned_variant(aside, bundle)


def offload_results(broker_url: str, bundle, x: np.ndarray) -> list:
    with DeviceRuntime(bundle, broker_url=broker_url, device_id="pi-1") as device:
        return [device.run(sample, Plan("final", 1, 5000.0)) for sample in x]


def test_verify_keeps_the_bytes_it_checked(signed, digits_split):
    bundle_dir, public = signed
    verified = verify_bundle(bundle_dir, load_public_keys([public]))
    signed_id = verified.bundle_id
    _, unsigned_id = swap(bundle_dir)
    assert unsigned_id != signed_id
    # The directory now holds another bundle; the verified object still runs the signed bytes.
    assert [sha256_hex(verified.read_segment(i)) for i in range(3)] == [s.sha256 for s in verified.manifest.segments]
    assert load_bundle(bundle_dir).bundle_id == unsigned_id


def test_directory_swapped_after_bundle_json_is_hashed_is_never_used(signed, monkeypatch):
    """The attacker swaps the directory right after bundle.json's bytes were hashed: the result is
    the signed bundle or a refusal, never the unsigned one."""
    import tflite_edge.security.signing as signing

    bundle_dir, public = signed
    signed_id = load_bundle(bundle_dir).bundle_id
    real = signing.canonical_json_bytes
    unsigned: list[str] = []

    def hash_then_swap(data: bytes) -> bytes:
        digest = real(data)
        if not unsigned:
            unsigned.append(swap(bundle_dir)[1])
        return digest

    monkeypatch.setattr(signing, "canonical_json_bytes", hash_then_swap)
    try:
        got = verify_bundle(bundle_dir, load_public_keys([public])).bundle_id
    except SignatureError:
        got = None
    assert unsigned and got != unsigned[0]
    assert got in (None, signed_id)


def test_every_worker_process_serves_the_verified_bundle(signed, digits_split):
    from tflite_edge.edge import serve

    bundle_dir, public = signed
    verified = verify_bundle(bundle_dir, load_public_keys([public]))
    _, unsigned_id = swap(bundle_dir)
    x = digits_split[2][:8]
    with MosquittoBroker() as broker:
        stop, ready = threading.Event(), threading.Event()
        server = threading.Thread(target=serve, args=(broker.url, [verified]),
                                  kwargs={"workers": 2, "stop": stop, "on_ready": ready.set}, daemon=True)
        server.start()
        try:
            assert ready.wait(90), "edge workers did not start"
            results = offload_results(broker.url, verified, x)
            swapped = offload_results(broker.url, load_bundle(bundle_dir), x[:1])
        finally:
            stop.set()
            server.join(30)
    assert all(r.ran_on == "split" and not r.fell_back for r in results), [(r.ran_on, r.error) for r in results]
    # Not served: either the device sees no worker present for that bundle, or a worker answers unknown_bundle.
    error = swapped[0].error or ""
    assert swapped[0].fell_back and ("unknown" in error or f"serving bundle {unsigned_id}" in error), error


def test_edge_cli_with_workers_serves_what_it_verified_even_if_the_directory_is_swapped(
    signed, digits_split, monkeypatch, capsys
):
    """`edge --bundle-key --workers 2`: the directory is swapped right after the signature check."""
    import tflite_edge.cli.edge as edge_cli
    import tflite_edge.edge as edge_pkg
    from tflite_edge.cli import main

    bundle_dir, public = signed
    real_open, real_serve = edge_cli.open_bundle, edge_pkg.serve
    ready = threading.Event()
    aside: list[Path] = []

    def open_then_swap(path, keys, *rest):
        bundle = real_open(path, keys, *rest)
        aside.append(swap(Path(path))[0])  # between the check and the workers' start
        return bundle

    def serve_and_signal(*args, on_ready=None, **kwargs):
        def both() -> None:
            if on_ready is not None:
                on_ready()
            ready.set()
        return real_serve(*args, on_ready=both, **kwargs)

    monkeypatch.setattr(edge_cli, "open_bundle", open_then_swap)
    monkeypatch.setattr(edge_pkg, "serve", serve_and_signal)
    x = digits_split[2][:6]
    results: list = []
    errors: list[BaseException] = []

    with MosquittoBroker() as broker:
        def device() -> None:
            try:
                if ready.wait(90):
                    results.extend(offload_results(broker.url, load_bundle(aside[0]), x))
            except BaseException as e:  # reported by the assertion below
                errors.append(e)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # the CLI stops on SIGTERM

        previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        thread = threading.Thread(target=device, daemon=True)
        thread.start()
        try:
            code = main(["edge", "--broker", broker.url, "--bundle", str(bundle_dir), "--bundle-key", str(public),
                         "--workers", "2"])
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
            thread.join(30)
    assert code == 0 and not errors, errors
    assert len(results) == len(x)
    assert all(r.ran_on == "split" and not r.fell_back for r in results), [(r.ran_on, r.error) for r in results]
