"""A WebSocket streaming client (`diffusion-asr stream`) and its latency benchmark (`diffusion-asr bench-stream`).

The client sends 16 kHz pcm_s16le in 20 ms frames at real time x `speed` and records when each frame left, so a
time on the stream's clock (a final's `end`, a segment's `speech_start`) maps back to the wall-clock moment
that audio was sent. The benchmark reports, over N concurrent streams:

- final latency: a final's arrival minus the moment the sample at its `end` was sent (the server's work
  after the endpoint: VAD split, queue, encoder, denoising);
- speech-end latency: the same from its `speech_end` (what a user waits after the last word: the endpoint
  silence plus the above);
- first-partial latency: the first partial of a segment minus the moment its first speech sample was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np

RATE = 16000
FRAME_MS = 20
ENDPOINT = "/v1/audio/stream"


def stream_url(base: str, **query: object) -> str:
    """`base` (ws://host:port, with or without the endpoint path) plus the query parameters that are set."""
    parts = urlsplit(base)
    path = parts.path if parts.path not in ("", "/") else ENDPOINT
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items() if v not in (None, False)}
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{urlencode(params)}" if params else "")


def load_pcm(path: Path) -> bytes:
    """A file decoded to 16 kHz mono pcm_s16le bytes."""
    from app.audio.decode import AudioLimits, decode_audio

    samples = decode_audio(path.read_bytes(), AudioLimits(max_bytes=2**31, max_seconds=24 * 3600))
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


@dataclass
class StreamRun:
    """What one stream sent and received."""

    sent: list[tuple[int, float]] = field(default_factory=list)  # (samples sent so far, wall time)
    messages: list[tuple[float, dict]] = field(default_factory=list)  # (arrival wall time, message)
    close_code: int | None = None
    close_reason: str = ""

    def sent_at(self, seconds: float) -> float:
        """Wall time at which the sample at `seconds` on the stream clock had been sent."""
        ends = [n for n, _ in self.sent]
        index = min(bisect.bisect_left(ends, round(seconds * RATE)), len(self.sent) - 1)
        return self.sent[index][1]

    def of_type(self, kind: str) -> list[tuple[float, dict]]:
        """(arrival, message) of one message type."""
        return [(t, m) for t, m in self.messages if m.get("type") == kind]


async def run_stream(
    url: str, pcm: bytes, speed: float = 1.0, api_key: str | None = None,
    on_message: Callable[[dict], None] | None = None,
) -> StreamRun:
    """Send `pcm` (16 kHz s16le) in 20 ms frames at real time x `speed` (0: as fast as possible), then `end`;
    collect every message until the server closes."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    run, frame = StreamRun(), RATE * FRAME_MS // 1000 * 2
    async with connect(url, additional_headers=headers, max_size=None) as ws:

        async def receive() -> None:
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    run.messages.append((time.perf_counter(), message))
                    if on_message is not None:
                        on_message(message)
            except ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        started = time.perf_counter()
        try:
            for i, offset in enumerate(range(0, len(pcm), frame)):
                if speed > 0:
                    await asyncio.sleep(max(0.0, started + i * FRAME_MS / 1000 / speed - time.perf_counter()))
                await ws.send(pcm[offset: offset + frame])
                run.sent.append((min(len(pcm), offset + frame) // 2, time.perf_counter()))
            await ws.send(json.dumps({"type": "end"}))
        except ConnectionClosed:
            pass  # the server ended the session (limit, error): its messages say why
        await receiver
        run.close_code, run.close_reason = ws.close_code, ws.close_reason or ""
    return run


# ---- diffusion-asr stream -------------------------------------------------------------------------------------

def _printable(text: str) -> str:
    # Model text may hold newlines or control characters, which would break the overwritten line.
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _printer() -> Callable[[dict], None]:
    width = shutil.get_terminal_size().columns - 1

    def show(message: dict) -> None:
        kind = message.get("type")
        if kind in ("partial", "draft"):
            label = "..." if kind == "partial" else f"step {message['step']}/{message['of']}"
            # One screen line at most: a wrapped line cannot be overwritten with \r.
            print(f"\r\033[K{f'[{label}] ' + _printable(message['text'])}"[: width + 4], end="", flush=True)
        elif kind == "final":
            print(f"\r\033[K[{message['start']:7.2f} - {message['end']:7.2f}] {_printable(message['text'])}",
                  flush=True)
        elif kind == "error":
            print(f"\r\033[Kerror {message['code']}: {message['message']}", file=sys.stderr, flush=True)
    return show


def stream_command(args: argparse.Namespace) -> int:
    """Stream one file to a server and print partials (one overwritten line) and finals as they arrive."""
    pcm = load_pcm(Path(args.file))
    url = stream_url(args.url, language=args.language, drafts=args.drafts)
    run = asyncio.run(run_stream(url, pcm, args.speed, args.api_key, _printer()))
    if run.close_code != 1000:
        print(f"diffusion-asr: stream closed with {run.close_code} {run.close_reason}".rstrip(), file=sys.stderr)
        return 1
    return 0


# ---- diffusion-asr bench-stream -------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def latencies(run: StreamRun) -> dict[str, list[float]]:
    """The three latencies of one stream's speech segments, in seconds."""
    out: dict[str, list[float]] = {"final": [], "speech_end": [], "first_partial": []}
    first_partial: dict[int, float] = {}
    for arrived, message in run.of_type("partial"):
        first_partial.setdefault(message["segment_id"], arrived)
    for arrived, final in run.of_type("final"):
        if final.get("speech_start") is None or final.get("error"):
            continue
        out["final"].append(arrived - run.sent_at(final["end"]))
        out["speech_end"].append(arrived - run.sent_at(final["speech_end"]))
        if final["segment_id"] in first_partial:
            out["first_partial"].append(first_partial[final["segment_id"]] - run.sent_at(final["speech_start"]))
    return out


async def _bench(args: argparse.Namespace, clips: list[bytes]) -> tuple[list[StreamRun], float]:
    url = stream_url(args.url, language=args.language, denoising_steps=args.steps)
    async def one(i: int) -> StreamRun:
        await asyncio.sleep(i * args.stagger)  # 0: all streams in lockstep, the worst case for the engine
        return await run_stream(url, clips[i % len(clips)], args.speed, args.api_key)

    started = time.perf_counter()
    runs = await asyncio.gather(*(one(i) for i in range(args.streams)))
    return list(runs), time.perf_counter() - started


def bench_summary(runs: list[StreamRun], wall_s: float, streams: int, speed: float) -> dict:
    """p50/p95 of each latency over all streams, plus counts."""
    pooled: dict[str, list[float]] = {"final": [], "speech_end": [], "first_partial": []}
    for run in runs:
        for key, values in latencies(run).items():
            pooled[key].extend(values)
    summary: dict = {"streams": streams, "speed": speed, "wall_s": round(wall_s, 2),
                     "finals": sum(len(r.of_type("final")) for r in runs),
                     "errors": sum(len(r.of_type("error")) for r in runs),
                     "close_codes": sorted({r.close_code for r in runs if r.close_code is not None})}
    for key, values in pooled.items():
        summary[f"{key}_n"] = len(values)
        summary[f"{key}_p50_s"] = round(percentile(values, 50), 3)
        summary[f"{key}_p95_s"] = round(percentile(values, 95), 3)
    return summary


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench-stream` command's options."""
    parser.add_argument("--url", default="ws://127.0.0.1:8000", help="a running server, ws://host:port")
    parser.add_argument("--files", type=Path, nargs="+", required=True, help="audio files, cycled over streams")
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams")
    parser.add_argument("--speed", type=float, default=1.0, help="send at real time x this (0: no pacing)")
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between stream starts")
    parser.add_argument("--steps", type=int, help="denoising_steps of every stream")
    parser.add_argument("--language", help="language hint of every stream")
    parser.add_argument("--api-key", help="bearer key of the server")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def bench_command(args: argparse.Namespace) -> int:
    """Run N concurrent streams of the files and print latency percentiles."""
    if args.streams < 1:
        raise ValueError("--streams must be >= 1")
    clips = [load_pcm(path) for path in args.files]
    runs, wall_s = asyncio.run(_bench(args, clips))
    summary = bench_summary(runs, wall_s, args.streams, args.speed)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.streams} stream(s) at {args.speed}x real time, {summary['finals']} finals, "
              f"{summary['errors']} errors, close codes {summary['close_codes']}, wall {summary['wall_s']} s")
        for key, label in (("final", "final after its end"), ("speech_end", "final after last speech"),
                           ("first_partial", "first partial after speech start")):
            print(f"  {label:34s} n={summary[key + '_n']:3d}  p50 {summary[key + '_p50_s']:.3f} s  "
                  f"p95 {summary[key + '_p95_s']:.3f} s")
    return 0 if all(r.close_code == 1000 for r in runs) else 1
