"""A real Prometheus (Debian's `prometheus`, installed by `make system-deps`) scrapes the real server on
127.0.0.1 and answers, through its HTTP API, the request count the server itself reports."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SHARED_AUDIO
from tests.integration.conftest import ServerProcess, free_port

pytestmark = pytest.mark.integration

SELECTOR = 'asr_requests_total{endpoint="/v1/audio/transcriptions",status="200"}'
WAIT_S = 120.0  # a bound on waiting for Prometheus to start and scrape; the verdict does not depend on speed


def scrape_config(target: str) -> str:
    return (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: diffusion-asr\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: [\"{target}\"]\n"
    )


def wait_until(check, what: str):
    """Poll `check` until it returns something truthy, failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what}")


@pytest.fixture()
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make system-deps` installs Debian's prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape_config(server.url.removeprefix("http://")))
    url = f"http://127.0.0.1:{free_port()}"
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen([
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: process.poll() is None and httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
                   "Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def served_count(server: ServerProcess) -> float:
    """The server's own value of SELECTOR (0 before the first such request)."""
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text):
        for sample in family.samples:
            if (sample.name == "asr_requests_total" and sample.labels["endpoint"] == "/v1/audio/transcriptions"
                    and sample.labels["status"] == "200"):
                return sample.value
    return 0.0


def scraped_count(prometheus: str) -> float | None:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": SELECTOR}, timeout=5).json()
    assert body["status"] == "success"
    results = body["data"]["result"]
    return float(results[0]["value"][1]) if results else None


def test_prometheus_scrapes_the_request_count(server, prometheus):
    clip = SHARED_AUDIO / "en_fsdd_0_george_0.wav"
    response = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": (clip.name, clip.read_bytes())},
                          data={"denoising_steps": "2"}, timeout=120)
    assert response.status_code == 200, response.text
    before = served_count(server)
    assert before >= 1
    # The first scrape after the request carries at least the count read just now.
    scraped = wait_until(lambda: (value := scraped_count(prometheus)) is not None and value >= before and value,
                         f"a scrape with {SELECTOR} >= {before}")
    assert scraped <= served_count(server)  # a counter: Prometheus cannot have seen more than the server has now
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("diffusion-asr", "up")]
    assert targets[0]["scrapeUrl"] == f"{server.url}/metrics"
