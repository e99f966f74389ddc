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
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch

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
    examples: list[tuple[str, str, str]]  # (reference, diffusion, ctc)


def evaluate_synthetic(pipeline, feats_or_clips, steps: int, seed: int = 0, batch: int = 16,
                       limit: int | None = None) -> dict[str, LangResult]:
    """Diffusion (no hint) and greedy-CTC transcripts of held-out clips, per language.

    Each clip is one window (synthetic clips are shorter than the window), so the batched path below is what
    `AsrPipeline.transcribe` runs for it: `encode` (= `project`, whose output the CTC column decodes, then
    `compress`) -> `prefill` (no hint) -> `denoise_all` with the window's generator `window_generator(seed, 0)`
    -> `TranscriptDecoder`. Batching only shares the forward passes; every row draws from its own generator.
    """
    from app.model.backbone import softcap
    from app.model.denoiser import DenoiseJob, denoise_all
    from app.model.pipeline import window_generator
    from app.model.projector import audio_slots
    from app.training.losses import greedy_ctc

    clips = list(feats_or_clips)
    if limit is not None:
        per: dict[str, int] = {}
        kept = []
        for clip in clips:
            if per.get(clip.lang, 0) < limit:
                kept.append(clip)
                per[clip.lang] = per.get(clip.lang, 0) + 1
        clips = kept
    refs: dict[str, list[str]] = {}
    hyps: dict[str, list[str]] = {}
    ctc_hyps: dict[str, list[str]] = {}
    tags: dict[str, list[bool]] = {}
    model = pipeline.backbone
    for start in range(0, len(clips), batch):
        chunk = clips[start:start + batch]
        audio = pipeline.project([c.audio for c in chunk])
        jobs = [
            DenoiseJob(prefill=pipeline.prefill(encoded, None, None), steps=steps,
                       generator=window_generator(seed, 0, pipeline.device))
            for encoded in pipeline.encode_projected(audio, [len(c.audio) for c in chunk])
        ]
        results = denoise_all(model, jobs, pipeline.params, pipeline.sampler)
        with torch.no_grad():
            logits = softcap(model.lm_head(audio), model.final_logit_softcapping)
        lengths = torch.tensor([audio_slots(len(c.audio), pipeline.projector.subsample, audio.shape[1])
                                for c in chunk])
        ctc_ids = greedy_ctc(logits, lengths, blank=pipeline.tokenizer.pad_token_id)
        for clip, result, ids in zip(chunk, results, ctc_ids):
            text, _ = pipeline.transcripts.decode(result.tokens, clip.lang)
            tag = pipeline.transcripts.model_language(result.tokens)
            refs.setdefault(clip.lang, []).append(clip.text)
            hyps.setdefault(clip.lang, []).append(text)
            ctc_hyps.setdefault(clip.lang, []).append(pipeline.tokenizer.decode(ids, skip_special_tokens=True))
            tags.setdefault(clip.lang, []).append(tag == clip.lang)
    out = {}
    for lang in refs:
        out[lang] = LangResult(
            lang=lang, clips=len(refs[lang]),
            cer=cer(refs[lang], hyps[lang]), wer=wer(refs[lang], hyps[lang], lang),
            ctc_cer=cer(refs[lang], ctc_hyps[lang]), ctc_wer=wer(refs[lang], ctc_hyps[lang], lang),
            tag_accuracy=float(np.mean(tags[lang])),
            examples=list(zip(refs[lang], hyps[lang], ctc_hyps[lang]))[:3],
        )
    return out


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


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def results_markdown(synthetic: dict[str, LangResult], real: list[dict], steps: int, latency: dict | None,
                     command: str) -> str:
    lines = [
        "## Results",
        "",
        f"Measured with `{command}`.",
        "",
        f"Held-out synthetic set (espeak-ng, sentences never seen in training), diffusion decoder at {steps} steps,"
        " no language hint; greedy CTC of the projector head for comparison. CER/WER in %. Normalisation:"
        " NFKC, lowercase, punctuation and symbols removed; CER on characters without spaces; Mandarin WER on"
        " characters.",
        "",
        "| language | clips | CER | WER | tag accuracy | CTC CER | CTC WER |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, r in synthetic.items():
        lines.append(f"| {lang} | {r.clips} | {_pct(r.cer)} | {_pct(r.wer)} | {_pct(r.tag_accuracy)} | "
                     f"{_pct(r.ctc_cer)} | {_pct(r.ctc_wer)} |")
    if real:
        lines += ["", "Real recordings (../shared/audio, strong references only; expected poor: the model has "
                  "heard only espeak-ng):", "", "| file | lang | CER | WER | transcript |", "|---|---|---:|---:|---|"]
        for row in real:
            hyp = row["hypothesis"].replace("|", "/")[:80]
            lines.append(f"| {row['file']} | {row['lang']} | {_pct(row['cer'])} | {_pct(row['wer'])} | {hyp} |")
    if latency:
        lines += ["", f"CPU latency, 5 s of {latency.get('audio', 'audio')}, {latency['steps']} steps, through the serving pipeline "
                  f"(`load_pipeline(dir).transcribe(audio, DecodeOptions(steps={latency['steps']}))`, "
                  f"{latency['threads']} torch threads, median of {latency['repeats']}): "
                  f"**{latency['median_s'] * 1000:.0f} ms** (min {latency['min_s'] * 1000:.0f} ms). "
                  f"Measured with `{latency['command']}`."]
    return "\n".join(lines) + "\n"


def measure_latency(pipeline, steps: int = 8, repeats: int = 7, seconds: float = 5.0, audio=None) -> dict:
    """Median wall time of `transcribe` on `seconds` of audio (a synthetic clip padded/cut, or noise)."""
    from app.results import DecodeOptions

    n = int(seconds * 16000)
    if audio is None:
        audio = (np.random.default_rng(0).standard_normal(n) * 0.05).astype(np.float32)
    audio = np.pad(audio, (0, max(0, n - len(audio))))[:n].astype(np.float32)
    pipeline.transcribe(audio, DecodeOptions(steps=steps))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipeline.transcribe(audio, DecodeOptions(steps=steps))
        times.append(time.perf_counter() - t0)
    return {"steps": steps, "repeats": repeats, "median_s": float(np.median(times)), "min_s": float(min(times)),
            "threads": torch.get_num_threads()}


def speech_sample(clips, seconds: float, lang: str = "en") -> np.ndarray:
    """Held-out clips of `lang` joined until they last `seconds`: speech throughout, as a user would send,
    so a decoder whose cost grows with the words heard is timed on words (noise decodes to almost nothing)."""
    parts, total = [], 0
    for clip in clips:
        if clip.lang == lang:
            parts.append(clip.audio)
            total += len(clip.audio)
            if total >= seconds * 16000:
                break
    return np.concatenate(parts)[: int(seconds * 16000)].astype(np.float32)


def _update_card(model_dir: Path, results_md: str) -> None:
    """Put the results into the model card: re-rendered from the run's `train_info.json` when the checkpoint
    carries one, else spliced in before its "## Limits" section."""
    from app.checkpoint.asr_config_file import read_asr_config
    from app.checkpoint.reading import load_lexicons
    from app.training.card import decoding_md, model_card

    card_path = model_dir / "adapter" / "MODEL_CARD.md"
    info_path = model_dir / "adapter" / "train_info.json"
    if info_path.is_file():
        config = read_asr_config(model_dir / "adapter")
        decoding = decoding_md(config, load_lexicons(model_dir / "adapter"))
        card = model_card(json.loads(info_path.read_text(encoding="utf-8")), results_md, decoding)
        card_path.write_text(card, encoding="utf-8")
        (model_dir / "README.md").write_text(card, encoding="utf-8")
        return
    card = card_path.read_text(encoding="utf-8")
    start = card.find("## Results")
    end = card.find("## Limits")
    if start >= 0:
        card = card[:start] + card[end:] if end > start else card[:start]
    end = card.find("## Limits")
    card = (card[:end] + results_md + "\n" + card[end:]) if end >= 0 else card + "\n" + results_md
    card_path.write_text(card, encoding="utf-8")
    (model_dir / "README.md").write_text(card, encoding="utf-8")


def eval_command(args) -> int:
    import shlex
    import sys

    from app.checkpoint.loading import load_model_dir
    from app.training.data import MANIFEST, generate_dataset, load_dataset
    from app.training.texts import LANGS

    torch.set_num_threads(args.threads)
    data = Path(args.work_dir) / "data" / "eval"
    ok = False
    if (data / MANIFEST).is_file():
        m = json.loads((data / MANIFEST).read_text(encoding="utf-8"))
        ok = m["n_per_lang"] == args.eval_per_lang and m["seed"] == args.seed
    if not ok:
        generate_dataset(Path(args.work_dir) / "data", list(LANGS), args.eval_per_lang, args.seed, "eval")
    pipeline = load_model_dir(Path(args.model))
    t0 = time.monotonic()
    synthetic = evaluate_synthetic(pipeline, load_dataset(data), args.steps, limit=args.limit)
    real = evaluate_real(pipeline, args.audio_dir, args.steps)
    latency = measure_latency(pipeline, steps=8, audio=speech_sample(load_dataset(data), seconds=5.0))
    latency["audio"] = "held-out English synthetic speech (clips joined)"
    latency["command"] = f"diffusion-asr eval --model {args.model} (measure_latency: 5 s, steps=8)"
    command = "diffusion-asr " + " ".join(shlex.quote(a) for a in getattr(args, "_argv", sys.argv[1:]))
    md = results_markdown(synthetic, real, args.steps, latency, command)
    print(md)
    for lang, r in synthetic.items():
        for ref, hyp, ctc in r.examples[:2]:
            print(f"[{lang}] ref: {ref}\n     dif: {hyp}\n     ctc: {ctc}")
    print(f"eval took {time.monotonic() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "synthetic": {k: vars(v) for k, v in synthetic.items()}, "real": real, "latency": latency,
        }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.update_card:
        _update_card(Path(args.model), md)
    return 0
