"""The model card of a trained checkpoint: data, sizes, the exact command, results and limits."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from app.checkpoint.parts import ModelParts
from app.model.asr_config import AsrConfig
from app.model.ctc_start.config import CtcStartConfig


def count_params(parts: ModelParts) -> dict[str, int]:
    # A referenced pretrained encoder is not part of the checkpoint: it counts 0 here.
    whisper_enc = sum(p.numel() for p in parts.whisper.get_encoder().parameters()) if parts.whisper else 0
    projector = sum(p.numel() for p in parts.projector.parameters())
    backbone = sum(p.numel() for p in parts.backbone.parameters())
    return {"encoder": whisper_enc, "projector": projector, "backbone_with_lora": backbone,
            "total": whisper_enc + projector + backbone}


def train_feats_manifest(work: Path) -> dict:
    path = work / "data" / "train" / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _where(info: dict) -> str:
    """The device the run trained on, as the card states it (runs recorded before `device_name` were CPU runs)."""
    device = info.get("device_name", "CPU")
    precision = "fp32" if device == "CPU" else "fp32 with TF32 matmuls"
    return f"{precision}, {device}, {info['machine']}"


def _what_learned(cfg: dict) -> str:
    """Which weights the run trained, and from where."""
    start = f"from the weights of `{cfg['init_from']}`" if cfg.get("init_from") else "from random init"
    if cfg.get("encoder_cache"):
        learned = "The projector and the LoRA weights" if cfg.get("train_only") == "adapter" else \
            "The projector and the backbone"
        return f"{learned} trained {start} on the frozen whisper-base encoder's cached outputs"
    if cfg.get("train_only") == "adapter":
        return f"The projector and the LoRA weights trained {start}, the encoder and the backbone frozen"
    return f"All parameters trained {start}"


def decoding_md(config: AsrConfig, lexicons: dict[str, dict[str, float]]) -> str:
    """How the checkpoint reads its CTC start canvas, from its `asr_config.json` and word lists."""
    if config.ctc_start is None:
        return ""
    search = CtcStartConfig.from_dict(config.ctc_start)
    if search.canvas != "ctc" or search.decoding != "lexicon":
        return ""
    sizes = ", ".join(f"{lang} {len(counts):,}" for lang, counts in sorted(lexicons.items()))
    equal = all(len(set(counts.values())) == 1 for counts in lexicons.values())
    prior = ("every listed word equally likely, as the training sentences draw their words" if equal
             else "P from the list's weights (wordfreq's frequencies)")
    text = (
        "The canvas starts from the CTC head's reading searched against word lists (`ctc_start.decoding` "
        f"\"lexicon\", `app/model/ctc_start/lexicon_search.py`): a CTC prefix beam search ({search.beam_width} "
        f"hypotheses) that adds, per word, {search.lm_weight:g} x ln P(word) + {search.word_bonus:g} for a listed "
        f"word and {search.oov_penalty:g} for any other, {prior}, and {search.token_bonus:g} per token "
        "(the CTC head drops faint letters more often than it invents them). The lists "
        f"(`adapter/lexicon/<lang>.tsv`; words: {sizes}) are the training vocabulary, written by `diffusion-asr "
        "lexicon --model DIR`. Words end at a space, or in Mandarin, written without spaces, where the next "
        "character continues no listed word (longest match). The prompt's audio is then merged along that "
        "reading's CTC alignment. A language without a list starts from the greedy reading."
    )
    return "## Decoding\n\n" + textwrap.fill(text, width=112, break_on_hyphens=False) + "\n\n"


def _data_lines(data: dict) -> str:
    """The card's speech and text lines: the original recipe's, or the natural-sentence recipe's."""
    source = data.get("text_source") or {}
    if source.get("corpus") is None:
        voices = ", ".join(f"{k} {len(v)}" for k, v in (data.get("voices") or {}).items())
        return (f"- Synthetic speech from espeak-ng ({data.get('espeak_version', 'espeak-ng')}), voices: {voices} "
                f"voice variants,\n  random speed, pitch, gain, white/pink noise and leading/trailing silence "
                f"(`app/training/synth.py`).\n- Text: {source.get('source')}: random sequences of\n  "
                f"{source.get('words_per_sentence')} words from the most frequent words per language\n  "
                f"({source.get('vocab_size')}). Training sentences never contain a held-out sentence.\n")
    sources = ((source.get("corpus_manifest") or {}).get("sources") or {})
    listed = "; ".join(f"{name} ({s['package']} {s.get('version') or ''}, {s['licence']})"
                       for name, s in sources.items())
    return (f"- Synthetic speech from {' and '.join(data.get('engines') or [])} voices rotated per clip "
            f"({data.get('espeak_version', 'espeak-ng')}), with room reverberation, noise, telephone band and "
            f"gain (`app/training/voices.py`, `degrade.py`).\n- Text: natural sentences (`diffusion-asr corpus`, "
            f"docs/training-data.md): {listed or source.get('corpus')}. Held-out sentences are a keyed-hash split "
            f"that training never contains.\n")


def model_card(info: dict, results_md: str = "", decoding: str = "") -> str:
    """The model card; `results_md` (the eval table and latency) is filled in by `diffusion-asr eval`, as is
    `decoding` (`decoding_md`) when the checkpoint decodes with word lists."""
    p = info["params"]
    d = info["dims"]
    data = info.get("data_manifest", {})
    cfg = info["config"]
    unit = "character, a space joined to the character after it" if cfg.get("word_initial") else "character"
    tokens = (f"one token per {unit} (byte-level BPE whose merges only rebuild whole characters, trained on the "
              "training sentences), language tags `<|xx|>`" if cfg.get("characters") else
              "byte-level BPE trained on the training sentences, language tags `<|xx|>`")
    later = ("then all three losses, with the encoder and projector frozen (CTC trains only the lm_head)"
             if cfg.get("freeze_audio") else "then all three losses on every parameter")
    stage = (f"First {cfg['ctc_only_until_minutes']:g} min of training: CTC alone, on the Whisper encoder, the "
             f"projector and the tied lm_head (the backbone is not run); {later}."
             if cfg.get("ctc_only_until_minutes") else "All three losses from the first step.")
    cycles = " (once per stage)" if cfg.get("lr_per_stage") and cfg.get("ctc_only_until_minutes") else ""
    noise = cfg.get("noise_exponent", 1.0)
    levels = "t ~ U(0,1)" if noise == 1.0 else f"t = u^{noise:g}, u ~ U(0,1),"
    seeded = ""
    if cfg.get("canvas_init") == "ctc":
        seeded = ("Decoding starts from the greedy-CTC transcript of the compressed audio under the language tag "
                  "that the autoregressive head predicts after the prompt, kept at every step "
                  "(`ctc_start.canvas` \"ctc\")")
        seeded += (f"; on {cfg['seed_prob']:.0%} of the diffusion rows, training corrupts that transcript (t = "
                   f"u^{cfg['seed_noise_exponent']:g}) instead of the clean canvas.\n" if cfg.get("seed_prob")
                   else ".\n")
    masks = ""
    if cfg.get("freq_masks") or cfg.get("time_masks"):
        masks = (f"SpecAugment-style masks on every training clip, redrawn each time it is drawn: {cfg['freq_masks']} "
                 f"mel bands of up to {cfg['freq_mask_bins']} bins and {cfg['time_masks']} time spans of up to "
                 f"{cfg['time_mask_frac']:.0%} of the clip, set to the clip's mean.\n")
    limits = ("- The word lists hold the training vocabulary: a word outside them is written only where the audio is "
              "clearer\n  about it than about any listed word that sounds alike.\n" if decoding else "")
    cached = bool(cfg.get("encoder_cache"))
    return f"""{_CACHED_INTRO if cached else _OWN_ENCODER_INTRO}
## Data

{_cache_lines(info) if cached else _data_lines(data)}- {_clips_line(info, data, cached)}{info['train_clips']} used
  after dropping clips whose tokens do not fit the canvas or the CTC slots ({info['dropped']}).

## Sizes

- {_encoder_line(d, p, cached)}
- Projector: conv subsample {d['subsample']} -> {d['encoder_positions'] // d['subsample']} audio slots,
  width {d['projector_width']}{_context_line(d)}; {p['projector']:,} parameters.
- Backbone (DiffusionGemma): hidden {d['hidden']} x {d['layers']} layers, {d['experts']} experts top-{d['top_k_experts']},
  vocabulary {d['vocab_size']} ({tokens}),
  canvas {d['canvas_length']} tokens, LoRA rank {d['lora_rank']} on encoder/decoder attention;
  {p['backbone_with_lora']:,} parameters (encoder and decoder share their text weights).
- Total {p['total']:,} parameters, stored in fp16.

## Training

{_what_learned(cfg)} ({_where(info)}, torch {info['torch']}) with three losses:
uniform-diffusion cross-entropy on the canvas (weight {info['config']['w_diffusion']}; corrupted fraction
{levels} per row, all positions scored, <pad> positions weighted {info['config']['pad_weight']}; self-conditioning
on {info['config']['self_cond_prob']:.0%} of rows with the first pass's logits divided by a temperature in
[0.4, 0.8]), autoregressive next-token loss through the backbone's causal encoder (weight {info['config']['w_ar']}),
CTC on the projector output through the lm_head (weight {info['config']['w_ctc']}, blank = <pad>, targets = text
tokens without the tag). Language hint in the prompt on {info['config']['hint_prob']:.0%} of batches.
{masks}{seeded}{stage}
AdamW lr {info['config']['lr']}, warm-up {info['config']['warmup_steps']} steps, cosine decay{cycles}, batch
{info['config']['batch_size']}, {info['steps']} steps ({info['examples_seen']:,} clips seen).

```
{info['command']}
```

Seed {info['seed']}. Training loop {info['train_minutes']} min ({info['this_invocation_wall_minutes']} min wall clock
for this invocation, which reused the data and features already in its work directory: {info['data_timings']}).
{info.get('note', '')}

{decoding}{results_md}
## Limits

- {_CACHED_LIMIT if cached else _OWN_ENCODER_LIMIT}
- Windows of {d['encoder_positions'] * 2 / 100:.0f} s; at most {d['canvas_length'] - 2} tokens per window.
- A demo of the architecture, not a production model.
{limits}"""


def _context_line(dims: dict) -> str:
    """The projector's transformer layers over its slots, when it has any (older runs' dims lack the key)."""
    layers = dims.get("context_layers", 0)
    noun = "layers" if layers > 1 else "layer"
    return (f", then {layers} transformer {noun} over the slots ({dims['context_heads']} heads, FFN "
            f"{dims['context_ffn']})") if layers else ""


_OWN_ENCODER_INTRO = """# default: a small diffusion ASR model (en, de, fr, es, hi, zh)

The project's shipped demo model: the serving architecture (Whisper-style encoder -> projector ->
DiffusionGemma uniform-diffusion backbone with LoRA) at a size that runs on a laptop CPU. Trained from scratch
on synthetic espeak-ng speech only.
"""
_CACHED_INTRO = """# A diffusion ASR model on the frozen whisper-base encoder (en, de, fr, es, hi, zh)

The serving architecture (Whisper encoder -> projector -> DiffusionGemma uniform-diffusion backbone with LoRA):
OpenAI's pretrained whisper-base encoder (MIT), frozen and referenced by checksum (`encoder/`), not stored here;
the projector and the backbone trained by this project on its cached outputs.
"""
_OWN_ENCODER_LIMIT = """Trained only on synthetic espeak-ng speech of random word sequences: expect weak results on real recordings
  (accents, reverberation, natural prosody) and no punctuation or casing."""
_CACHED_LIMIT = """Trained only on the speech the caches above hold: expect weaker results on other voices, accents and rooms.
  Punctuation and casing are those of the training transcripts."""


def _cache_lines(info: dict) -> str:
    """The card's data lines of a run on cached encoder outputs: each training cache and its clips."""
    counts = info.get("cache_clips") or {}
    listed = ", ".join(f"`{name}` {count:,}" for name, count in counts.items())
    return (f"- Cached whisper-base outputs of `{info['config']['encoder_cache']}` (`diffusion-asr encode-cache`; "
            f"the speech and its sources: docs/training-data.md): {listed or 'clip counts not recorded'}.\n")


def _encoder_line(dims: dict, params: dict, cached: bool) -> str:
    """The card's encoder line: the referenced pretrained encoder, or the checkpoint's own."""
    window = f"{dims['encoder_positions']} positions = {dims['encoder_positions'] * 2 / 100:.0f} s window"
    if cached:
        return f"Encoder: whisper-base, frozen, referenced (not stored), {dims['encoder_width']} wide; {window}."
    return (f"Encoder (Whisper architecture): {dims['encoder_layers']} layers x {dims['encoder_width']}, {window}; "
            f"{params['encoder']:,} parameters.")


def _clips_line(info: dict, data: dict, cached: bool) -> str:
    """How many training clips the run had: the caches' sum (nothing when the run did not record the caches'
    counts), or the generated set's count and hours."""
    if not cached:
        return f"{data.get('total')} training clips ({data.get('hours')} h), "
    counts = info.get("cache_clips")
    return f"{sum(counts.values()):,} training clips, " if counts else "training clips: "
