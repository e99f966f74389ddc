"""Back-pressure through the real server: 413 while the upload arrives, 503 when the queue is full, 504 at
the deadline, and a client that goes away gets its job cancelled."""

from __future__ import annotations

import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SHARED_AUDIO
from tests.integration.conftest import HOLD_PROMPT

pytestmark = pytest.mark.integration

URL = "/v1/audio/transcriptions"
SHORT = SHARED_AUDIO / "en_fsdd_0_george_0.wav"
MB = 1024 * 1024
BOUNDARY = "limitsboundary"


def transcribe(url: str, steps: int = 2, timeout: float = 60.0, prompt: str = "") -> httpx.Response:
    return httpx.post(f"{url}{URL}", files={"file": (SHORT.name, SHORT.read_bytes())},
                      data={"language": "en", "denoising_steps": str(steps), "prompt": prompt}, timeout=timeout)


def metric(url: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Whatever the server sends until it closes the connection (or the timeout)."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def request_head(port: int, extra: str) -> bytes:
    return (f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{extra}\r\n").encode()


def test_oversized_chunked_upload_is_refused_before_the_body_ends(server):
    planned = 40 * MB  # the server's limit is 2 MB (+64 KiB for the multipart framing)
    chunk = b"\0" * (128 * 1024)
    sent, answer = 0, b""
    with socket.socket() as sock:
        # A small send buffer, so `sent` counts what the server could have read, not what the kernel holds.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request_head(server.port, "Transfer-Encoding: chunked\r\n"))
        part = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
                f"Content-Type: audio/wav\r\n\r\n").encode()
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        while sent < planned:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0.01)[0]:
                break
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"audio_too_large"' in answer and b"connection: close" in answer.lower()
    assert sent < 10 * MB, f"{sent} bytes went out before the refusal"  # of the 40 MB the client meant to send
    assert transcribe(server.url).status_code == 200


def test_declared_oversized_upload_is_refused_from_its_headers(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_head(server.port, f"Content-Length: {50 * MB}\r\n"))
        sock.sendall(b"\0" * 65536)  # a sliver of the 50 MB promised
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert transcribe(server.url).status_code == 200


def queue_depth(url: str) -> int:
    return httpx.get(f"{url}/readyz", timeout=5).json().get("queue_depth", 0)


def wait_for_running(url: str, steps_before: float, timeout_s: float = 30.0) -> None:
    """Until the worker has taken a denoising step since `steps_before` (a held job then stays in the batch)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric(url, "asr_denoising_step_seconds_count") > steps_before:
            return
        time.sleep(0.02)
    pytest.fail("the worker never took a step")


def wait_for_full_queue(url: str, timeout_s: float = 30.0) -> None:
    """Until one job waits in the queue (behind a held one, it stays there until the held one's deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if queue_depth(url) == 1:
            return
        time.sleep(0.02)
    pytest.fail("the queue never filled")


def test_queue_full_is_503_at_once_and_deadline_is_504(limited_server):
    url = limited_server.url
    rejected_before = metric(url, "asr_rejected_total", reason="queue_full")
    with ThreadPoolExecutor(2) as pool:
        # The first holds the only row after its first step; the second then fills the one-job queue.
        steps_before = metric(url, "asr_denoising_step_seconds_count")
        held = [pool.submit(transcribe, url, 8, prompt=HOLD_PROMPT)]
        wait_for_running(url, steps_before)
        held.append(pool.submit(transcribe, url, 8, prompt=HOLD_PROMPT))
        wait_for_full_queue(url)

        with httpx.Client(base_url=url, timeout=30) as client:
            refused = [client.post(URL, files={"file": (SHORT.name, SHORT.read_bytes())},
                                   data={"language": "en", "denoising_steps": "2"}) for _ in range(6)]
        # Refused at once: the held jobs were still there, so no refusal waited for room in the queue.
        assert queue_depth(url) == 1 and not any(job.done() for job in held)
        outcomes = [job.result() for job in held]
    for response in refused:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "queue_full" and int(response.headers["retry-after"]) >= 1
    assert metric(url, "asr_rejected_total", reason="queue_full") - rejected_before == 6
    # Held jobs never finish: both reach their deadline.
    assert [r.status_code for r in outcomes] == [504, 504]
    assert all(r.json()["error"]["code"] == "deadline_exceeded" for r in outcomes)
    assert transcribe(url, steps=1).status_code == 200


def test_client_that_disconnects_gets_its_job_cancelled(limited_server):
    url = limited_server.url
    before = metric(url, "asr_cancelled_jobs_total")
    with pytest.raises(httpx.ReadTimeout):
        transcribe(url, steps=8, timeout=1.0, prompt=HOLD_PROMPT)  # the client gives up and closes its connection
    deadline = time.monotonic() + 15
    while metric(url, "asr_cancelled_jobs_total") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(url, "asr_cancelled_jobs_total") == before + 1
    assert "status=499" in limited_server.log_with("status=499")
    assert transcribe(url, steps=1).status_code == 200


def test_stream_client_that_disconnects_gets_its_job_cancelled(limited_server):
    url = limited_server.url
    before = metric(url, "asr_cancelled_jobs_total")
    with httpx.stream("POST", f"{url}{URL}", files={"file": (SHORT.name, SHORT.read_bytes())},
                      data={"language": "en", "denoising_steps": "8", "stream": "true", "stream_drafts": "true",
                            "prompt": HOLD_PROMPT},
                      timeout=30) as response:
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert '"type": "transcript.text.draft"' in first
    deadline = time.monotonic() + 15
    while metric(url, "asr_cancelled_jobs_total") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(url, "asr_cancelled_jobs_total") == before + 1
