"""bench-soak's checks: RSS parsing and growth, identical-result bookkeeping, the verdict, the request mix."""

from __future__ import annotations

import os

import pytest

from app.bench.server import LoadResult
from app.bench.soak import (
    MAX_RSS_GROWTH_PCT, Clip, ResultBook, RssSamples, parse_vm_rss_kib, read_rss_kib, request_plan, soak_summary,
    verdict,
)

STATUS = "Name:\tpython\nVmPeak:\t  812340 kB\nVmRSS:\t  654321 kB\nRssAnon:\t  600000 kB\nThreads:\t9\n"


def body(text: str, end: float = 2.5, total_ms: float = 10.0) -> dict:
    segment = {"id": 0, "start": 0.0, "end": end, "text": text, "language": "en", "timing": {"total_ms": total_ms}}
    return {"text": text, "duration": end, "segments": [segment], "timing": {"total_ms": total_ms}}


def test_vm_rss_is_read_from_its_own_line():
    assert parse_vm_rss_kib(STATUS) == 654321
    with pytest.raises(ValueError):
        parse_vm_rss_kib("Name:\tpython\nVmPeak:\t 1 kB\n")


def test_rss_of_a_live_process_follows_what_it_touches():
    before = read_rss_kib(os.getpid())
    block = bytearray(b"\x01" * (64 << 20))  # written, so resident
    after = read_rss_kib(os.getpid())
    assert block[-1] == 1
    assert after - before >= 48 << 10


def test_timings_may_differ_but_text_and_segments_may_not():
    book = ResultBook()
    book.record("a.wav", body("hello world", total_ms=10.0))
    book.record("a.wav", body("hello world", total_ms=99.0))
    book.record("b.wav", body("bonjour"))
    assert book.distinct() == {"a.wav": 1, "b.wav": 1}
    book.record("a.wav", body("hello word"))
    book.record("b.wav", body("bonjour", end=2.0))
    assert book.distinct() == {"a.wav": 2, "b.wav": 2}


def summary(errors: dict | None = None, distinct: dict | None = None, growth: float = 0.0) -> dict:
    return {"errors": errors or {}, "distinct_results_per_clip": distinct or {"a.wav": 1}, "rss_growth_pct": growth}


def test_verdict_names_each_reason_to_fail():
    assert verdict(summary()) == []
    assert verdict(summary(growth=MAX_RSS_GROWTH_PCT - 0.01)) == []
    failures = verdict(summary(errors={"503": 2, "ReadTimeout": 1}, distinct={"a.wav": 1, "b.wav": 3},
                               growth=MAX_RSS_GROWTH_PCT))
    assert len(failures) == 3
    assert failures[0].startswith("3 errors")
    assert "b.wav" in failures[1] and "a.wav" not in failures[1]
    assert "RSS grew" in failures[2]


def test_growth_is_measured_from_the_first_sample_after_warm_up_to_the_last():
    rss = RssSamples([(0.0, 100 * 1024), (1.0, 400 * 1024), (2.0, 400 * 1024), (3.0, 500 * 1024), (4.0, 410 * 1024)])
    s = rss.summary(warmup_s=1.5)
    assert (s["rss_warmup_mib"], s["rss_end_mib"], s["rss_max_mib"]) == (400.0, 410.0, 500.0)
    assert s["rss_growth_pct"] == 2.5
    assert RssSamples([(0.0, 1024), (1.0, 2048)]).baseline(warmup_s=30.0) == 2048  # shorter than the warm-up


def test_requests_alternate_plain_and_streamed_over_every_clip():
    clips = [Clip(name, b"") for name in ("a", "b", "c")]
    plan = [(clip.name, streamed) for clip, streamed in (request_plan(i, clips) for i in range(6))]
    assert plan == [("a", False), ("a", True), ("b", False), ("b", True), ("c", False), ("c", True)]
    assert request_plan(6, clips)[0].name == "a"


def test_a_run_with_one_differing_answer_fails_and_says_for_which_clip():
    book = ResultBook()
    for text in ("hello world", "hello world", "hello there"):
        book.record("en.wav", body(text))
    book.record("de.wav", body("guten tag"))
    load = LoadResult(label="soak", wall_s=2.0, latencies_s=[0.5, 0.5, 0.5, 0.5], audio_s=10.0)
    s = soak_summary(load, book, RssSamples([(0.0, 1000), (2.0, 1000)]), warmup_s=1.0)
    assert s["requests_ok"] == 4 and s["requests_per_s"] == 2.0
    assert s["distinct_results_per_clip"] == {"de.wav": 1, "en.wav": 2}
    assert s["failures"] == ["differing results for en.wav"]
