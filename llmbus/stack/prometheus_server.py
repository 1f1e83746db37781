"""A throwaway Prometheus on loopback that scrapes llmbus's processes and evaluates alert
rules: the monitoring test checks the dashboard's queries and the alert rules with it.

The binaries come from Debian's ``prometheus`` package, unpacked by ``scripts/setup.sh``
into ``<cache>/prometheus-<version>/usr/bin`` (no root, no service of its own).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmbus.errors import SetupError
from llmbus.stack.processes import read_pid, terminate, wait_for_port

HOST = "127.0.0.1"


def find_prometheus(cache_dir: Path) -> Path:
    """The folder holding ``prometheus`` and ``promtool`` (the newest unpacked version)."""
    found = sorted(cache_dir.glob("prometheus-*/usr/bin/promtool"))
    if not found or not (found[-1].parent / "prometheus").exists():
        raise SetupError(f"prometheus not found in {cache_dir}/prometheus-*: run `make setup`")
    return found[-1].parent


def promtool_check_rules(bin_dir: Path, *rule_files: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules``: syntax, PromQL of every expression, templates of labels and
    annotations. The caller reads ``returncode`` and ``stdout``/``stderr``."""
    return subprocess.run(
        [str(bin_dir / "promtool"), "check", "rules", *map(str, rule_files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # it parses a few files; only a hung binary takes longer
    )


@dataclass(frozen=True)
class PrometheusServer:
    bin_dir: Path
    home: Path
    """Config, TSDB, log and pid file."""
    port: int
    jobs: Mapping[str, Sequence[str]]
    """Scrape job name -> its ``host:port`` targets (each serving ``/metrics``)."""
    rule_files: Sequence[Path] = ()
    scrape_interval_s: int = 1
    """Also the rule evaluation interval; 1 s lets a test see data seconds after traffic."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "prometheus.log"

    @property
    def _pid_file(self) -> Path:
        return self.home / "prometheus.pid"

    def start(self) -> None:
        """Start it and return once ``/-/ready`` answers (rules loaded, scraping)."""
        if not (self.bin_dir / "prometheus").exists():
            raise SetupError(f"prometheus missing in {self.bin_dir}: run `make setup`")
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                [
                    str(self.bin_dir / "prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",  # loopback only
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._pid_file.write_text(str(proc.pid))
        try:
            # A Go binary with an empty TSDB listens within a second; 30 s covers a
            # loaded CI machine.
            wait_for_port(HOST, self.port, timeout_s=30, what="Prometheus", logs=(self.log_file,))
            self._wait_ready(proc, timeout_s=30)
        except BaseException:
            self.stop()  # not left running behind a failed start
            raise

    def stop(self) -> None:
        pid = read_pid(self._pid_file)
        if pid is not None:
            # It only flushes a small head block; 10 s is ample before SIGKILL.
            terminate(pid, timeout_s=10)
        self._pid_file.unlink(missing_ok=True)

    def _wait_ready(self, proc: subprocess.Popen[bytes], *, timeout_s: float) -> None:
        """Listening is not ready: ``/-/ready`` answers 503 until the TSDB is open and the
        config (rule files included) is loaded; a bad rule file makes it exit instead."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            ready = f"{self.url}/-/ready"  # our own loopback http URL, so S310 is moot
            try:
                # 2 s per try: a loopback answer takes milliseconds; the deadline still holds.
                with urllib.request.urlopen(ready, timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        tail = self.log_file.read_text(errors="replace")[-2000:]
        raise SetupError(f"Prometheus did not become ready; log:\n{tail}")

    def _write_config(self) -> Path:
        interval = f"{self.scrape_interval_s}s"
        config = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,  # may not exceed the interval
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in self.jobs.items()
            ],
        }
        path = self.home / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML too
        return path
