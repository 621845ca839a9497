"""The self-tests' real Prometheus stack: Prometheus, a Pushgateway and node_exporter (Debian's packages),
each on a free loopback port with its own data (the TSDB, the Pushgateway's persistence file), started
together and stopped together.

node_exporter runs only its textfile collector over `textfile_dir` (where `--metrics` writes); Prometheus
scrapes it and the Pushgateway (honor_labels, so the pushed `job` and `target` stay) every second and
evaluates `rules` every second. `query()` and `alerts()` read Prometheus' own HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from mirakuru import HTTPExecutor

from pgbackup_verify_demo.kuma_server import free_port

START_TIMEOUT = 60


@dataclass
class PrometheusStack:
    workdir: Path
    rules: Path | None = None
    prometheus_port: int = field(default_factory=free_port)
    pushgateway_port: int = field(default_factory=free_port)
    node_port: int = field(default_factory=free_port)
    executors: list[HTTPExecutor] = field(default_factory=list)

    @property
    def textfile_dir(self) -> Path:
        return self.workdir / "textfile"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def pushgateway(self) -> str:
        return f"http://127.0.0.1:{self.pushgateway_port}"

    def config(self) -> dict[str, Any]:
        # JSON is YAML: Prometheus reads this file as written.
        return {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(self.rules)] if self.rules else [],
            "scrape_configs": [
                {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{self.node_port}"]}]},
                {"job_name": "pushgateway", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{self.pushgateway_port}"]}]},
            ],
        }

    def start(self) -> PrometheusStack:
        self.textfile_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tsdb").mkdir(exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(json.dumps(self.config(), indent=1))
        commands = [
            # Debian's default persists every group to /var/lib/prometheus: each stack keeps its own.
            (["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{self.pushgateway_port}",
              f"--persistence.file={self.workdir / 'pushgateway.data'}"],
             f"{self.pushgateway}/-/ready"),
            (["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{self.node_port}",
              "--collector.disable-defaults", "--collector.textfile",
              f"--collector.textfile.directory={self.textfile_dir}"], f"http://127.0.0.1:{self.node_port}/metrics"),
            (["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
              f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--web.enable-lifecycle"],
             f"{self.url}/-/ready"),
        ]
        try:
            for cmd, ready in commands:
                ex = HTTPExecutor(cmd, url=ready, method="GET", timeout=START_TIMEOUT, cwd=str(self.workdir))
                self.executors.append(ex)
                ex.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for ex in reversed(self.executors):
            ex.stop()
        self.executors.clear()

    def reload(self) -> None:
        """Re-read the configuration and rule files."""
        requests.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def _get(self, url: str, **kwargs: Any) -> requests.Response:
        """GET from the stack; a daemon found dead (a shared 2-core CI machine has seen one killed mid-module)
        is started again once on its own port and data, and the request repeated."""
        try:
            return requests.get(url, timeout=10, **kwargs)
        except requests.ConnectionError:
            for ex in self.executors:
                try:
                    alive = ex.running()
                except Exception:  # mirakuru raises when the process ended with an error code
                    alive = False
                if not alive:
                    with contextlib.suppress(Exception):  # forget the dead process (mirakuru's own stop)
                        ex.stop()
                    ex.start()
            return requests.get(url, timeout=10, **kwargs)

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = self._get(f"{self.url}/api/v1/query", params={"query": promql})
        r.raise_for_status()
        doc = r.json()
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def values(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Each series of an instant query: its labels (without __name__) -> value."""
        return {tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): float(s["value"][1])
                for s in self.query(promql)}

    def alerts(self) -> list[dict[str, Any]]:
        r = self._get(f"{self.url}/api/v1/alerts")
        r.raise_for_status()
        return list(r.json()["data"]["alerts"])

    def firing(self, alertname: str) -> set[str]:
        """Targets (or "" for a run-wide alert) for which `alertname` fires."""
        return {a["labels"].get("target", "") for a in self.alerts()
                if a["labels"]["alertname"] == alertname and a["state"] == "firing"}

    def wait_for(self, what: str, cond: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} not seen within {timeout:g} s; alerts: {self.alerts()}")
            time.sleep(0.5)
