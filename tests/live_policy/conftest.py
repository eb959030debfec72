"""Fixtures of the live policy loop: a signing key pair, a private broker and an edge worker
(the briefly trained policy, ``trained_policy``, is in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tflite_edge.security.signing import generate_key_pair


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The signer's key pair and an unrelated one: ``private``, ``public``, ``other_private``, ``other_public``."""
    root = tmp_path_factory.mktemp("keys")
    generate_key_pair(root / "signer.key", root / "signer.pub")
    generate_key_pair(root / "other.key", root / "other.pub")
    return {"private": root / "signer.key", "public": root / "signer.pub",
            "other_private": root / "other.key", "other_public": root / "other.pub"}


@pytest.fixture
def edge(broker, digits_bundle) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """An edge worker serving ``digits_bundle`` on ``broker`` (in this process)."""
    from tflite_edge.edge import EdgeWorker

    with EdgeWorker(broker.url, [digits_bundle]):
        yield
