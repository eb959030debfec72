"""The root package's public names: what ``from tflite_edge import *`` gives, and nothing heavy."""

from __future__ import annotations

import subprocess
import sys
import types

import tflite_edge

EXPECTED = {"Bundle", "BundleRunner", "Manifest", "TfliteEdgeError", "__version__", "load_bundle"}


def test_root_all_is_exactly_the_public_api() -> None:
    assert set(tflite_edge.__all__) == EXPECTED
    assert len(tflite_edge.__all__) == len(EXPECTED)  # no duplicates
    for name in tflite_edge.__all__:
        assert hasattr(tflite_edge, name), name
    # Besides __all__, only submodules (attributes once imported) are visible.
    public = {name for name, value in vars(tflite_edge).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == EXPECTED - {"__version__"}


def test_star_import_gives_the_same_names() -> None:
    namespace: dict[str, object] = {}
    exec("from tflite_edge import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED


def test_every_subpackage_all_names_exist() -> None:
    import importlib

    for module in ("bundle", "runtime", "transport", "device", "edge", "telemetry", "errors"):
        loaded = importlib.import_module(f"tflite_edge.{module}")
        for name in getattr(loaded, "__all__", ()):
            assert hasattr(loaded, name), f"tflite_edge.{module}.__all__ names {name!r}, which it lacks"


def test_importing_the_root_package_stays_light() -> None:
    code = "import sys, tflite_edge; print(sorted(m for m in ('tensorflow', 'tf_agents', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
