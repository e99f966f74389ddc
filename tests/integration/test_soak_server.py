"""bench-soak against real servers: a short run through the command, and the load loop on the suite's server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from app.bench.soak import run_soak, synthesize_clips
from app.cli import main


def test_a_short_soak_gets_one_result_per_clip_from_plain_and_streamed_uploads(server, tmp_path: Path):
    clips = synthesize_clips(tmp_path)
    load, book, rss = asyncio.run(run_soak(server.url, server.process.pid, clips, clients=2, seconds=1.0, seed=0,
                                           sample_every_s=0.2))
    assert load.errors == {}
    assert len(load.latencies_s) >= 2  # each client sends at least one request
    assert set(book.distinct().values()) == {1}
    # The first two requests are the first clip as json and as a stream: both bodies gave one result.
    assert sum(book.seen[clips[0].name].values()) >= 2
    assert rss.points and all(kib > 0 for _, kib in rss.points)


def test_the_command_starts_its_own_server_and_prints_its_verdict(tiny_model_dir: Path, capsys):
    code = main(["bench-soak", "--model", str(tiny_model_dir), "--clients", "2", "--seconds", "1", "--warmup", "0",
                 "--sample-every", "0.2", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["errors"] == {}
    assert summary["requests_ok"] >= 2
    assert set(summary["distinct_results_per_clip"]) <= {"de.wav", "en.wav", "es.wav", "fr.wav", "zh.wav"}
    assert set(summary["distinct_results_per_clip"].values()) == {1}
    assert summary["rss_warmup_mib"] > 0 and summary["rss_max_mib"] >= summary["rss_end_mib"]
    assert code == (1 if summary["failures"] else 0)
