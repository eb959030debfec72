"""A private Mosquitto broker on a loopback port, for the demo and the tests.

``MosquittoBroker`` writes a configuration into a temporary directory, starts the
``mosquitto`` binary on a free (or given) port bound to 127.0.0.1 and waits until it
accepts connections. It can be stopped and restarted on the same port, which the fault
tests use to simulate a broker outage.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from ..errors import BrokerError

__all__ = ["BrokerError", "MosquittoBroker", "free_port"]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """A Mosquitto 2.x process listening on ``host:port`` (loopback by default).

    ``extra_config`` lines are appended to the generated configuration (for TLS, ACLs or
    password files). Use as a context manager or call ``start()``/``stop()``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_config: str = "",
        allow_anonymous: bool = True,
        binary: str = "mosquitto",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.extra_config = extra_config
        self.allow_anonymous = allow_anonymous
        self.binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="tflite-edge-broker-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._dir / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> Path:
        config = self._dir / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
                    "persistence false",
                    # stderr goes to a file this process opens: Mosquitto started as root
                    # drops to its own user, which could not write into our temp folder.
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "max_queued_messages 10000",
                    self.extra_config,
                    "",
                ]
            )
        )
        return config

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        """Start the broker and wait until it accepts TCP connections."""
        if self.running:
            return self
        executable = shutil.which(self.binary) or (
            f"/usr/sbin/{self.binary}" if Path(f"/usr/sbin/{self.binary}").exists() else None
        )
        if executable is None:
            raise BrokerError(
                f"{self.binary} is not installed: apt-get install mosquitto (or `make setup`), "
                "or pass --broker URL to use an existing MQTT 5 broker"
            )
        config = self._write_config()
        log_file = open(self.log_path, "ab")  # noqa: SIM115  # closed in stop()
        self._process = subprocess.Popen([executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log_file)
        self._log_file = log_file
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                self._close_log()
                logged = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise BrokerError(f"mosquitto exited at start on port {self.port}: {logged.strip()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info("mosquitto listening on %s", self.url)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on {self.url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        """Stop the broker process (clients see a lost connection)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down for ``down_s`` seconds, and start again on the same port."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
