"""The options of `diffusion-asr train`, shared by `bench-train-step`, and the TrainConfig they give."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from app.model.ctc_start.config import CANVASES
from app.training.config import ALIGNED_COUNTS, CACHED_RECIPE, SHIPPED_DIMS, TrainConfig


def _parse_dim(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


# `train` options that map one-to-one onto TrainConfig fields; an option left out keeps the field's default, so
# the recipe's defaults live in TrainConfig alone.
TRAIN_FIELDS = (
    "work_dir", "out", "preset", "train_per_lang", "eval_per_lang", "seed", "batch_size", "lr", "max_minutes",
    "max_steps", "checkpoint_minutes", "ctc_only_until_minutes", "w_ctc", "w_ar", "conv_lr_scale", "conv_gain",
    "warmup_steps", "probe_every", "threads", "noise_exponent", "freeze_audio", "characters", "word_initial",
    "lr_per_stage",
    "device", "canvas_init", "seed_prob", "seed_noise_exponent",
    "freq_masks", "freq_mask_bins", "time_masks", "time_mask_frac", "init_from", "train_only", "corpus",
    "encoder_cache", "self_cond_temperatures", "aligned_positions", "aligned_counts",
    "greedy_count_share",
)


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig choice as an option; one left out keeps the recipe's value."""
    p.add_argument("--work-dir", type=Path,
                   help="scratch: datasets, features, tokenizer, resumable state (default runs/default)")
    p.add_argument("--out", type=Path, help="where the checkpoint is written (default runs/default/model)")
    p.add_argument("--preset", help="base ModelDims preset")
    p.add_argument("--dim", type=_parse_dim, action="append", metavar="KEY=VALUE",
                   help="override one ModelDims field (repeatable)")
    p.add_argument("--train-per-lang", type=int)
    p.add_argument("--eval-per-lang", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-minutes", type=float, help="training-loop time budget")
    p.add_argument("--max-steps", type=int, help="stop after this many steps instead of time")
    p.add_argument("--checkpoint-minutes", type=float)
    p.add_argument("--ctc-only-until-minutes", type=float,
                   help="train only the audio path (encoder, projector, tied lm_head) with CTC until this much "
                        "training time")
    p.add_argument("--w-ctc", type=float, help="CTC loss weight in the full stage")
    p.add_argument("--w-ar", type=float, help="autoregressive loss weight in the full stage")
    p.add_argument("--conv-lr-scale", type=float,
                   help="learning-rate multiplier of the Whisper encoder's convolutions (0 freezes them)")
    p.add_argument("--conv-gain", type=float,
                   help="init scale of the encoder's second convolution (audio against positions)")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--noise-exponent", type=float,
                   help="corrupted canvas fraction t = u ** this, u ~ U(0, 1) (1: uniform; below 1: noisier)")
    p.add_argument("--freeze-audio", action=argparse.BooleanOptionalAction, default=None,
                   help="stop training the encoder and projector after the CTC stage")
    p.add_argument("--canvas-init", choices=CANVASES,
                   help="the canvas decoding starts from: uniform noise, or the greedy-CTC transcript")
    p.add_argument("--aligned-positions", action=argparse.BooleanOptionalAction, default=None,
                   help="place each audio slot at the rotary position of the canvas slot whose token the greedy "
                        "CTC path has emitted up to it (with --encoder-cache; the checkpoint decodes that way)")
    p.add_argument("--aligned-counts", choices=ALIGNED_COUNTS,
                   help="with --aligned-positions, count in training along the greedy path (as inference does) "
                        "or along the forced alignment of the transcript")
    p.add_argument("--greedy-count-share", type=float,
                   help="with --aligned-counts forced, the fraction of rows counted along the greedy path anyway")
    p.add_argument("--seed-prob", type=float,
                   help="fraction of training rows whose noisy canvas is the greedy-CTC transcript (--canvas-init ctc)")
    p.add_argument("--seed-noise-exponent", type=float,
                   help="further corruption of those rows: t = u ** this (above 1: lightly corrupted)")
    p.add_argument("--self-cond-temperatures", choices=("stock", "sampler"),
                   help="divide the self-conditioning logits by the stock schedule's temperatures (0.4-0.8) or "
                        "by those of the sampler the checkpoint is saved with, as inference does")
    p.add_argument("--lr-per-stage", action=argparse.BooleanOptionalAction, default=None,
                   help="give the CTC stage and the full stage each their own warm-up and cosine decay")
    p.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                   help="start from this checkpoint's weights and tokenizer (e.g. models/default) instead of random")
    p.add_argument("--train-only", choices=("all", "adapter"),
                   help="adapter: train the projector and the LoRA weights only, encoder and backbone frozen")
    p.add_argument("--freq-masks", type=int, help="mel bands masked per training clip, redrawn each epoch")
    p.add_argument("--freq-mask-bins", type=int, help="widest masked band, in mel bins")
    p.add_argument("--time-masks", type=int, help="time spans masked per training clip, redrawn each epoch")
    p.add_argument("--time-mask-frac", type=float, help="widest masked span, as a fraction of the clip")
    p.add_argument("--corpus", type=Path, metavar="CORPUS_DIR",
                   help="natural sentences written by `diffusion-asr corpus` instead of random word strings")
    p.add_argument("--encoder-cache", type=Path, metavar="CACHE_DIR",
                   help="train on the frozen whisper-base's cached outputs (CACHE_DIR/train, CACHE_DIR/eval from "
                        "`encode-cache`) with the recipe that decodes from noise; the checkpoint references "
                        "that encoder")
    p.add_argument("--engines", nargs="+", choices=("espeak", "pico"),
                   help="TTS engines rotated per clip, with room/noise/telephone/gain augmentation "
                        "(default: espeak-ng with the original augmentation)")
    p.add_argument("--characters", action=argparse.BooleanOptionalAction, default=None,
                   help="one token per character (the default); --no-characters: byte-level BPE of --dim "
                        "vocab_size tokens (a new work dir's tokenizer)")
    p.add_argument("--word-initial", action=argparse.BooleanOptionalAction, default=None,
                   help="join each space to the character after it in the tokenizer (a new work dir's tokenizer)")
    p.add_argument("--probe-every", type=int,
                   help="steps between held-out greedy-CTC CER lines in the log (0: never)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", help="cpu (default) or cuda[:N]")
    p.add_argument("--workers", type=int, help="processes for speech synthesis and feature extraction")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/state.pt when present")
    p.add_argument("--no-progress", action="store_true")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the options given over the recipe (the cached recipe's with --encoder-cache)."""
    given = {name: getattr(args, name) for name in TRAIN_FIELDS if getattr(args, name) is not None}
    if args.encoder_cache is not None:
        given = {**CACHED_RECIPE, **given}
    if args.engines:
        given["engines"] = tuple(args.engines)
    return TrainConfig(
        **given, dims_override={**SHIPPED_DIMS, **dict(args.dim or [])}, resume=args.resume,
        progress=not args.no_progress, **({"data_workers": args.workers} if args.workers is not None else {}),
    )
