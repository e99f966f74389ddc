"""`diffusion-asr eval`: CER/WER per language of a checkpoint, through the serving pipeline.

Three views:
- the held-out synthetic set (same generator as training, sentences training never saw), decoded by the
  diffusion decoder at N steps without a language hint (also: the language tag the model wrote);
- the same clips decoded by greedy CTC on the projector output through the lm_head (the auxiliary head);
- the real recordings of ../shared/audio whose manifest reference is strong (`text_kind` in
  test_assertion / ground_truth / label), through `AsrPipeline.transcribe`.

Text normalisation (both reference and hypothesis): Unicode NFKC, lowercase, every punctuation or symbol
character (Unicode categories P* and S*) replaced by a space, whitespace collapsed. WER on space-separated
words; for Mandarin, which has no spaces, WER is computed on characters (so it equals CER). CER on characters
with all spaces removed, for every language.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch

from app.model.encoder import SAMPLE_RATE
from app.training.texts import SPACELESS

STRONG_KINDS = ("test_assertion", "ground_truth", "label")


def normalize(text: str) -> str:
    """NFKC, lowercase, punctuation/symbols to spaces, collapsed whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.split())


def cer_units(text: str) -> str:
    """Characters for CER: the normalised text without spaces, characters separated by spaces for jiwer."""
    return " ".join(ch for ch in normalize(text) if not ch.isspace())


def wer_units(text: str, lang: str) -> str:
    """Words for WER: characters for spaceless scripts, else the normalised words."""
    return cer_units(text) if lang in SPACELESS else normalize(text)


def _error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus-level error rate (total edits / total reference units); empty hypotheses count as deletions."""
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return float("nan")
    edits, total = 0, 0
    for ref, hyp in pairs:
        n = len(ref.split())
        total += n
        if not hyp.strip():
            edits += n
            continue
        out = jiwer.process_words(ref, hyp)
        edits += out.substitutions + out.deletions + out.insertions
    return edits / total


# One punctuation mark or symbol three or more times in a row ("with.........").
_REPEATED_MARK = re.compile(r"([^\w\s])\1{2,}")


def filler_share(refs: list[str], hyps: list[str]) -> float:
    """Share of hypotheses holding a run of one repeated mark that their reference lacks: filler a reader sees
    but CER never counts, since the normalisation removes punctuation."""
    if not hyps:
        return float("nan")
    flagged = sum(bool(_repeated_marks(hyp) - _repeated_marks(ref)) for ref, hyp in zip(refs, hyps))
    return flagged / len(hyps)


def _repeated_marks(text: str) -> set[str]:
    return {match.group(0) for match in _REPEATED_MARK.finditer(text)}


def cer(refs: list[str], hyps: list[str]) -> float:
    return _error_rate([cer_units(r) for r in refs], [cer_units(h) for h in hyps])


def wer(refs: list[str], hyps: list[str], lang: str) -> float:
    return _error_rate([wer_units(r, lang) for r in refs], [wer_units(h, lang) for h in hyps])


@dataclass
class LangResult:
    lang: str
    clips: int
    cer: float
    wer: float
    ctc_cer: float
    ctc_wer: float
    tag_accuracy: float
    filler: float  # `filler_share` of the diffusion transcripts
    examples: list[tuple[str, str, str]]  # (reference, diffusion, ctc)


def evaluate_synthetic(pipeline, clips, steps: int, seed: int = 0, batch: int = 16,
                       limit: int | None = None) -> dict[str, LangResult]:
    """Diffusion (no hint) and greedy-CTC transcripts of held-out clips, per language.

    Each clip is one window (held-out clips are at most the window long), decoded by the serving stages
    `AsrPipeline.transcribe_windows` runs, batched: `encode` -> `start_rows` (no hint, window index 0, so the
    generator is `window_generator(seed, 0)` as for a one-window upload) -> one `DenoiseBatch` -> `finish_row`.
    Batching only shares the forward passes; every row draws from its own generator. The CTC column greedily
    decodes each window's projected slots through the lm_head (what the CTC loss trained).
    """
    from app.audio.vad import AudioWindow
    from app.model.backbone import softcap
    from app.results import DecodeOptions
    from app.training.losses import greedy_ctc

    clips = _first_per_language(list(clips), limit)
    options = DecodeOptions(steps=steps, seed=seed)
    refs: dict[str, list[str]] = {}
    hyps: dict[str, list[str]] = {}
    ctc_hyps: dict[str, list[str]] = {}
    tags: dict[str, list[bool]] = {}
    head = pipeline.backbone.lm_head
    for start in range(0, len(clips), batch):
        chunk = clips[start:start + batch]
        encoded = pipeline.encode([c.audio for c in chunk])
        windows = [AudioWindow(0.0, len(c.audio) / SAMPLE_RATE, c.audio, True) for c in chunk]
        rows = pipeline.start_rows([(e, 0, w, options, None) for e, w in zip(encoded, windows)])
        denoising = pipeline.new_batch()
        for i, row in enumerate(rows):
            denoising.add(i, row.job)
        segments = {}
        while len(denoising):
            for i, result in denoising.step():
                segments[i] = pipeline.finish_row(rows[i], result)
        for i, (clip, item) in enumerate(zip(chunk, encoded)):
            with torch.no_grad():
                logits = softcap(head(item.slots[None]), pipeline.backbone.final_logit_softcapping)
            ids = greedy_ctc(logits, torch.tensor([item.slots.shape[0]]), blank=pipeline.tokenizer.pad_token_id)[0]
            refs.setdefault(clip.lang, []).append(clip.text)
            hyps.setdefault(clip.lang, []).append(segments[i].text)
            ctc_hyps.setdefault(clip.lang, []).append(pipeline.tokenizer.decode(ids, skip_special_tokens=True))
            tags.setdefault(clip.lang, []).append(segments[i].language == clip.lang)
    return {lang: LangResult(
        lang=lang, clips=len(refs[lang]),
        cer=cer(refs[lang], hyps[lang]), wer=wer(refs[lang], hyps[lang], lang),
        ctc_cer=cer(refs[lang], ctc_hyps[lang]), ctc_wer=wer(refs[lang], ctc_hyps[lang], lang),
        tag_accuracy=float(np.mean(tags[lang])), filler=filler_share(refs[lang], hyps[lang]),
        examples=list(zip(refs[lang], hyps[lang], ctc_hyps[lang]))[:3],
    ) for lang in refs}


def _first_per_language(clips: list, limit: int | None) -> list:
    """The first `limit` clips of each language, in order (all of them without a limit)."""
    if limit is None:
        return clips
    seen: dict[str, int] = {}
    kept = []
    for clip in clips:
        if seen.get(clip.lang, 0) < limit:
            kept.append(clip)
            seen[clip.lang] = seen.get(clip.lang, 0) + 1
    return kept


def evaluate_real(pipeline, audio_dir: Path, steps: int, seed: int = 0) -> list[dict]:
    """Transcribe the strongly-referenced real clips of `audio_dir` (manifest.jsonl) through the pipeline."""
    from app.audio.decode import AudioLimits, decode_audio
    from app.results import DecodeOptions

    manifest = Path(audio_dir) / "manifest.jsonl"
    if not manifest.is_file():
        return []
    rows = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("text_kind") not in STRONG_KINDS or not entry.get("text"):
            continue
        lang = entry["language"]
        audio = decode_audio((Path(audio_dir) / entry["file"]).read_bytes(), AudioLimits(200_000_000, 600.0))
        result = pipeline.transcribe(audio, DecodeOptions(steps=steps, seed=seed))
        rows.append({
            "file": entry["file"], "lang": lang, "kind": entry["text_kind"], "reference": entry["text"],
            "hypothesis": result.text, "language_detected": result.language,
            "cer": cer([entry["text"]], [result.text]), "wer": wer([entry["text"]], [result.text], lang),
        })
    return rows


def measure_latency(cases: dict[str, tuple[object, np.ndarray]], steps: int = 8, repeats: int = 7) -> dict:
    """Median wall time of `transcribe` for each case (a pipeline and its audio), after a warm-up, the cases
    taking turns in every round (`app.bench.timing.time_interleaved`), so a busy machine slows them alike."""
    from app.bench.timing import time_interleaved
    from app.results import DecodeOptions

    def run(pipeline, audio):
        return lambda: pipeline.transcribe(audio, DecodeOptions(steps=steps))

    medians, results = time_interleaved({name: run(*case) for name, case in cases.items()}, repeats,
                                        torch.device("cpu"))
    # Steps actually run: a row stops early once stable and confident, so a gap between two cases of the same
    # audio length shows up here before it shows up in the times.
    return {name: {"steps": steps, "repeats": repeats, "median_s": ms / 1000.0, "threads": torch.get_num_threads(),
                   "seconds": len(cases[name][1]) / SAMPLE_RATE, "steps_used": results[name].timing.steps_used}
            for name, ms in medians.items()}


def speech_sample(clips, seconds: float, lang: str = "en") -> np.ndarray:
    """Held-out clips of `lang` joined (from the first again if they run out) until they last `seconds`:
    speech throughout, as a user would send, so a decoder whose cost grows with the words heard is timed on
    words (noise decodes to almost nothing)."""
    own = [clip.audio for clip in clips if clip.lang == lang]
    if not own:
        raise ValueError(f"no held-out {lang} clips to time")
    need = int(seconds * SAMPLE_RATE)
    joined = np.concatenate(own)
    while joined.size < need:
        joined = np.concatenate([joined, *own])
    return joined[:need].astype(np.float32)


def sparse_sample(clips, seconds: float, lang: str = "en") -> np.ndarray:
    """The shortest held-out clip of `lang` followed by silence up to `seconds`: the same audio length as
    `speech_sample` with few words, so the two time a decoder's dependence on the transcript's length."""
    shortest = min((clip.audio for clip in clips if clip.lang == lang), key=len)
    need = int(seconds * SAMPLE_RATE)
    return np.pad(shortest, (0, max(0, need - len(shortest))))[:need]

