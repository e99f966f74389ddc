"""Real servers for integration tests: `python -m app.cli serve` in a subprocess on 127.0.0.1 and a free port,
on the session's tiny random checkpoint. Each configuration starts once per session, on first use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240.0
FAULT_PROMPT = "__inject_failure__"
HOLD_PROMPT = "__hold_at_step__"  # a job with this prompt stays after its first step until cancelled or expired
API_KEYS = ("test-key-one", "test-key-two")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `diffusion-asr serve` subprocess; its output goes to a log file the tests can read."""

    def __init__(self, model_dir: Path | None, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
        full_env.update({"ASR_LOG_LEVEL": "info", **env})
        if model_dir is not None:  # None: no model configured, the service picks its embedded default
            full_env["ASR_MODEL"] = str(model_dir)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll /readyz until 200; fail with the server's log if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server not ready after {timeout_s:.0f} s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        """Everything the server has written so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_with(self, text: str, timeout_s: float = 30.0) -> str:
        """The log once it holds `text`: the access line is written after the response has gone out, so a
        client that reads the log straight after its response can be ahead of it."""
        deadline = time.monotonic() + timeout_s
        log = self.log_text()
        while text not in log and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.log_text()
        return log

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL if it lingers; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


def serve_process(model_dir: Path | None, tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]):
    """A real server for a fixture: started, awaited until ready, stopped afterwards."""
    server = ServerProcess(model_dir, env, tmp_path_factory.mktemp("server") / f"{name}.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The main server: no keys, small upload (2 MB) and duration (30 s) limits, failure injection on."""
    yield from serve_process(tiny_model_dir, tmp_path_factory, "main", {
        "ASR_MAX_UPLOAD_MB": "2", "ASR_MAX_AUDIO_SECONDS": "30", "ASR_FAULT_INJECTION_PROMPT": FAULT_PROMPT,
    })


@pytest.fixture(scope="session")
def keyed_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that requires one of `API_KEYS`."""
    yield from serve_process(tiny_model_dir, tmp_path_factory, "keyed", {"ASR_API_KEYS": ",".join(API_KEYS)})


@pytest.fixture()
def stopping_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own for a test that shuts it down: keys as `keyed_server`, and after SIGTERM it keeps
    serving 5 s with readiness 503."""
    yield from serve_process(tiny_model_dir, tmp_path_factory, "stopping", {
        "ASR_API_KEYS": ",".join(API_KEYS), "ASR_SHUTDOWN_GRACE_S": "5",
    })


@pytest.fixture(scope="session")
def limited_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One row at a time, one queued job, an 8 s deadline, and jobs that hold at a step boundary: easy to fill,
    easy to time out, on any CPU (the deadline leaves a slow machine seconds to spare before a held job ends)."""
    yield from serve_process(tiny_model_dir, tmp_path_factory, "limited", {
        "ASR_MAX_QUEUE": "1", "ASR_MAX_BATCH_SIZE": "1", "ASR_REQUEST_TIMEOUT_S": "8", "ASR_HOLD_PROMPT": HOLD_PROMPT,
    })


@pytest.fixture(scope="session")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server started as the README starts it: no model configured, so the embedded default (with its
    cache directory in the test's temporary tree)."""
    yield from serve_process(None, tmp_path_factory, "default", {"ASR_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))})


@pytest.fixture(scope="session")
def served_model(server: ServerProcess) -> str:
    """The served model's name, as /v1/models reports it."""
    return httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]["id"]
