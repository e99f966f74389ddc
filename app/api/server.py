"""Running the app under uvicorn (`diffusion-asr serve`): settings checks, SIGTERM drain, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from app.api.app import create_app, load_engine, mark_draining
from app.api.listener import http_protocol
from app.api.logs import install_redaction
from app.config import GROUPS, Settings

log = logging.getLogger("diffusion_asr.api")

EXIT_BAD_SETTINGS = 2
EXIT_STARTUP_FAILED = 3
_SECRET_FIELDS = {"api_keys"}


def _describe(error: dict[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    kind = error.get("type", "")
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
              "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {ctx.get(key)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("int_parsing", "int_from_float"):
        return "must be an integer"
    if kind == "float_parsing":
        return "must be a number"
    if kind == "bool_parsing":
        return "must be true or false"
    message = str(error.get("msg", "is invalid"))
    return message[:1].lower() + message[1:]


def settings_error_lines(exc: ValidationError) -> list[str]:
    """One line per bad value, naming its environment variable: `ASR_MAX_BATCH_SIZE: must be >= 1 (got 0)`."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        group = GROUPS.get(loc[0]) if loc else None
        field = loc[1] if group is not None and len(loc) > 1 else (loc[0] if loc else "settings")
        name = group.flat_name(field) if group is not None else field.upper()
        shown = "***" if field in _SECRET_FIELDS else error.get("input")
        lines.append(f"ASR_{name}: {_describe(error)} (got {shown})")
    return lines


def load_settings(overrides: dict[str, Any]) -> Settings | None:
    """Settings from the environment plus command-line overrides (by flat name); None (after printing why) when
    invalid."""
    try:
        return Settings.flat(**overrides)
    except ValidationError as exc:
        for line in settings_error_lines(exc):
            print(f"diffusion-asr: error: {line}", file=sys.stderr)
        return None


def check_model_paths(settings: Settings) -> str | None:
    """A one-line reason the configured model cannot load (a missing file, an adapter that cannot be planned, a
    prompt token the tokenizer lacks), else None; no weights are read."""
    from app.checkpoint.errors import CheckpointError
    from app.checkpoint.loading import check_model

    try:
        check_model(settings.model)
    except (CheckpointError, OSError) as exc:
        return str(exc)
    return None


class DrainingServer(uvicorn.Server):
    """uvicorn's server, turning readiness to 503 the moment a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float = 0.0) -> None:
        super().__init__(config)
        self.asr_app = app
        self.grace_s = grace_s
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Mark draining; after the grace period, uvicorn's graceful shutdown (stop accepting, finish the
        requests in flight, then the lifespan drains the engine). A second signal skips the grace period."""
        mark_draining(self.asr_app)
        if self._signalled or self.grace_s <= 0:
            super().handle_exit(sig, frame)
            return
        self._signalled = True
        log.info("shutdown signal: /readyz is 503; serving %.1f s more before draining", self.grace_s)
        loop = asyncio.get_event_loop()
        # Signal handlers interrupt the loop's thread: schedule through the thread-safe entry point.
        loop.call_soon_threadsafe(loop.call_later, self.grace_s, self._end_grace, sig)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, minus its re-raising of the signal after a graceful shutdown: a finished
        drain is a clean exit (0), not a death by SIGTERM (143, "Terminated" in a shell)."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    def _end_grace(self, sig: int) -> None:
        if not self.should_exit:  # a second signal may have started the shutdown already
            super().handle_exit(sig, None)


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (before the model loads) so a busy port is reported in seconds, not after
    minutes of loading; uvicorn starts listening on it once the app is ready."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def preload(app: FastAPI, settings: Settings) -> str | None:
    """Load the model before serving, so a load failure is one line naming the file; None when loaded."""
    from app.checkpoint.errors import CheckpointError

    started = time.perf_counter()
    try:
        loaded = load_engine(settings, app.state.runtime.metrics)
    except (CheckpointError, OSError, ValueError) as exc:
        return f"cannot load the model: {exc}"
    log.info("model loaded and warmed up in %.1f s", time.perf_counter() - started)
    app.state.loader = lambda _settings, _observer: loaded
    return None


def run_server(overrides: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT. Exit 2 for bad settings or model paths, 3 when start-up fails (busy port,
    unloadable model); 0 after a clean drain."""
    settings = load_settings(overrides)
    if settings is None:
        return EXIT_BAD_SETTINGS
    problem = check_model_paths(settings)
    if problem is not None:
        print(f"diffusion-asr: error: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    host, port = settings.server.host, settings.server.port
    try:
        sock = bind_listener(host, port)
    except OSError as exc:
        print(f"diffusion-asr: error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    with sock:
        app = create_app(settings)
        config = uvicorn.Config(
            app, host=host, port=port, log_level=settings.server.log_level,
            access_log=False,  # our access log line carries the request id and timings instead
            timeout_graceful_shutdown=math.ceil(settings.engine.drain_timeout_s),
            lifespan="on",
            http=http_protocol(settings.server.header_timeout_s),
            timeout_keep_alive=settings.server.keep_alive_s,
        )
        install_redaction()  # after uvicorn.Config, which configures uvicorn's handlers
        problem = preload(app, settings)
        if problem is not None:
            print(f"diffusion-asr: error: {problem}", file=sys.stderr)
            return EXIT_STARTUP_FAILED
        server = DrainingServer(config, app, grace_s=settings.server.shutdown_grace_s)
        server.run(sockets=[sock])
    return 0 if server.started else EXIT_STARTUP_FAILED
