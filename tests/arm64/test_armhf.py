"""32-bit ARM (armv7l, Raspberry Pi OS 32-bit on a Pi 3 or Zero 2): the same bundle through
tflite-runtime's armv7l wheel gives the same numbers as everywhere else. The armhf userland
is not built by `make test` (it costs another first build); build it with
`python tests/arm64/userland.py prepare --arch armhf` and this test runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.runtime import BundleRunner

from .userland import CannotEmulate, device_command, find_userland, ready, unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.arm64]


def test_armhf_run_equals_the_builtin_kernels_everywhere(digits_bundle: Bundle, digits_split, tmp_path: Path) -> None:
    reason = unavailable_reason("armhf")
    if reason is None and find_userland("armhf") is None:
        reason = "the armhf userland is not built: python tests/arm64/userland.py prepare --arch armhf"
    if reason is not None:
        pytest.skip(reason)
    try:
        armhf = ready("armhf", log=False)
    except CannotEmulate as e:
        pytest.skip(str(e))
    x = digits_split[2]
    np.save(tmp_path / "x.npy", x)
    script = ("import json, platform, sys; from tflite_edge.cli import main; code = main(sys.argv[1:]); "
              "print(json.dumps({'machine': platform.machine(), 'tf': 'tensorflow' in sys.modules, 'code': code}))")
    done = subprocess.run(
        device_command(armhf, [armhf.python, "-c", script, "run", str(digits_bundle.path), "--input",
                               str(tmp_path / "x.npy"), "-o", str(tmp_path / "armhf.npz")],
                       binds=[tmp_path, digits_bundle.path]),
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info == {"machine": "armv7l", "tf": False, "code": 0}
    reference = BundleRunner(digits_bundle, kernels="builtin").predict(x)
    with np.load(tmp_path / "armhf.npz") as on_device:
        for name, value in reference.items():
            np.testing.assert_array_equal(on_device[name], value, err_msg=name)
