"""The real whisper-base weight packages (installed by the Makefile's venv target) through `convert-encoder`:
Whisper's own decoder, greedy, must read the right words from the converted encoder on espeak-ng speech.

Nothing here is skipped: without the packages the conversion fails with the message naming them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from app.checkpoint.pretrained_encoder import load_pretrained_encoder
from app.cli import main
from app.model.encoder import SAMPLE_RATE
from app.training.synth import resample, run_espeak

PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "whisper-base"
    assert main(["convert-encoder", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def whisper(converted: Path) -> WhisperForConditionalGeneration:
    return WhisperForConditionalGeneration.from_pretrained(str(converted), local_files_only=True,
                                                           dtype=torch.float32).eval()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _greedy(whisper: WhisperForConditionalGeneration, tokenizer: Tokenizer, hidden: torch.Tensor) -> str:
    """Whisper's decoder, most likely token at each step, reading `hidden` as the encoder's output."""
    ids = [tokenizer.token_to_id(token) for token in PROMPT]
    end = tokenizer.token_to_id("<|endoftext|>")
    encoded = BaseModelOutput(last_hidden_state=hidden)
    with torch.no_grad():
        for _ in range(48):
            token = int(whisper(encoder_outputs=encoded, decoder_input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token == end:
                break
            ids.append(token)
    return tokenizer.decode(ids[len(PROMPT):])


@pytest.mark.parametrize(("text", "seconds"), [
    ("the quick brown fox jumps over the lazy dog", 30),
    ("where is the train station", 30),
    ("where is the train station", 10),
])
def test_converted_encoder_is_read_by_whispers_decoder(converted: Path, whisper: WhisperForConditionalGeneration,
                                                       text: str, seconds: int) -> None:
    pcm, rate = run_espeak(text, "en", 150, 50)
    audio = resample(pcm, rate, SAMPLE_RATE)
    encoder = load_pretrained_encoder(converted, seconds)
    features = WhisperFeatureExtractor(feature_size=80, chunk_length=seconds)(
        audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.no_grad():
        hidden = encoder(features).last_hidden_state
    assert hidden.shape == (1, seconds * 50, 512)
    assert _words(_greedy(whisper, Tokenizer.from_file(str(converted / "tokenizer.json")), hidden)) == _words(text)


def test_second_conversion_keeps_the_checked_output(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (converted / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["convert-encoder", "--out", str(converted)]) == 0
    assert capsys.readouterr().out.strip() == str(converted)
    assert (converted / "model.safetensors").stat().st_mtime_ns == before
