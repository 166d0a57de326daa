"""A real Prometheus server (Debian's package) on a loopback address, scraping every
second the targets it is given, and asked through its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from .ports import wait_for_port
from .smtpserver import fresh_ip


class Prometheus:
    def __init__(self, targets: dict[str, str]) -> None:
        """``targets``: job name -> ``ip:port`` of a /metrics."""
        self.targets = targets
        self.ip = fresh_ip()
        self.port = 9090
        self.folder = tempfile.mkdtemp(prefix="qremote-prometheus-")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (scripts/setup installs it)")
        jobs = "".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['{where}']\n"
            for name, where in self.targets.items()
        )
        config = os.path.join(self.folder, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n")
            f.write(f"scrape_configs:\n{jobs}")
        self.log = open(os.path.join(self.folder, "log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(self.folder, 'data')}",
                f"--web.listen-address={self.ip}:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        wait_for_port(self.ip, self.port, "prometheus", 30)
        return self

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` gives now."""
        url = f"http://{self.ip}:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            data = json.loads(answer.read())
        assert data["status"] == "success", data
        return data["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The one sample ``expr`` gives (summed), or None when there is none."""
        result = self.query(f"sum({expr})")
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, want: float, seconds: float = 30) -> float | None:
        """``expr``'s value once it is ``want`` (a scrape may not have happened yet);
        what it last was if it never became that."""
        deadline = time.monotonic() + seconds
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(0.3)
        return got

    def names(self) -> set[str]:
        url = f"http://{self.ip}:{self.port}/api/v1/label/__name__/values"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return set(json.loads(answer.read())["data"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
