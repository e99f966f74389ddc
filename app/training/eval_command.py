"""`diffusion-asr eval`: a checkpoint, and optionally the baseline it replaces, on the same data in one run.

Held-out sets are dataset splits (`app.training.data` layout): `--data` the synthetic held-out sentences
(`diffusion-asr speech --split eval`), `--recordings` real recorded prompts (`diffusion-asr recordings --split
eval`). Without `--data`, the original random-word held-out set is generated under `--work-dir`. Then the
strongly referenced clips of `--audio-dir` and the latency of 5 s of speech, every model in turn.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import torch

from app.training.eval_report import ModelScores, results_markdown, update_card
from app.training.evaluate import evaluate_real, evaluate_synthetic, measure_latency, sparse_sample, speech_sample

SYNTHETIC = "Held-out synthetic sentences"
RECORDED = "Held-out recorded prompts"
LATENCY_SECONDS = 5.0


def _original_held_out(work_dir: Path, per_lang: int, seed: int) -> Path:
    """The random-word held-out set of the original recipe, generated once under `work_dir`."""
    from app.training.data import MANIFEST, generate_dataset
    from app.training.texts import LANGS

    data = Path(work_dir) / "data" / "eval"
    if (data / MANIFEST).is_file():
        m = json.loads((data / MANIFEST).read_text(encoding="utf-8"))
        if m.get("n_per_lang") == per_lang and m.get("seed") == seed and not m.get("engines"):
            return data
    return generate_dataset(Path(work_dir) / "data", list(LANGS), per_lang, seed, "eval")


def _sets(args) -> tuple[dict[str, Path], dict[str, str]]:
    """Held-out set name -> dataset directory, and a line describing each."""
    from app.training.data import load_dataset

    sets: dict[str, Path] = {}
    descriptions: dict[str, str] = {}
    data = Path(args.data) if args.data else _original_held_out(Path(args.work_dir), args.eval_per_lang, args.seed)
    manifest = load_dataset(data).manifest
    sets[SYNTHETIC] = data
    source = manifest.get("text_source", {})
    kind = "natural sentences of the corpus's eval split" if source.get("corpus") else "random word strings"
    engines = ", ".join(manifest.get("engines", [])) or "espeak-ng"
    descriptions[SYNTHETIC] = f"`{data}`: {kind}, spoken by {engines}, never in training."
    if args.recordings:
        sets[RECORDED] = Path(args.recordings)
        descriptions[RECORDED] = (f"`{args.recordings}`: asterisk-core-sounds prompts (one speaker per language, "
                                  "real recordings) whose sentences are in the held-out split.")
    return sets, descriptions


def run_eval(models: dict[str, Path], sets: dict[str, Path], audio_dir: Path | None, steps: int,
             limit: int | None, latency_lang: str = "en") -> list[ModelScores]:
    """Every model on every set, the real clips and the latency; models loaded one after another for scoring,
    then together for the latency, which they take in turns."""
    from app.checkpoint.loading import load_model_dir
    from app.training.data import load_dataset

    scores = []
    pipelines = {}
    for name, path in models.items():
        pipeline = load_model_dir(path)
        score = ModelScores(name)
        for set_name, data in sets.items():
            score.held_out[set_name] = evaluate_synthetic(pipeline, load_dataset(data), steps, limit=limit)
        if audio_dir is not None:
            score.real = evaluate_real(pipeline, audio_dir, steps)
        scores.append(score)
        pipelines[name] = pipeline
    clips = load_dataset(next(iter(sets.values())))
    samples = {"long": speech_sample(clips, LATENCY_SECONDS, latency_lang),
               "short": sparse_sample(clips, LATENCY_SECONDS, latency_lang)}
    timed = measure_latency({f"{name}|{kind}": (pipeline, audio) for name, pipeline in pipelines.items()
                             for kind, audio in samples.items()}, steps=8)
    for score in scores:
        short = timed[f"{score.model}|short"]
        score.latency = {**timed[f"{score.model}|long"], "audio": f"held-out {latency_lang} speech (clips joined)",
                         "short_median_s": short["median_s"], "short_steps_used": short["steps_used"]}
    return scores


def eval_command(args) -> int:
    """`diffusion-asr eval`: print (and optionally store) the Results section."""
    torch.set_num_threads(args.threads)
    models = {str(args.model): Path(args.model)}
    if args.baseline:
        models[str(args.baseline)] = Path(args.baseline)
    sets, descriptions = _sets(args)
    started = time.monotonic()
    audio_dir = args.audio_dir if args.audio_dir and Path(args.audio_dir).is_dir() else None
    scores = run_eval(models, sets, audio_dir, args.steps, args.limit)
    command = "diffusion-asr " + " ".join(shlex.quote(a) for a in getattr(args, "_argv", sys.argv[1:]))
    md = results_markdown(scores, descriptions, args.steps, command)
    print(md)
    for lang, r in scores[0].held_out[SYNTHETIC].items():
        for ref, hyp, ctc in r.examples[:2]:
            print(f"[{lang}] ref: {ref}\n     dif: {hyp}\n     ctc: {ctc}")
    print(f"eval took {time.monotonic() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([s.as_json() for s in scores], indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    if args.update_card:
        update_card(Path(args.model), md)
    return 0
