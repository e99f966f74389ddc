"""Every choice of a training run in one dataclass, and the shipped model's sizes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from typing import Any

from app.checkpoint.presets import PRESETS, ModelDims
from app.languages import SUPPORTED_LANGUAGES
from app.training.augment import MaskSpec

# Changes to PRESETS["default"] for the shipped model, sized for the CPU budget (a training step costs ~0.08 s
# per clip for the audio path alone and ~0.22 s with the backbone on this 2-core machine):
# - synthetic clips are at most ~6 s, so a 6 s window (300 encoder positions) instead of 10 s;
# - character tokens (about 1,100 in use), which CTC learns from scratch far sooner than whole-word BPE;
# - subsample 2: 25 audio slots per second, as dense French reaches 22 characters per second;
# - a 96-slot canvas: the longest training sentence is 87 characters.
SHIPPED_DIMS: dict = {
    "encoder_positions": 300,
    "encoder_width": 256,
    "encoder_layers": 4,
    "encoder_heads": 4,
    "encoder_ffn": 1024,
    "projector_width": 512,
    "subsample": 2,
    "vocab_size": 1280,
    "canvas_length": 96,
}

# The recipe on the frozen pretrained whisper-base (`TrainConfig.encoder_cache`): a step reads the encoder's
# cached outputs and runs the projector and the backbone only. It decodes as the real model does: audio in the
# prompt as projected (no `ctc_start` section), the canvas from uniform noise, corrupted fractions t ~ U(0, 1)
# in training; all three losses from the first step, as there is no encoder to align first.
CACHED_RECIPE: dict[str, Any] = {
    "audio_compression": None,
    "canvas_init": "noise",
    "noise_exponent": 1.0,
    "ctc_only_until_minutes": 0.0,
}


# How training counts the tokens emitted before each audio slot under aligned positions (`aligned_counts`).
ALIGNED_COUNTS = ("greedy", "forced")


@dataclass
class TrainConfig:
    """Every choice of a training run (recorded in the model card and the resumable state)."""

    work_dir: Path = Path("runs/default")
    out: Path = Path("runs/default/model")  # models/default holds the shipped one
    preset: str = "default"
    dims_override: dict = field(default_factory=lambda: dict(SHIPPED_DIMS))
    langs: tuple[str, ...] = SUPPORTED_LANGUAGES
    train_per_lang: int = 4000
    eval_per_lang: int = 100
    max_seconds: float = 8.0
    data_workers: int = 2
    # Natural sentences instead of random word strings: a corpus written by `diffusion-asr corpus` (its train
    # and eval splits), and the TTS engines rotated per clip with `degrade`'s augmentation (empty: espeak-ng
    # with the original augmentation). docs/training-data.md.
    corpus: Path | None = None
    engines: tuple[str, ...] = ()
    # Train on the frozen converted whisper-base's cached outputs instead of an encoder of the run's own: a
    # directory with `train/` (and `eval/` for the CTC probe), each written by `diffusion-asr encode-cache`.
    # The checkpoint then references that encoder (`app.checkpoint.encoder_ref`). Use with CACHED_RECIPE.
    encoder_cache: Path | None = None
    seed: int = 0
    batch_size: int = 16
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    # Separate warm-up + cosine cycles for the CTC stage and the full stage (see state.lr_factor); off: one
    # cycle over the whole budget, which leaves the backbone only the decaying tail of the rate (13% of the
    # peak down to 5% after a 55-minute CTC stage; with its own cycle the language tag rose from 95-100% to
    # 98-100% right, docs/training.md).
    lr_per_stage: bool = True
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_minutes: float = 75.0  # training-loop budget (data and features are extra: ~7 min on 2 cores)
    max_steps: int | None = None
    checkpoint_minutes: float = 5.0
    hint_prob: float = 0.3
    self_cond_prob: float = 0.5
    # The temperatures the first pass's logits are divided by before they self-condition the second: "stock"
    # draws from the stock schedule's 0.4-0.8, "sampler" from `sampler`'s t_min-t_max, the range inference
    # then feeds (see AsrTrainer.self_cond_temperature).
    self_cond_temperatures: str = "stock"
    pad_weight: float = 0.25
    w_diffusion: float = 1.0
    w_ar: float = 0.5
    w_ctc: float = 1.0
    # Stage "ctc": until this much training time, only the CTC loss updates the Whisper encoder, the projector
    # and the tied lm_head (steps ~4x cheaper than full ones that teach the audio path its alignment first).
    # Decoding starts from the CTC transcript, so the audio path bounds the result: 55 of 75 minutes gave 1-7
    # points less CER than 30 (docs/training.md).
    ctc_only_until_minutes: float = 55.0
    # After the CTC stage the Whisper encoder and projector stop learning and run without gradients: the backbone
    # learns to read a fixed audio path, and its steps skip the encoder's backward pass (~30% cheaper). CTC then
    # trains only the tied lm_head, which keeps the greedy-CTC head in step with the backbone's embeddings.
    freeze_audio: bool = True
    # Corrupted fraction of a training canvas: t = u ** noise_exponent, u ~ U(0, 1). Below 1 it favours heavily
    # corrupted canvases, where decoding from noise starts; above 1 lightly corrupted ones, like the CTC
    # transcript decoding starts from with `canvas_init` "ctc" (70-90% right). At 2 the decoder returns that
    # transcript unharmed; at 0.5 it cost 0.4-3.8 points of CER (docs/training.md).
    noise_exponent: float = 2.0
    # How the projected audio enters the prompt: "ctc" merges it by the CTC prediction, one slot per emitted
    # character, so the backbone need not learn where each character was spoken (the CTC-start add-on,
    # `app.model.ctc_start`); None: as projected, the real model's way.
    audio_compression: str | None = "ctc"
    # With `audio_compression` None: the prompt's audio slots take the rotary positions of the canvas slots whose
    # tokens the projector's greedy CTC path has emitted up to them (`app.model.aligned_positions`), so the
    # decoder finds each token's audio at relative distance 0 instead of counting tokens along the audio.
    aligned_positions: bool = False
    # What training counts along for those positions: "greedy", the projector's best path as inference does, or
    # "forced", the Viterbi alignment of the transcript through the same CTC head (`app.training.aligned_counts`),
    # which keeps each reference token beside its own audio where the best path drops or adds one.
    aligned_counts: str = "greedy"
    # With "forced" counts, the fraction of rows counted along the greedy path anyway, the silent padding
    # included, so the decoder learns to end its text where counts run past it. Measured against the full stops
    # a forced-count checkpoint wrote when inference counted the padding: it removed them but cost CER (thirteenth
    # run, docs/training-v2.md); the checkpoint's `past_audio` "hold" removes them at inference instead, so the
    # recipe keeps 0, which draws nothing (earlier runs' random streams are unchanged).
    greedy_count_share: float = 0.0
    # The canvas decoding starts from (`ctc_start.canvas`): "ctc" starts from the greedy-CTC transcript, which the
    # decoder keeps or corrects (against "noise": 10-29 points less CER, docs/training.md). Needs "ctc" above.
    canvas_init: str = "ctc"
    # Fraction of diffusion rows whose noisy canvas is that transcript (a random tag slot, CTC's own insertions,
    # deletions and misspellings), further corrupted by t = u ** seed_noise_exponent. Measured worse (2-39
    # points more CER than without, docs/training.md), so off: trained on corrupted clean canvases only, the
    # decoder keeps a seed's tokens.
    seed_prob: float = 0.0
    seed_noise_exponent: float = 2.0
    # Sampler settings written into the checkpoint's asr_config.json for inference; training is unaffected (its
    # self-conditioning temperatures stay the stock 0.4-0.8). Chosen on held-out sentences 200-229, which are
    # never scored: against the stock (0.1, 0.4, 0.8), 4-7 points less CER in every language (docs/training.md).
    sampler: dict = field(default_factory=lambda: {"entropy_bound": 1.0, "t_min": 0.1, "t_max": 0.3})
    # SpecAugment-style masks on the training log-mels, redrawn each time a clip is drawn (app.training.augment):
    # `freq_masks` bands of up to `freq_mask_bins` mel bins and `time_masks` spans of up to `time_mask_frac` of
    # the clip, set to the clip's mean. Off (0 masks) in the recipe, whose CPU runs see each clip about 3 times;
    # meant for runs that see each clip many times (the GPU run, 18 epochs, overfit: docs/training.md).
    freq_masks: int = 0
    freq_mask_bins: int = 15
    time_masks: int = 0
    time_mask_frac: float = 0.05
    conv_gain: float = 8.0  # extra init scale of the second Whisper convolution (see trainer.init_audio_path)
    conv_lr_scale: float = 0.1  # learning-rate multiplier of the Whisper convolutions (see state.make_optimizer)
    bucket_batches: int = 50  # batches of similar clip length, sorted within runs of this many (0: off)
    characters: bool = True  # character tokenizer (see app.checkpoint.tokenizer.build_tokenizer)
    # With `characters`: a space joins the next character, so a word boundary the CTC head gets wrong costs one
    # wrong token, not a shift of the compressed audio against the canvas (see build_tokenizer).
    word_initial: bool = True
    # Start from a saved checkpoint's weights and tokenizer instead of random init (its shape must be the run's).
    init_from: Path | None = None
    # What learns: "all" parameters, or "adapter": the projector and the backbone's LoRA only, with the Whisper
    # encoder and the backbone's own weights (the tied lm_head too) frozen, as the real adapter was trained on a
    # frozen encoder and DiffusionGemma (DESIGN.md section 1). With "adapter" the audio path is never frozen.
    train_only: str = "all"
    probe_every: int = 200  # steps between held-out greedy-CTC CER probes in the log (0: never)
    threads: int = 2
    device: str = "cpu"  # "cuda" trains on a GPU (same seed, same data and batches; not bit-identical)
    resume: bool = False
    progress: bool = True

    def ctc_start(self) -> dict[str, Any] | None:
        """The checkpoint's `ctc_start` section (`app.model.ctc_start.config`), None on the stock path."""
        if self.aligned_positions and self.audio_compression is not None:
            raise ValueError("aligned_positions places the audio as projected: it needs audio_compression None")
        if self.aligned_counts not in ALIGNED_COUNTS:
            raise ValueError(f"aligned_counts must be one of {ALIGNED_COUNTS}, got {self.aligned_counts!r}")
        if not 0.0 <= self.greedy_count_share <= 1.0:
            raise ValueError(f"greedy_count_share must be in [0, 1], got {self.greedy_count_share!r}")
        if self.audio_compression is None:
            if self.canvas_init != "noise":
                raise ValueError("canvas_init 'ctc' reads CTC-compressed audio: it needs audio_compression 'ctc'")
            return None
        if self.audio_compression != "ctc":
            raise ValueError(f"audio_compression must be 'ctc' or None, got {self.audio_compression!r}")
        return {"canvas": self.canvas_init}

    def masks(self) -> MaskSpec:
        return MaskSpec(self.freq_masks, self.freq_mask_bins, self.time_masks, self.time_mask_frac)

    def dims(self) -> ModelDims:
        return replace(PRESETS[self.preset], **self.dims_override)
