"""A Prometheus server process scraping the exporter: for ``tflite-edge monitor`` and the tests.

``PrometheusServer`` writes a scrape configuration for the given targets, starts the
``prometheus`` binary (Debian package ``prometheus``) on a loopback port with its storage
in a folder of ours, waits until it is ready and answers instant queries through the HTTP
API. Nothing here is needed to *use* the exporter with an existing Prometheus.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import TelemetryError

__all__ = ["PrometheusServer", "instant_query", "scrape_config"]


def scrape_config(targets: list[str], *, interval_s: float = 5.0, job: str = "tflite-edge") -> str:
    """A minimal prometheus.yml scraping ``targets`` (``HOST:PORT`` of ``/metrics``) every ``interval_s``."""
    listed = ", ".join(f"'{t}'" for t in targets)
    return (f"global:\n  scrape_interval: {interval_s:g}s\n  evaluation_interval: {interval_s:g}s\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{listed}]\n")


def instant_query(base_url: str, expr: str) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query to the Prometheus at ``base_url``."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise TelemetryError(f"query {expr!r} failed: {body}")
    return list(body["data"]["result"])


class PrometheusServer:
    """``prometheus`` on ``127.0.0.1:port`` scraping ``targets``; data and log under ``root``."""

    def __init__(self, root: Path, targets: list[str], *, port: int, interval_s: float = 5.0,
                 ready_timeout_s: float = 60.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise TelemetryError("prometheus is not installed: `make setup` installs it on Debian "
                                 "(apt-get install prometheus)")
        root.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{port}"
        config = root / "prometheus.yml"
        config.write_text(scrape_config(targets, interval_s=interval_s))
        self.log_path = root / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout_s
        try:
            while not self._ready():
                if time.monotonic() > deadline:
                    raise TelemetryError(f"prometheus did not become ready in {ready_timeout_s:g} s; see "
                                         f"{self.log_path}")
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            log = self.log_path.read_text(errors="replace")
            if "address already in use" in log:
                raise TelemetryError(f"prometheus cannot listen on {self.url}: the port is in use; choose another "
                                     "(tflite-edge monitor --prometheus-port PORT)")
            raise TelemetryError(f"prometheus exited (code {self.proc.returncode}); its log: {self.log_path}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant PromQL query."""
        return instant_query(self.url, expr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
