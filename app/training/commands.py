"""CLI wiring for training and evaluation: `register(subparsers)` adds `train` and `eval` to `diffusion-asr`."""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path

from app.model.ctc_start.config import CANVASES
from app.training.corpus import SPLIT_NAMES
from app.training.lexicon import LEXICON_PRIORS

# The project's real-speech clips live beside the checkout, not inside it.
SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


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
_TRAIN_FIELDS = (
    "work_dir", "out", "preset", "train_per_lang", "eval_per_lang", "seed", "batch_size", "lr", "max_minutes",
    "max_steps", "checkpoint_minutes", "ctc_only_until_minutes", "w_ctc", "w_ar", "conv_lr_scale", "conv_gain",
    "warmup_steps", "probe_every", "threads", "noise_exponent", "freeze_audio", "characters", "word_initial",
    "lr_per_stage",
    "device", "canvas_init", "seed_prob", "seed_noise_exponent",
    "freq_masks", "freq_mask_bins", "time_masks", "time_mask_frac", "init_from", "train_only", "corpus",
    "encoder_cache", "self_cond_temperatures",
)


def _cmd_train(args: argparse.Namespace) -> int:
    from app.training.config import CACHED_RECIPE, SHIPPED_DIMS, TrainConfig
    from app.training.trainer import train

    given = {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name) is not None}
    if args.encoder_cache is not None:
        given = {**CACHED_RECIPE, **given}
    if args.engines:
        given["engines"] = tuple(args.engines)
    config = TrainConfig(
        **given, dims_override={**SHIPPED_DIMS, **dict(args.dim or [])}, resume=args.resume,
        progress=not args.no_progress, **({"data_workers": args.workers} if args.workers is not None else {}),
    )
    train(config, getattr(args, "_argv", None))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from app.training.eval_command import eval_command

    return eval_command(args)


def _cmd_lexicon(args: argparse.Namespace) -> int:
    from app.training.lexicon import write_lexicons
    from app.training.texts import LANGS

    for path in write_lexicons(args.model, list(args.languages or LANGS), args.words, args.prior):
        print(f"wrote {path} ({sum(1 for _ in path.open(encoding='utf-8'))} words)")
    print(f"{args.model}: ctc_start.decoding set to 'lexicon'")
    return 0


def _cmd_corpus(args: argparse.Namespace) -> int:
    from app.languages import SUPPORTED_LANGUAGES
    from app.training.corpus import build_corpus

    try:
        manifest = build_corpus(args.out, args.languages or SUPPORTED_LANGUAGES, dev_fraction=args.dev_fraction,
                                eval_fraction=args.eval_fraction)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for lang, counts in manifest["counts"].items():
        print(f"{lang}: train {counts['train']}, dev {counts['dev']}, eval {counts['eval']}")
    return 0


def _cmd_speech(args: argparse.Namespace) -> int:
    from app.languages import SUPPORTED_LANGUAGES
    from app.training.data import generate_dataset

    try:
        dest = generate_dataset(args.out, list(args.languages or SUPPORTED_LANGUAGES), args.per_lang, args.seed,
                                args.split, workers=args.workers, max_seconds=args.max_seconds,
                                corpus_dir=args.corpus, engines=() if args.plain else tuple(args.engines),
                                plain=args.plain)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {dest}")
    return 0


def _cmd_recordings(args: argparse.Namespace) -> int:
    from app.training.prompt_recordings import LANGUAGES, write_dataset

    try:
        dest = write_dataset(args.out, args.split, tuple(args.languages or LANGUAGES), args.max_seconds,
                             args.copies, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {dest}")
    return 0


def _cmd_encode_cache(args: argparse.Namespace) -> int:
    import time

    from app.checkpoint.whisper_base import default_output_dir
    from app.config import Settings
    from app.training.encoder_cache import build_encoder_cache

    encoder_dir = args.encoder_dir or default_output_dir(Settings().model.cache_dir)
    started = time.perf_counter()
    try:
        cache = build_encoder_cache(args.data, encoder_dir, args.out, args.window, args.batch_size, args.device,
                                    progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(f"{args.out}: {len(cache)} clips, {cache.outputs.shape[1]} positions x {cache.outputs.shape[2]} "
          f"(fp16), {elapsed:.1f} s ({len(cache) / max(elapsed, 1e-9):.1f} clips/s)")
    return 0


def register(subparsers) -> None:
    """Add `train`, `eval`, `lexicon` and `corpus` to the `diffusion-asr` subcommands."""
    p = subparsers.add_parser(
        "corpus", help="natural sentences from installed Debian text packages, split train/dev/eval",
        description="Reads the packages of `make training-deps`, cleans and de-duplicates their sentences and "
                    "writes OUT/<lang>/{train,dev,eval}.txt and OUT/manifest.json (docs/training-data.md).",
    )
    p.add_argument("--out", type=Path, default=Path("runs/corpus"))
    p.add_argument("--languages", nargs="+", default=None, help="default: all six")
    p.add_argument("--dev-fraction", type=float, default=0.05)
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.set_defaults(func=_cmd_corpus)

    p = subparsers.add_parser(
        "speech", help="synthesize a dataset split from the corpus: rotated voices, room, noise, telephone, gain",
        description="Writes OUT/SPLIT/shard-*.npz and manifest.json in the format `train` reads; each clip's "
                    "voice and effects are a pure function of (seed, split, language, index).",
    )
    p.add_argument("--corpus", type=Path, default=Path("runs/corpus"), help="written by `diffusion-asr corpus`")
    p.add_argument("--out", type=Path, default=Path("runs/natural/data"))
    p.add_argument("--split", choices=SPLIT_NAMES, default="train",
                   help="dev: sentences neither trained on nor scored, for choosing decoding settings")
    p.add_argument("--per-lang", type=int, default=100, help="clips per language (sentences repeat if fewer)")
    p.add_argument("--languages", nargs="+", default=None, help="default: all six")
    voices = p.add_mutually_exclusive_group()
    voices.add_argument("--engines", nargs="+", choices=("espeak", "pico"), default=["espeak", "pico"])
    voices.add_argument("--plain", action="store_true",
                        help="each language's default espeak-ng voice at its default rate and pitch, no effects "
                             "(a clean check set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=10.0,
                   help="longer clips are shortened word by word (the encoder window)")
    p.set_defaults(func=_cmd_speech)

    p = subparsers.add_parser(
        "recordings", help="real speech: the asterisk-core-sounds prompts (en, es, fr) as a dataset split",
        description="Writes OUT/SPLIT in the dataset layout from Debian's asterisk-core-sounds packages (one "
                    "speaker per language, CC-BY-SA-3.0); a prompt's split is a keyed hash of its sentence.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/recordings"))
    p.add_argument("--split", choices=("train", "eval"), default="train")
    p.add_argument("--languages", nargs="+", choices=("en", "es", "fr"), default=None, help="default: en es fr")
    p.add_argument("--copies", type=int, default=1,
                   help="times each prompt is written: once as recorded, the rest through the augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=10.0, help="longer prompts are left out (the window)")
    p.set_defaults(func=_cmd_recordings)

    p = subparsers.add_parser(
        "encode-cache", help="the frozen whisper-base encoder's outputs of every clip of a dataset, once (fp16)",
        description="Writes OUT/encoder.npy [clips, positions, 512] float16 and OUT/meta.json; a complete cache of "
                    "the same dataset, window and encoder is reused.",
    )
    p.add_argument("--data", type=Path, required=True, help="a dataset split (written by `speech` or `train`)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--encoder-dir", type=Path, help="converted encoder (default: ASR_CACHE_DIR/whisper-base)")
    p.add_argument("--window", type=int, choices=(10, 20, 30), default=10, help="encoder window in seconds")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_encode_cache)

    p = subparsers.add_parser(
        "train", help="train the small default model on synthetic speech (CPU)",
        description="Every option left out takes the shipped recipe's value (app/training/config.py TrainConfig).",
    )
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
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="CER/WER per language on the held-out synthetic set and real clips")
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--baseline", type=Path, default=None,
                   help="a second checkpoint scored on the same data in the same run (the one --model replaces)")
    p.add_argument("--data", type=Path, default=None,
                   help="held-out synthetic split (`speech --split eval`); default: the random-word set under "
                        "--work-dir")
    p.add_argument("--recordings", type=Path, default=None,
                   help="held-out recorded prompts (`recordings --split eval`)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--work-dir", type=Path, default=Path("runs/default"),
                   help="where the held-out set is (generated there when missing)")
    p.add_argument("--eval-per-lang", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="data seed of the held-out set")
    p.add_argument("--limit", type=int, default=None, help="clips per language (default all)")
    p.add_argument("--audio-dir", type=Path, default=SHARED_AUDIO,
                   help="real clips with manifest.jsonl (default: ../shared/audio beside the checkout)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--update-card", action="store_true",
                   help="write the results table into the model's MODEL_CARD.md and README.md")
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser(
        "lexicon", help="add word lists to a checkpoint and decode its CTC start canvas with them",
        description="Writes adapter/lexicon/<lang>.tsv (the training vocabulary and a weight per word) for each "
                    "language, and sets ctc_start.decoding 'lexicon' in the adapter's asr_config.json.",
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--words", type=int, default=None,
                   help="most frequent words per language (default: the training vocabulary's size)")
    p.add_argument("--languages", nargs="+", default=None, help="default: all six")
    p.add_argument("--prior", choices=LEXICON_PRIORS, default="training",
                   help="word weights: 'training' = equal, as the training sentences draw their words (default); "
                        "'wordfreq' = the language's word frequencies")
    p.set_defaults(func=_cmd_lexicon)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.training.commands train|eval ...` (same as `diffusion-asr train|eval`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="diffusion-asr")
    register(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
