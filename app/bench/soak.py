"""`diffusion-asr bench-soak`: a long load against a server this command starts on 127.0.0.1, checking that
nothing fails, that the same clip always gets the same transcript, and that the server's memory stays flat.

Every request uploads one of a fixed set of clips with the same options and seed, as plain `json` or as
`stream=true` (whose `transcript.text.done` event carries the same body), so every response for one clip must
be identical. The server's resident memory (VmRSS) is sampled throughout; the sample after the warm-up is the
baseline its growth to the end is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.bench.server import LoadResult, start_server, stop_server

MAX_RSS_GROWTH_PCT = 5.0
"""Growth from the warm-up sample to the end at or above this fails the run."""

SOAK_SPEECH: tuple[tuple[str, str, str], ...] = (
    ("en", "en-us", "The quick brown fox jumps over the lazy dog near the river bank."),
    ("de", "de", "Heute scheint die Sonne und wir gehen gemeinsam in den Park."),
    ("fr", "fr-fr", "Le petit chat dort tranquillement sur le canapé du salon."),
    ("es", "es", "Mañana vamos a visitar a nuestros abuelos en el pueblo."),
    ("zh", "cmn-latn-pinyin", "今天天气很好，我们一起去公园散步。"),
)
"""(language, espeak-ng voice, sentence) of the synthesized clips: fixed, so every run uploads the same audio."""

SEGMENT_KEYS = ("id", "start", "end", "text", "language")
"""What identifies a segment's result; its `timing` is measured per request and so is left out."""


@dataclass(frozen=True)
class Clip:
    """One audio file the load uploads, by name."""

    name: str
    data: bytes


def synthesize_clips(workdir: Path) -> list[Clip]:
    """The fixed sentences spoken by espeak-ng, one WAV each (written to a file so the header has real sizes)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError("espeak-ng not found: install the Debian package espeak-ng, or pass --files")
    clips = []
    for language, voice, sentence in SOAK_SPEECH:
        path = workdir / f"{language}.wav"
        subprocess.run([espeak, "-v", voice, "-w", str(path), sentence], check=True, capture_output=True)
        clips.append(Clip(path.name, path.read_bytes()))
    return clips


def parse_vm_rss_kib(status_text: str) -> int:
    """The `VmRSS:` value (KiB) of a /proc/PID/status text."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line in the process status")


def read_rss_kib(pid: int) -> int:
    """Resident memory of process `pid` now, KiB (Linux)."""
    return parse_vm_rss_kib(Path(f"/proc/{pid}/status").read_text())


def result_signature(body: dict) -> str:
    """What must be identical across responses for one input: the text and each segment's identity fields."""
    segments = [{key: segment.get(key) for key in SEGMENT_KEYS} for segment in body.get("segments", [])]
    return json.dumps({"text": body.get("text"), "segments": segments}, ensure_ascii=False, sort_keys=True)


@dataclass
class ResultBook:
    """Every distinct result seen per clip, with how often each came."""

    seen: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, clip: str, body: dict) -> None:
        """Count one response's result for `clip`."""
        counts = self.seen.setdefault(clip, {})
        signature = result_signature(body)
        counts[signature] = counts.get(signature, 0) + 1

    def distinct(self) -> dict[str, int]:
        """Number of distinct results per clip (1 everywhere when the service is deterministic)."""
        return {clip: len(counts) for clip, counts in sorted(self.seen.items())}


@dataclass
class RssSamples:
    """(seconds since the load started, VmRSS KiB) pairs."""

    points: list[tuple[float, int]] = field(default_factory=list)

    def baseline(self, warmup_s: float) -> int:
        """The first sample at or after the warm-up (the last sample if the run was shorter)."""
        after = [kib for t, kib in self.points if t >= warmup_s]
        return after[0] if after else self.points[-1][1]

    def summary(self, warmup_s: float) -> dict[str, float | int]:
        """RSS at warm-up, at the end and at most (MiB), and the growth from warm-up to end in %."""
        base, end = self.baseline(warmup_s), self.points[-1][1]
        return {
            "rss_warmup_mib": round(base / 1024, 1),
            "rss_end_mib": round(end / 1024, 1),
            "rss_max_mib": round(max(kib for _, kib in self.points) / 1024, 1),
            "rss_growth_pct": round(100.0 * (end - base) / base, 2),
            "rss_samples": len(self.points),
        }


def _count_error(load: LoadResult, key: str) -> None:
    load.errors[key] = load.errors.get(key, 0) + 1


async def _post_json(client, url: str, clip: Clip, form: dict[str, str]) -> tuple[int, dict | None]:
    response = await client.post(url, files={"file": (clip.name, clip.data)}, data=form)
    return response.status_code, response.json() if response.status_code == 200 else None


async def _post_stream(client, url: str, clip: Clip, form: dict[str, str]) -> tuple[int, dict | None]:
    """`stream=true`: the `transcript.text.done` event's body, or None if the stream had an error event."""
    async with client.stream("POST", url, files={"file": (clip.name, clip.data)}, data={**form, "stream": "true"}) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, None
        done = None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: "):])
            if event.get("type") == "error":
                return 200, None
            if event.get("type") == "transcript.text.done":
                done = event
        return 200, done


def request_plan(index: int, clips: list[Clip]) -> tuple[Clip, bool]:
    """The `index`-th request's clip and whether it streams: plain and streamed alternate, each clip in turn."""
    return clips[(index // 2) % len(clips)], index % 2 == 1


async def _sample_rss(pid: int, samples: RssSamples, started: float, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.points.append((time.perf_counter() - started, read_rss_kib(pid)))
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except asyncio.TimeoutError:
            pass


async def run_soak(url: str, pid: int, clips: list[Clip], clients: int, seconds: float, seed: int,
                   sample_every_s: float = 1.0, timeout_s: float = 600.0) -> tuple[LoadResult, ResultBook, RssSamples]:
    """`clients` loops, each sending one request after another until `seconds` have passed (each sends at least
    one; requests in flight at the deadline finish), while the server's RSS is sampled every `sample_every_s`."""
    import httpx

    endpoint = f"{url.rstrip('/')}/v1/audio/transcriptions"
    form = {"response_format": "json", "seed": str(seed)}
    load, book, rss = LoadResult(label="soak"), ResultBook(), RssSamples()
    next_index = 0
    started = time.perf_counter()

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while True:
            clip, streamed = request_plan(next_index, clips)
            next_index += 1
            sent = time.perf_counter()
            try:
                status, body = await (_post_stream if streamed else _post_json)(client, endpoint, clip, form)
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                _count_error(load, type(exc).__name__)
            else:
                if status != 200 or body is None:
                    _count_error(load, str(status) if status != 200 else "stream_error_event")
                else:
                    load.latencies_s.append(time.perf_counter() - sent)
                    load.audio_s += float(body.get("duration", 0.0))
                    book.record(clip.name, body)
            if time.perf_counter() - started >= seconds:
                return

    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        sampler = asyncio.create_task(_sample_rss(pid, rss, started, sample_every_s, stop))
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        load.wall_s = time.perf_counter() - started
        stop.set()
        await sampler
    rss.points.append((time.perf_counter() - started, read_rss_kib(pid)))  # the end: every request answered
    return load, book, rss


def soak_summary(load: LoadResult, book: ResultBook, rss: RssSamples, warmup_s: float) -> dict:
    """The numbers the command prints, with the verdict's reasons (empty when the run passed)."""
    base = load.summary()
    summary = {key: base[key] for key in ("requests_ok", "errors", "wall_s", "audio_s", "throughput_audio_s_per_s",
                                          "latency_p50_s", "latency_p95_s")}
    summary["requests_per_s"] = round(len(load.latencies_s) / load.wall_s, 3) if load.wall_s else 0.0
    summary["distinct_results_per_clip"] = book.distinct()
    summary.update(rss.summary(warmup_s))
    summary["failures"] = verdict(summary)
    return summary


def verdict(summary: dict) -> list[str]:
    """Why the run failed: errors, clips with differing results, RSS growth at or above the limit."""
    failures = []
    if summary["errors"]:
        failures.append(f"{sum(summary['errors'].values())} errors: {summary['errors']}")
    differing = [clip for clip, n in summary["distinct_results_per_clip"].items() if n > 1]
    if differing:
        failures.append(f"differing results for {', '.join(differing)}")
    if summary["rss_growth_pct"] >= MAX_RSS_GROWTH_PCT:
        failures.append(f"RSS grew {summary['rss_growth_pct']}% after warm-up (limit {MAX_RSS_GROWTH_PCT}%)")
    return failures


def format_soak(s: dict) -> str:
    """The summary as a few readable lines."""
    return "\n".join([
        f"requests ok {s['requests_ok']} in {s['wall_s']:.1f} s ({s['requests_per_s']:.2f}/s, "
        f"{s['throughput_audio_s_per_s']:.2f} audio s/s), errors {s['errors'] or 0}",
        f"latency p50 {s['latency_p50_s']:.3f} s, p95 {s['latency_p95_s']:.3f} s",
        f"distinct results per clip: {s['distinct_results_per_clip']}",
        f"RSS MiB: warm-up {s['rss_warmup_mib']}, end {s['rss_end_mib']}, max {s['rss_max_mib']}; "
        f"growth {s['rss_growth_pct']}% ({s['rss_samples']} samples)",
        "PASS" if not s["failures"] else "FAIL: " + "; ".join(s["failures"]),
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench-soak` command's options."""
    parser.add_argument("--model", type=Path, help="model directory to serve (default: the embedded model)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the clients keep sending")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline is taken")
    parser.add_argument("--files", type=Path, nargs="+", help="audio files to upload (default: espeak-ng clips)")
    parser.add_argument("--seed", type=int, default=0, help="decoding seed of every request")
    parser.add_argument("--sample-every", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="server start-up timeout, seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _clips(files: list[Path] | None, workdir: Path) -> list[Clip]:
    if not files:
        return synthesize_clips(workdir)
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"no such audio file: {path}")
    return [Clip(path.name, path.read_bytes()) for path in files]


def main(args: argparse.Namespace) -> int:
    """Start the server, run the soak, print the summary; 1 when the run failed, else 0."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.clients < 1 or args.seconds <= 0 or args.warmup < 0:
        raise ValueError("--clients must be >= 1, --seconds > 0 and --warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        clips = _clips(args.files, Path(workdir))
    process, url = start_server(args.model, {}, args.ready_timeout)
    try:
        load, book, rss = asyncio.run(run_soak(url, process.pid, clips, args.clients, args.seconds, args.seed,
                                               args.sample_every))
    finally:
        stop_server(process)
    summary = soak_summary(load, book, rss, args.warmup)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_soak(summary), file=sys.stdout)
    return 1 if summary["failures"] else 0
