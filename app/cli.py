"""`diffusion-asr serve | transcribe | stream | make-checkpoint | inspect-adapter | import-adapter |
convert-encoder | train | eval | lexicon | corpus | speech | recordings | encode-cache | pretrain-text |
probe-acoustics`, and the benchmarks `bench | bench-soak | bench-steps | bench-vocab | bench-prefill |
bench-engine | bench-encoder | bench-train-step`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from app.languages import SUPPORTED_LANGUAGES
from app.request_options import MAX_STEPS, MIN_STEPS

log = logging.getLogger("diffusion_asr")


def _quiet_libraries() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    # transformers 5.x warns about its own deprecated internals when loading any model; nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="model directory (encoder/, backbone/, adapter/)")
    parser.add_argument("--encoder", type=Path, help="Whisper directory, overrides MODEL/encoder")
    parser.add_argument("--backbone", type=Path, help="DiffusionGemma directory, overrides MODEL/backbone")
    parser.add_argument("--adapter", type=Path, help="adapter directory, overrides MODEL/adapter")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None)
    _trust_arg(parser)


def _trust_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-adapter-code", action="store_true", default=None,
                        help="build a published adapter's projector with its own audio.AudioProjector "
                             "(runs the adapter's code; default ASR_TRUST_ADAPTER_CODE or off)")


_SETTING_FLAGS = ("model", "encoder", "backbone", "adapter", "device", "host", "port", "trust_adapter_code")


def _setting_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags, by their flat names."""
    return {k: v for k in _SETTING_FLAGS if (v := getattr(args, k, None)) is not None}


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from app.audio.decode import AudioLimits, decode_audio
    from app.checkpoint.loading import load_from_settings
    from app.config import Settings
    from app.formats import render
    from app.request_options import RequestOptions, RequestResolver, parse_options

    settings = Settings.flat(**_setting_overrides(args))
    request = parse_options(RequestOptions, {"language": args.language, "prompt": args.prompt,
                                             "denoising_steps": args.steps, "seed": args.seed})
    pipeline = load_from_settings(settings.model)
    resolver = RequestResolver.for_model(pipeline.languages, pipeline.default_steps, settings.model.denoising_steps,
                                         settings.model.default_seed, settings.server.max_prompt_chars)
    options = resolver.resolve(request)
    limits = AudioLimits(max_bytes=int(settings.server.max_upload_mb * 1024 * 1024),
                         max_seconds=settings.server.max_audio_seconds)
    for path in args.files:
        started = time.perf_counter()
        audio = decode_audio(Path(path).read_bytes(), limits)
        decode_ms = (time.perf_counter() - started) * 1000.0
        result = pipeline.transcribe(audio, options)
        result.timing.audio_decode_ms = decode_ms
        result.timing.total_ms += decode_ms
        if len(args.files) > 1 and args.format == "text":
            print(f"== {path}")
        print(render(result, args.format, pipeline.name), end="" if args.format != "json" else "\n")
    return 0


def _cmd_make_checkpoint(args: argparse.Namespace) -> int:
    from app.checkpoint.parts import write_random_checkpoint

    out = write_random_checkpoint(args.out, args.preset, seed=args.seed)
    print(out)
    return 0


def _cmd_inspect_adapter(args: argparse.Namespace) -> int:
    from app.checkpoint.adapter_inspect import inspect_adapter

    lines, loads = inspect_adapter(args.adapter, args.backbone, args.encoder, bool(args.trust_adapter_code))
    print("\n".join(lines))
    return 0 if loads else 1


def _cmd_import_adapter(args: argparse.Namespace) -> int:
    from app.checkpoint.adapter_import import import_adapter

    for line in import_adapter(args.src, args.out, bool(args.trust_adapter_code), args.backbone):
        print(line)
    print(f"wrote {args.out}")
    return 0


def _cmd_convert_encoder(args: argparse.Namespace) -> int:
    from app.checkpoint.whisper_base import convert_installed, default_output_dir
    from app.config import Settings

    out = args.out or default_output_dir(Settings().model.cache_dir)
    print(convert_installed(out))
    return 0


def _cmd_bench_encoder(args: argparse.Namespace) -> int:
    from app.bench.encoder import run_encoder_benchmark
    from app.checkpoint.whisper_base import default_output_dir
    from app.config import Settings

    directory = args.encoder_dir or default_output_dir(Settings().model.cache_dir)
    print("\n".join(row["line"] for row in run_encoder_benchmark(directory, args.window, args.repeats)))
    return 0


def _cmd_bench_steps(args: argparse.Namespace) -> int:
    from app.bench.steps import run_step_benchmark

    rows = run_step_benchmark(args.preset, args.batch, args.canvas, args.steps, args.repeats, args.device,
                              tuple(args.buckets), args.profile)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(r["line"] for r in rows))
    return 0


def _cmd_bench_sampling(args: argparse.Namespace) -> int:
    from app.bench.steps import run_sampling_benchmark

    rows = run_sampling_benchmark(args.vocab, args.canvas, args.repeats, args.device)
    print("\n".join(r["line"] for r in rows))
    return 0


def _cmd_bench_vocab(args: argparse.Namespace) -> int:
    from app.bench.vocab import run_vocab_benchmark

    rows = run_vocab_benchmark(args.vocab, args.canvas, args.batch, args.repeats, args.device, args.self_cond_dtype,
                               args.slots)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(r["line"] for r in rows))
    return 0


def _cmd_bench_engine(args: argparse.Namespace) -> int:
    from app.bench.engine import run_engine_benchmark

    rows = run_engine_benchmark(args.preset, args.device, args.concurrency, args.seconds, args.steps,
                                buckets=tuple(args.buckets))
    print(json.dumps(rows, indent=2) if args.json else "\n".join(r["line"] for r in rows))
    return 0


def _cmd_bench_prefill(args: argparse.Namespace) -> int:
    from app.bench.steps import run_prefill_benchmark

    rows = run_prefill_benchmark(args.preset, args.rows, args.repeats, args.device, args.prompt_tokens)
    print(json.dumps(rows, indent=2) if args.json else "\n".join(r["line"] for r in rows))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API under uvicorn until SIGTERM/SIGINT (bad settings: one line each, exit 2)."""
    from app.api.server import run_server

    return run_server(_setting_overrides(args))


def _cmd_bench(args: argparse.Namespace) -> int:
    """Load-test a running server, or compare batched vs sequential serving on one model."""
    from app.bench.server import main as bench_main

    return bench_main(args)


def _cmd_bench_soak(args: argparse.Namespace) -> int:
    """Start the server, hold a long concurrent load on it, and check errors, identical results and memory."""
    from app.bench.soak import main as soak_main

    return soak_main(args)


def _cmd_stream(args: argparse.Namespace) -> int:
    """Stream a file to a running server over WebSocket and print partials and finals as they come."""
    from app.bench.stream import stream_command

    return stream_command(args)


def _cmd_bench_stream(args: argparse.Namespace) -> int:
    """Measure streaming latency (end of utterance to final, speech start to first partial) over N streams."""
    from app.bench.stream import bench_command

    return bench_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="diffusion-asr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    p.add_argument("files", nargs="+")
    _model_args(p)
    p.add_argument("--language", choices=SUPPORTED_LANGUAGES)
    p.add_argument("--prompt", help="context text placed in the prompt")
    p.add_argument("--steps", type=int, metavar="N",
                   help=f"denoising steps, {MIN_STEPS}..{MAX_STEPS} (default: ASR_DENOISING_STEPS, else the model's)")
    p.add_argument("--seed", type=int, help="random seed (default: ASR_DEFAULT_SEED, 0)")
    p.add_argument("--format", choices=("text", "json", "srt", "vtt"), default="text")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("make-checkpoint", help="write a random-init model of a preset's shape")
    p.add_argument("--preset", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_checkpoint)

    p = sub.add_parser("inspect-adapter", help="list an adapter's tensors, how each is used, its prompt and "
                                               "defaults (never loads the backbone)")
    p.add_argument("adapter", type=Path)
    p.add_argument("--backbone", type=Path, help="check the LoRA names and prompt tokens against this backbone's "
                                                 "config and tokenizer")
    p.add_argument("--encoder", type=Path, help="the Whisper directory (its window gives the audio slots)")
    _trust_arg(p)
    p.set_defaults(func=_cmd_inspect_adapter)

    p = sub.add_parser("import-adapter", help="write a published adapter in the project's own layout")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--backbone", type=Path, help="write the LoRA under this backbone's module names")
    _trust_arg(p)
    p.set_defaults(func=_cmd_import_adapter)

    p = sub.add_parser("convert-encoder", help="convert the installed whisper-base weight packages once (checked)")
    p.add_argument("--out", type=Path, help="output directory (default: ASR_CACHE_DIR/whisper-base)")
    p.set_defaults(func=_cmd_convert_encoder)

    p = sub.add_parser("bench-encoder", help="time the converted whisper-base encoder per window length")
    p.add_argument("--encoder-dir", type=Path, help="converted encoder (default: ASR_CACHE_DIR/whisper-base)")
    p.add_argument("--window", type=int, nargs="+", default=[10, 20, 30], help="window lengths in seconds")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=_cmd_bench_encoder)

    p = sub.add_parser("bench-steps", help="time denoising steps of a preset at several batch sizes")
    p.add_argument("--preset", default="tiny-random")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--canvas", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--buckets", type=int, nargs="*", default=[], help="pad each step's batch to these sizes")
    p.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="N",
                   help="also print the torch profiler's top N kernels of one pass (default N: 15)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_steps)

    p = sub.add_parser("bench-sampling", help="time the vocabulary-sized work of one step at a real vocabulary")
    p.add_argument("--vocab", type=int, default=262_144)
    p.add_argument("--canvas", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="cpu")
    p.set_defaults(func=_cmd_bench_sampling)

    p = sub.add_parser("bench-vocab", help="one step's vocabulary-sized work: separate operations vs the fused pass")
    p.add_argument("--vocab", type=int, default=262_144)
    p.add_argument("--canvas", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--slots", type=int, help="canvas slots per chunk (default: by the device's chunk bytes)")
    p.add_argument("--self-cond-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                   help="dtype of the self-conditioning copy (the backbone's embedding dtype)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_vocab)

    p = sub.add_parser("bench-prefill", help="prefill of N prompts one at a time vs in one encoder pass")
    p.add_argument("--preset", default="tiny-random")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_prefill)

    p = sub.add_parser("bench-engine", help="the engine end to end on N concurrent clips vs one at a time")
    p.add_argument("--preset", default="tiny-random")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seconds", type=float, default=30.0, help="length of each synthetic clip")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--buckets", type=int, nargs="*", default=[], help="pad each step's batch to these sizes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench_engine)

    p = sub.add_parser("serve", help="run the OpenAI-compatible HTTP API")
    _model_args(p)
    p.add_argument("--host", help="address to listen on (default ASR_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default ASR_PORT or 8000)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("bench", help="drive a server with concurrent uploads; --compare: batched vs sequential")
    from app.bench.server import add_arguments as _bench_arguments

    _bench_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("bench-soak", help="start the server and hold N clients on it for D seconds: errors, "
                                          "identical results, memory growth")
    from app.bench.soak import add_arguments as _soak_arguments

    _soak_arguments(p)
    p.set_defaults(func=_cmd_bench_soak)

    p = sub.add_parser("stream", help="stream a file to a running server over WebSocket, printing transcripts")
    p.add_argument("file")
    p.add_argument("--url", default="ws://127.0.0.1:8000", help="server, ws://host:port")
    p.add_argument("--speed", type=float, default=1.0, help="send at real time x this (0: as fast as possible)")
    p.add_argument("--drafts", action="store_true", help="also show every denoising step of each final")
    p.add_argument("--language", choices=SUPPORTED_LANGUAGES)
    p.add_argument("--api-key", help="bearer key of the server")
    p.set_defaults(func=_cmd_stream)

    p = sub.add_parser("bench-stream", help="latency of N concurrent WebSocket streams against a running server")
    from app.bench.stream import add_bench_arguments as _bench_stream_arguments

    _bench_stream_arguments(p)
    p.set_defaults(func=_cmd_bench_stream)

    from app.training.commands import register as register_training

    # train, pretrain-text, eval, lexicon, corpus, speech, recordings, encode-cache, probe-acoustics
    register_training(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command; user errors print one line and exit non-zero."""
    from app.audio.errors import AudioError
    from app.checkpoint.errors import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (AudioError, CheckpointError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError) as exc:
        print(f"diffusion-asr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
