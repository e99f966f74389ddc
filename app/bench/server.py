"""`diffusion-asr bench`: drive a running server with concurrent uploads, or (`--compare`) start the server
twice on one model, batched as configured and as a one-request-at-a-time baseline, and compare them.

Traffic goes only to the given URL (or, with `--compare`, to servers this command starts on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SEQUENTIAL_ENV = {"ASR_MAX_BATCH_SIZE": "1", "ASR_CONTINUOUS_BATCHING": "false"}
"""The baseline: one request at a time, like a plain model.generate() endpoint."""


@dataclass
class LoadResult:
    """What one load run measured."""

    label: str
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Audio seconds transcribed per wall-clock second."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile `q` (0..100) in seconds, nearest-rank."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

    def summary(self) -> dict[str, float | int | str | dict[str, int]]:
        """The numbers the command prints."""
        return {
            "label": self.label,
            "requests_ok": len(self.latencies_s),
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "audio_s": round(self.audio_s, 3),
            "throughput_audio_s_per_s": round(self.throughput, 3),
            "latency_p50_s": round(self.percentile(50), 3),
            "latency_p95_s": round(self.percentile(95), 3),
            "mean_batch_size": round(statistics.fmean(self.batch_sizes), 3) if self.batch_sizes else 0.0,
            "mean_step_ms": round(statistics.fmean(self.step_ms), 3) if self.step_ms else 0.0,
        }


def format_summary(s: dict) -> str:
    """One human-readable line of a run."""
    errors = f" errors={s['errors']}" if s["errors"] else ""
    return (f"{s['label']}: {s['requests_ok']} ok in {s['wall_s']:.2f} s, throughput {s['throughput_audio_s_per_s']:.2f} "
            f"audio s/s, latency p50 {s['latency_p50_s']:.3f} s p95 {s['latency_p95_s']:.3f} s, mean batch "
            f"{s['mean_batch_size']:.2f}, mean step {s['mean_step_ms']:.1f} ms{errors}")


async def run_load(
    url: str, files: list[Path], concurrency: int, requests: int, label: str = "server",
    api_key: str | None = None, steps: int | None = None, language: str | None = None, timeout_s: float = 600.0,
) -> LoadResult:
    """Send `requests` uploads (cycling over `files`) with at most `concurrency` in flight."""
    import httpx
    from tqdm import tqdm

    payloads = [(p.name, p.read_bytes()) for p in files]
    form = {"response_format": "json"}
    if steps is not None:
        form["denoising_steps"] = str(steps)
    if language is not None:
        form["language"] = language
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = LoadResult(label=label)
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient, bar: tqdm) -> None:
        nonlocal next_index
        while next_index < requests:
            name, data = payloads[next_index % len(payloads)]
            next_index += 1
            started = time.perf_counter()
            try:
                response = await client.post(f"{url.rstrip('/')}/v1/audio/transcriptions",
                                             files={"file": (name, data)}, data=form, headers=headers)
            except httpx.HTTPError as exc:
                result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
            else:
                if response.status_code == 200:
                    body = response.json()
                    result.latencies_s.append(time.perf_counter() - started)
                    result.audio_s += float(body.get("duration", 0.0))
                    timing = body.get("timing", {})
                    result.batch_sizes.append(int(timing.get("batch_size", 1)))
                    result.step_ms.extend(float(s["ms"]) for s in timing.get("steps", []))
                else:
                    key = str(response.status_code)
                    result.errors[key] = result.errors.get(key, 0) + 1
            bar.update(1)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        with tqdm(total=requests, desc=label, unit="req", file=sys.stderr) as bar:
            started = time.perf_counter()
            await asyncio.gather(*(client_loop(client, bar) for _ in range(concurrency)))
            result.wall_s = time.perf_counter() - started
    return result


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll `/readyz` until 200; fail if the process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")


def start_server(model: Path | None, extra_env: dict[str, str], ready_timeout_s: float) -> tuple[subprocess.Popen, str]:
    """`diffusion-asr serve` on a free port of 127.0.0.1 in a subprocess, ready to take requests."""
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if model is not None:
        command += ["--model", str(model)]
    env = {**os.environ, **extra_env}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, ready_timeout_s)
    except BaseException:
        stop_server(process)
        raise
    return process, url


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM (graceful drain), then kill if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def compare(args: argparse.Namespace) -> list[dict]:
    """The same load on the configured server and on the sequential baseline."""
    summaries = []
    for label, env in (("batched", {}), ("sequential", SEQUENTIAL_ENV)):
        process, url = start_server(args.model, env, args.ready_timeout)
        try:
            result = asyncio.run(run_load(url, args.files, args.concurrency, args.requests, label, None,
                                          args.steps, args.language, args.timeout))
        finally:
            stop_server(process)
        summaries.append(result.summary())
    return summaries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` command's options."""
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--compare", action="store_true",
                        help="start the server twice (as configured, and sequential) and compare")
    parser.add_argument("--model", type=Path, help="with --compare: model directory to serve")
    parser.add_argument("--files", type=Path, nargs="+", required=True, help="audio files to upload, cycled")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--requests", type=int, help="requests in total (default: 4 x concurrency)")
    parser.add_argument("--api-key", help="bearer key of the server at --url")
    parser.add_argument("--steps", type=int, help="denoising_steps of every request")
    parser.add_argument("--language", help="language hint of every request")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="with --compare: start-up timeout")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark the arguments describe; prints results (and the ratio with --compare)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the progress bar
    if args.concurrency < 1:
        raise ValueError("--concurrency must be >= 1")
    if bool(args.url) == bool(args.compare):
        raise ValueError("give exactly one of --url or --compare")
    for path in args.files:
        if not path.is_file():
            raise FileNotFoundError(f"no such audio file: {path}")
    args.requests = args.requests or 4 * args.concurrency
    if args.compare:
        summaries = compare(args)
        batched, sequential = summaries
        ratio = {
            "throughput_ratio": round(batched["throughput_audio_s_per_s"] / sequential["throughput_audio_s_per_s"], 3)
            if sequential["throughput_audio_s_per_s"] else None,
            "p50_latency_ratio": round(batched["latency_p50_s"] / sequential["latency_p50_s"], 3)
            if sequential["latency_p50_s"] else None,
        }
        if args.json:
            print(json.dumps({"runs": summaries, **ratio}, indent=2))
        else:
            print("\n".join(format_summary(s) for s in summaries))
            print(f"batched / sequential: throughput x{ratio['throughput_ratio']}, "
                  f"p50 latency x{ratio['p50_latency_ratio']}")
        return 0
    result = asyncio.run(run_load(args.url, args.files, args.concurrency, args.requests, "server",
                                  args.api_key, args.steps, args.language, args.timeout))
    summary = result.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0 if not result.errors else 1
