"""`diffusion-asr serve` pointed at an adapter folder in the published layout (tests/published_adapter.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from openai import OpenAI

from tests.conftest import SHARED_AUDIO
from tests.integration.conftest import REPO, serve_process


def _env(fixture) -> dict[str, str]:
    return {"ASR_ENCODER": str(fixture.encoder), "ASR_BACKBONE": str(fixture.backbone),
            "ASR_ADAPTER": str(fixture.adapter), "ASR_DEVICE": "cpu"}


@pytest.fixture(scope="module")
def published_server(published_adapter, tmp_path_factory):
    yield from serve_process(None, tmp_path_factory, "published",
                             {**_env(published_adapter), "ASR_TRUST_ADAPTER_CODE": "1"})


def test_serves_the_published_layout_with_trusted_code(published_server):
    client = OpenAI(base_url=f"{published_server.url}/v1", api_key="unused")
    clip = SHARED_AUDIO / "en_deepspeech_LDC93S1_44k_stereo.wav"
    with clip.open("rb") as audio:
        result = client.audio.transcriptions.create(model="diffusion-gemma-asr-small", file=audio, response_format="verbose_json")
    assert result.duration > 0 and len(result.segments) >= 1
    assert "(published layout): projector code" in published_server.log_text()


def test_without_the_flag_serve_exits_at_once_naming_it(published_adapter):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    done = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", "0"], cwd=REPO,
                          env={**env, **_env(published_adapter)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--trust-adapter-code (ASR_TRUST_ADAPTER_CODE=1)" in done.stderr
    assert "loading backbone weights" not in done.stderr
