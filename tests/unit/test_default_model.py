"""The shipped default model, the one used when nothing is configured, transcribes held-out synthetic speech in
each of its six languages with the right language tag and a low character error rate.

Sentences 300-305 of each language's held-out stream: never trained on, and neither `diffusion-asr eval`
(sentences 0-99) nor the tuning of the sampler (200-249) or of the word-list search (100-299) reads them. This
model's CER on them: en 14%, de 0%, fr 8%, es 5%, hi 1%, zh 8% (greedy CTC alone: 32/8/22/6/9/27%). The bounds
lie between the two where six short sentences can tell them apart, so a broken model (90-100%) and a lost word
list both fail; Spanish's is too close to its greedy reading for that. The language target is 95% of clips, not
all: one of the six may be named wrongly (the model reads the four-word Spanish "veces sos pedo individuos" as
French), a random one gets about one in six right.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.checkpoint import embedded
from app.checkpoint.loading import load_model_dir as load_pipeline
from app.model.pipeline import AsrPipeline
from app.results import DecodeOptions
from app.training import synth, texts
from app.training.data import clip_rng
from app.training.evaluate import cer
from tests.everyday_sentences import EVERYDAY_SENTENCES

FIRST_SENTENCE, SENTENCES = 300, 6
MAX_CER = {"en": 0.22, "de": 0.05, "fr": 0.15, "es": 0.08, "hi": 0.05, "zh": 0.17}
MAX_WRONG_LANGUAGE = 1
MAX_EVERYDAY_CER = {"en": 0.35, "de": 0.3, "fr": 0.4, "es": 0.12, "hi": 0.15, "zh": 0.65}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> AsrPipeline:
    model_dir = embedded.embedded_model_dir(tmp_path_factory.mktemp("cache"))
    assert model_dir == embedded.REPO_MODEL_DIR, "the repository ships models/default: nothing else may be chosen"
    return load_pipeline(model_dir, device=torch.device("cpu"))


def test_the_shipped_model_fits_the_size_budget() -> None:
    weights = sum(path.stat().st_size for path in Path(embedded.REPO_MODEL_DIR).rglob("*.safetensors"))
    assert weights <= 25_000_000


def _assert_read(pipeline: AsrPipeline, lang: str, sentences: list[str], clips: list, max_cer: float) -> None:
    """Each clip transcribed with no language hint (the model names it): languages named and CER bounded."""
    results = [pipeline.transcribe(audio, DecodeOptions(steps=8)) for audio in clips]
    named = [result.language for result in results]
    hyps = [result.text for result in results]
    assert sum(found != lang for found in named) <= MAX_WRONG_LANGUAGE, list(zip(sentences, named))
    assert cer(sentences, hyps) <= max_cer, list(zip(sentences, hyps))


@pytest.mark.parametrize("lang", texts.LANGS)
def test_held_out_sentences_transcribe_with_their_language_and_a_low_cer(pipeline: AsrPipeline, lang: str) -> None:
    sentences = texts.eval_sentences(lang, FIRST_SENTENCE + SENTENCES, seed=0)[FIRST_SENTENCE:]
    clips = [synth.synthesize(sentence, lang, clip_rng(0, "default-model-test", lang, index))
             for index, sentence in enumerate(sentences)]
    _assert_read(pipeline, lang, sentences, clips, MAX_CER[lang])


@pytest.mark.parametrize("lang", texts.LANGS)
def test_everyday_sentences_in_the_default_voice_transcribe_with_a_bounded_cer(pipeline: AsrPipeline,
                                                                               lang: str) -> None:
    sentences = EVERYDAY_SENTENCES[lang]
    clips = [synth.speak_plain(sentence, lang) for sentence in sentences]
    _assert_read(pipeline, lang, sentences, clips, MAX_EVERYDAY_CER[lang])
