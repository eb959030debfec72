"""An arm64 (Raspberry Pi OS-like) userland for the arm64 test tier, built once and cached.

Debian bookworm for arm64 runs here under QEMU user-mode emulation (``qemu-user-static``
registered with binfmt_misc), with a device venv holding the real aarch64 wheels pinned in
requirements/device.txt (tflite-runtime, numpy<2, paho-mqtt, pyserial, cobs, cryptography).
The project's source is not installed in it: processes started by :func:`device_command`
see the repository at its host path through ``PYTHONPATH``, so the userland is rebuilt only
when its recipe (``RECIPE`` and requirements/device.txt) changes.

The build lives outside the repository, in ``/var/cache/tflite-edge/<arch>-<recipe hash>``
(``TFLITE_EDGE_USERLAND_CACHE`` moves it). Building needs root, ``debootstrap`` and
``qemu-user-static``; as root on Debian the missing tools are installed with apt-get.

Command line (used by ``make test`` / ``make test-arm64``)::

    python tests/arm64/userland.py prepare [--arch arm64]   # build if needed, or say why not
    python tests/arm64/userland.py status  [--arch arm64]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEVICE_REQUIREMENTS = REPO / "requirements" / "device.txt"
CACHE_ROOT = Path(os.environ.get("TFLITE_EDGE_USERLAND_CACHE", "/var/cache/tflite-edge"))
VENV = "/opt/device-venv"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_TOOLS = {"debootstrap": "debootstrap", "unshare": "util-linux", "update-binfmts": "binfmt-support"}

# Everything that decides what the userland contains. Change it (or device.txt) and the next
# `prepare` builds a new userland; bump "revision" when the build steps below change.
RECIPE: dict[str, dict[str, object]] = {
    "arm64": {
        "revision": 1,
        "suite": "bookworm",
        "debian_arch": "arm64",
        "qemu": "qemu-aarch64",
        "packages": ["python3", "python3-venv"],
    },
    # 32-bit Raspberry Pi OS stand-in. PyPI has armv7l wheels of tflite-runtime 2.14,
    # cryptography, paho-mqtt and pyserial, but none of numpy 1.26, cffi 2.1 or cobs: numpy
    # comes from Debian (1.24) and the venv sees it; the firmware bridge (cobs) and
    # signing (cffi) stay out of this userland.
    "armhf": {
        "revision": 1,
        "suite": "bookworm",
        "debian_arch": "armhf",
        "qemu": "qemu-arm",
        "packages": ["python3", "python3-venv", "python3-numpy"],
        "system_site_packages": True,
        "requirements": ["tflite-runtime==2.14.0", "paho-mqtt==2.2.0", "pyserial==3.5"],
    },
}


@dataclass(frozen=True)
class Userland:
    """A built userland: its root directory and the recipe it was built from."""

    arch: str
    root: Path

    @property
    def python(self) -> str:
        """The device venv's interpreter, as a path inside the userland."""
        return f"{VENV}/bin/python"


def recipe_hash(arch: str) -> str:
    """A short hash of the recipe and the device requirements."""
    recipe = RECIPE[arch]
    requirements = recipe["requirements"] if "requirements" in recipe else DEVICE_REQUIREMENTS.read_text()
    identity = {"recipe": recipe, "requirements": requirements}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def userland_path(arch: str) -> Path:
    return CACHE_ROOT / f"{arch}-{recipe_hash(arch)}"


def unavailable_reason(arch: str = "arm64") -> str | None:
    """Why this machine cannot build or run the userland, or None when it can (perhaps after
    installing the tools with apt-get as root)."""
    if platform.system() != "Linux":
        return f"the {arch} userland needs Linux (binfmt_misc, chroot)"
    if os.geteuid() != 0:
        return f"the {arch} userland needs root (chroot, mounts); run the tests as root to include it"
    missing = [tool for tool in (*HOST_TOOLS, "chroot") if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        return f"{', '.join(missing)} missing and no apt-get to install them"
    return None


def find_userland(arch: str = "arm64") -> Userland | None:
    """The cached userland for the current recipe, if built."""
    root = userland_path(arch)
    return Userland(arch, root) if (root / ".tflite-edge-recipe.json").is_file() else None


def _run(argv: Sequence[str], **kwargs: object) -> None:
    subprocess.run(list(argv), check=True, **kwargs)  # type: ignore[call-overload]


def _ensure_host_tools(arch: str) -> None:
    qemu = str(RECIPE[arch]["qemu"])
    packages = {pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    if not Path(f"/usr/libexec/qemu-binfmt/{arch_binfmt(arch)}-binfmt-P").exists() and shutil.which(
        f"{qemu}-static"
    ) is None:
        packages.add("qemu-user-static")
    if packages:
        print(f"installing {' '.join(sorted(packages))} from the Debian packages", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", *sorted(packages)], env=env, stdout=subprocess.DEVNULL)


def arch_binfmt(arch: str) -> str:
    return str(RECIPE[arch]["qemu"]).removeprefix("qemu-")


class CannotEmulate(RuntimeError):
    """This machine cannot register QEMU with binfmt_misc (e.g. an unprivileged container)."""


def _ensure_binfmt(arch: str) -> None:
    qemu = str(RECIPE[arch]["qemu"])
    try:
        if not (BINFMT / "register").exists():
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], stderr=subprocess.DEVNULL)
        entry = BINFMT / qemu
        if not entry.exists() or entry.read_text().splitlines()[0] != "enabled":
            _run(["update-binfmts", "--enable", qemu], stderr=subprocess.DEVNULL)
        flags = next((line for line in entry.read_text().splitlines() if line.startswith("flags:")), "")
    except (subprocess.CalledProcessError, OSError) as e:
        raise CannotEmulate(f"cannot register {qemu} with binfmt_misc ({e})") from e
    if "F" not in flags.split(":", 1)[-1]:
        # Without the fix-binary flag the kernel looks for the emulator inside the chroot.
        raise CannotEmulate(f"binfmt_misc entry {qemu} lacks the F flag ({flags.strip()}); reinstall qemu-user-static")


def ready(arch: str = "arm64", *, log: bool = True) -> Userland:
    """The userland for the current recipe, built if needed, with QEMU registered to run it.
    Raises ``CannotEmulate`` where the machine cannot run foreign binaries."""
    found = find_userland(arch)
    if found is None:
        return build(arch, log=log)
    _ensure_host_tools(arch)
    _ensure_binfmt(arch)
    return found


def debian_mirror() -> str:
    """The Debian mirror apt uses on this host (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt").glob("sources.list.d/*.list"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^URIs:\s*(\S+)|^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            url = match.group(1) or match.group(2)
            if url.rstrip("/").endswith("/debian"):
                return url
    return "http://deb.debian.org/debian"


def _chroot_shell(root: Path, script: str, binds: Iterable[str] = ()) -> list[str]:
    """argv running ``script`` with sh inside ``root``, with /proc, /dev and ``binds`` mounted in a
    private mount namespace (the mounts vanish with the process, however it ends)."""
    mounts = ['mount -t proc proc "$R/proc"', 'mount --rbind /dev "$R/dev"']
    for host in binds:
        mounts.append(f'mkdir -p "$R{host}" && mount --rbind {shlex.quote(host)} "$R{host}"')
    outer = f"set -e; R={shlex.quote(str(root))}; {'; '.join(mounts)}; exec chroot \"$R\" /bin/sh -c \"$0\" sh \"$@\""
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", outer, script]


def _base_path(arch: str) -> Path:
    recipe = RECIPE[arch]
    identity = {key: recipe[key] for key in ("revision", "suite", "debian_arch", "packages")}
    return CACHE_ROOT / f".{arch}-base-{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]}"


def _base_system(arch: str) -> Path:
    """The debootstrapped Debian system (the slow half of a build, kept so that a change of the
    device requirements rebuilds only the venv)."""
    base = _base_path(arch)
    if (base / "usr/bin/python3").exists():
        return base
    recipe = RECIPE[arch]
    partial = base.with_name(base.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        # In a private mount namespace: whatever debootstrap mounts in the target goes away
        # with it, so a failed build never leaves a mount under the directory removed below.
        _run(["unshare", "--mount", "--propagation", "private", "--",
              "debootstrap", f"--arch={recipe['debian_arch']}", "--variant=minbase",
              f"--include={','.join(recipe['packages'])}", str(recipe["suite"]), str(partial),  # type: ignore[arg-type]
              debian_mirror()], stdout=subprocess.DEVNULL)
        shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
        partial.rename(base)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return base


def build(arch: str = "arm64", *, log: bool = True) -> Userland:
    """Build the userland for the current recipe (idempotent; one builder at a time)."""
    target = userland_path(arch)
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f".{arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (found := find_userland(arch)) is not None:
            return found
        _ensure_host_tools(arch)
        _ensure_binfmt(arch)
        recipe = RECIPE[arch]
        staging = CACHE_ROOT / f".{target.name}.building"
        shutil.rmtree(staging, ignore_errors=True)
        started = time.monotonic()
        quiet = {} if log else {"stdout": subprocess.DEVNULL}
        try:
            print(f"building the {arch} userland in {target}", flush=True)
            base = _base_system(arch)
            _run(["cp", "-a", str(base), str(staging)])
            # pip inside verifies TLS with the host's CA bundle, which holds any extra CAs the
            # host trusts (a proxy's); handing it to pip avoids rehashing the store under QEMU.
            shutil.copy2(HOST_CA_BUNDLE, staging / "tmp" / "host-ca.crt")
            if "requirements" in recipe:  # pinned here, installed without their dependencies
                (staging / "tmp" / "device.txt").write_text("\n".join(recipe["requirements"]) + "\n")  # type: ignore[arg-type]
                pip_flags = "--no-deps"
            else:
                shutil.copy2(DEVICE_REQUIREMENTS, staging / "tmp" / "device.txt")
                # cobs has no aarch64 wheel; its sdist falls back to pure Python without a compiler.
                pip_flags = "--only-binary=:all: --no-binary=cobs"
            venv_flags = "--system-site-packages " if recipe.get("system_site_packages") else ""
            # env -i keeps the host's PIP_* settings (find-links, cert paths) out of the userland;
            # PIP_CERT (not --cert) also reaches the pip that installs sdists' build requirements.
            script = (
                f"set -e; python3 -m venv {venv_flags}{VENV}; "
                f"env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt {VENV}/bin/pip install -q "
                f"--disable-pip-version-check --no-cache-dir {pip_flags} -r /tmp/device.txt; "
                "rm /tmp/device.txt /tmp/host-ca.crt"
            )
            _run(_chroot_shell(staging, script), **quiet)
            shutil.rmtree(staging / "var/cache/apt/archives", ignore_errors=True)
            (staging / ".tflite-edge-recipe.json").write_text(
                json.dumps({"arch": arch, "recipe": recipe, "hash": recipe_hash(arch),
                            "build_seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n"
            )
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for stale in CACHE_ROOT.glob(f"{arch}-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
        for stale in CACHE_ROOT.glob(f".{arch}-base-*"):
            if stale != _base_path(arch):
                shutil.rmtree(stale, ignore_errors=True)
        print(f"built the {arch} userland in {time.monotonic() - started:.0f} s", flush=True)
        return Userland(arch, target)


def device_command(
    userland: Userland, argv: Sequence[str], *, binds: Iterable[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """argv that runs ``argv`` (a command inside the userland, e.g. ``[userland.python, "-m",
    "tflite_edge", ...]``) in the userland with the repository and ``binds`` visible at their
    host paths. The process is the returned command's own PID (exec all the way down), so
    stopping it stops the device."""
    mounts = sorted({str(REPO), *(str(Path(b).resolve()) for b in binds)})
    variables = {"PATH": f"{VENV}/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                 "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    script = "exec env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items()) + ' "$@"'
    return [*_chroot_shell(userland.root, script, mounts), *argv]


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["prepare", "status"])
    parser.add_argument("--arch", choices=sorted(RECIPE), default="arm64")
    args = parser.parse_args(argv)
    reason = unavailable_reason(args.arch)
    found = find_userland(args.arch)
    if args.action == "status":
        print(f"{args.arch} userland: {found.root if found else 'not built'} (recipe {recipe_hash(args.arch)})"
              + (f"; cannot build here: {reason}" if reason else ""))
        return 0
    if reason is not None:
        print(f"{args.arch} tier skipped: {reason}")
        return 0
    try:
        ready(args.arch)
    except CannotEmulate as e:
        print(f"{args.arch} tier skipped: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
