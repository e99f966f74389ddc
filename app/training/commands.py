"""CLI wiring for training and evaluation: `register(subparsers)` adds the training subcommands to `diffusion-asr`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.training.acoustic_probe import ProbeOptions, train_probe
from app.training.corpus import SPLIT_NAMES
from app.training.lexicon import LEXICON_PRIORS
from app.training.train_options import add_train_options, train_config

# The project's real-speech clips live beside the checkout, not inside it.
SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


def _cmd_train(args: argparse.Namespace) -> int:
    from app.training.trainer import train

    train(train_config(args), getattr(args, "_argv", None))
    return 0


def _cmd_pretrain_text(args: argparse.Namespace) -> int:
    from app.training.corpus import load_split
    from app.training.text_stage import pretrain_text

    if args.corpus is None:
        print("error: pretrain-text reads --corpus CORPUS_DIR (from `diffusion-asr corpus`)", file=sys.stderr)
        return 2
    config = train_config(args)
    try:
        texts = {lang: load_split(args.corpus, lang, "train") for lang in config.langs}
        info = pretrain_text(config, texts, getattr(args, "_argv", None) or sys.argv[1:])
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{config.out}: {info['steps']} text steps in {info['train_minutes']} min, last losses "
          f"{info['last_losses']}")
    return 0


def _cmd_bench_train_step(args: argparse.Namespace) -> int:
    import tempfile
    from dataclasses import replace

    from app.training.step_timing import check_timing_request, machine_line, time_training_steps
    from app.training.trainer import build_loop, training_device

    config = train_config(args)
    check_timing_request(args.steps, args.warmup, training_device(config.device))  # before the data is read
    with tempfile.TemporaryDirectory() as scratch:
        # Without --work-dir the tokenizer is trained afresh in scratch, never read from or written to a run's.
        work = {"work_dir": Path(scratch)} if args.work_dir is None else {}
        loop, _, _ = build_loop(replace(config, resume=False, **work))
        timing = time_training_steps(loop, args.steps, args.warmup)
    print(f"{machine_line()}; batch {config.batch_size}, {args.warmup} warm-up steps")
    print("\n".join(timing.table()))
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

    corpus_dir = None if args.word_lists else args.corpus  # no corpus: the word-list streams
    try:
        dest = generate_dataset(args.out, list(args.languages or SUPPORTED_LANGUAGES), args.per_lang, args.seed,
                                args.split, workers=args.workers, max_seconds=args.max_seconds,
                                corpus_dir=corpus_dir, engines=() if args.plain else tuple(args.engines),
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


def _cmd_probe_acoustics(args: argparse.Namespace) -> int:
    import torch

    from app.training.cached import load_held_out, stack_caches, train_dirs
    from app.training.encoder_cache import load_encoder_cache
    from app.training.step_timing import machine_line

    torch.set_num_threads(args.threads)
    try:
        options = ProbeOptions(context_layers=args.context_layers, subsample=args.subsample, steps=args.steps,
                               minutes=args.minutes, batch_size=args.batch_size, eval_every=args.eval_every,
                               seed=args.seed)
        train = stack_caches([load_encoder_cache(path) for path in train_dirs(args.encoder_cache)])
        evals = load_held_out(args.encoder_cache, train)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not evals:
        print(f"error: {args.encoder_cache}: needs eval/ or eval-<name>/ caches to read", file=sys.stderr)
        return 2
    _, _, result = train_probe(train, evals, options)
    print(machine_line())
    print(f"context layers {options.context_layers}: {result.parameters:,} parameters, {len(train)} training "
          f"clips, {result.steps} steps of {options.batch_size} in {result.seconds:.0f} s; greedy CTC CER %:")
    print("\n".join(result.lines()))
    return 0


def register(subparsers) -> None:
    """Add the training subcommands (`corpus`, `speech`, `recordings`, `encode-cache`, `train`, `pretrain-text`,
    `bench-train-step`, `probe-acoustics`, `eval`, `lexicon`) to `diffusion-asr`."""
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
    text = p.add_mutually_exclusive_group()
    text.add_argument("--corpus", type=Path, default=Path("runs/corpus"), help="written by `diffusion-asr corpus`")
    text.add_argument("--word-lists", action="store_true",
                      help="random strings of each language's most frequent words (wordfreq) instead of the corpus: "
                           "the everyday words the corpus's sources lack; train never holds an eval sentence")
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
    add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser(
        "pretrain-text", help="train the backbone on corpus sentences alone, before `train --init-from` adds audio",
        description="Builds the model `train --encoder-cache` would, trains its backbone on --corpus's train split "
                    "(diffusion and autoregressive losses, a prompt without audio) and writes a checkpoint that "
                    "`train --init-from` continues with the audio. --max-minutes or --max-steps bound it.",
    )
    add_train_options(p)
    p.set_defaults(func=_cmd_pretrain_text)

    p = subparsers.add_parser(
        "bench-train-step", help="time one training step part by part (CPU)",
        description="Builds the run `train` would with the same options, then times its steps: the whole step "
                    "without the profiler, each labelled part under it.",
    )
    add_train_options(p)
    p.add_argument("--steps", type=int, default=20, help="steps timed, and as many profiled")
    p.add_argument("--warmup", type=int, default=3, help="steps run first and not timed")
    p.set_defaults(func=_cmd_bench_train_step)

    p = subparsers.add_parser(
        "probe-acoustics", help="how far the audio path alone gets on an encoder cache (greedy CTC CER)",
        description="Trains a projector (optionally with transformer layers over its slots) and a character CTC "
                    "head on CACHE/train and CACHE/train-<name>, then reads CACHE/eval and CACHE/eval-<name> by "
                    "greedy CTC. Nothing is saved: it measures the acoustic side of a recipe.",
    )
    p.add_argument("--encoder-cache", type=Path, required=True, help="written by `encode-cache`, as for `train`")
    p.add_argument("--context-layers", type=int, default=0, help="transformer layers after the projector")
    p.add_argument("--subsample", type=int, default=ProbeOptions.subsample, help="encoder positions per slot")
    p.add_argument("--steps", type=int, default=ProbeOptions.steps)
    p.add_argument("--minutes", type=float, default=None, help="stop earlier when this much time has passed")
    p.add_argument("--batch-size", type=int, default=ProbeOptions.batch_size)
    p.add_argument("--eval-every", type=int, default=0, help="print the CER every this many steps (0: at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_cmd_probe_acoustics)

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
