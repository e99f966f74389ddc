"""`diffusion-asr eval`'s report: one model's scores, or a model beside its baseline, as Markdown and in the card."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.training.evaluate import LangResult


@dataclass
class ModelScores:
    """Everything `eval` measured of one checkpoint."""

    model: str
    held_out: dict[str, dict[str, LangResult]] = field(default_factory=dict)  # set name -> language -> result
    real: list[dict] = field(default_factory=list)  # ../shared/audio rows (`evaluate_real`)
    latency: dict | None = None

    def as_json(self) -> dict:
        return {"model": self.model,
                "held_out": {name: {lang: vars(r) for lang, r in results.items()}
                             for name, results in self.held_out.items()},
                "real": self.real, "latency": self.latency}


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def _held_out_table(name: str, description: str, scores: list[ModelScores]) -> list[str]:
    """One row per language; each model's CER, WER, tag accuracy and filler share side by side, then the first
    model's CTC."""
    models = [s.model for s in scores]
    head = ["language", "clips"]
    for model in models:
        head += [f"CER {model}", f"WER {model}", f"tag right {model}", f"filler {model}"]
    head += [f"CTC CER {models[0]}"]
    lines = [f"**{name}** — {description}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for lang, first in scores[0].held_out[name].items():
        row = [lang, str(first.clips)]
        for s in scores:
            r = s.held_out[name].get(lang)
            row += [_pct(r.cer), _pct(r.wer), _pct(r.tag_accuracy), _pct(r.filler)] if r else ["n/a"] * 4
        row.append(_pct(first.ctc_cer))
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _real_table(scores: list[ModelScores]) -> list[str]:
    models = [s.model for s in scores]
    lines = ["**Real recordings** (`../shared/audio`, strong references only): CER / WER in %, then the first "
             "model's transcript.", "", "| file | lang | " + " | ".join(f"CER {m} | WER {m}" for m in models)
             + " | transcript |", "|---|---|" + "---:|---:|" * len(models) + "---|"]
    for i, row in enumerate(scores[0].real):
        cells = []
        for s in scores:
            other = s.real[i]
            cells += [_pct(other["cer"]), _pct(other["wer"])]
        hyp = row["hypothesis"].replace("|", "/")[:80]
        lines.append(f"| {row['file']} | {row['lang']} | " + " | ".join(cells) + f" | {hyp} |")
    return lines + [""]


def _latency_lines(scores: list[ModelScores]) -> list[str]:
    timed = [s for s in scores if s.latency]
    if not timed:
        return []
    first = timed[0].latency
    lines = [f"**CPU latency**, {first['seconds']:.0f} s of {first.get('audio', 'audio')}, {first['steps']} steps, through the serving "
             f"pipeline (`transcribe`, {first['threads']} torch threads, median of {first['repeats']} after a "
             "warm-up, the models in turn):", ""]
    lines += [f"- {s.model}: **{s.latency['median_s'] * 1000:.0f} ms**; the same length holding only its "
              f"shortest held-out clip, then silence: {s.latency['short_median_s'] * 1000:.0f} ms "
              f"(long / short {s.latency['median_s'] / s.latency['short_median_s']:.2f}x; denoising steps run "
              f"{s.latency['steps_used']} / {s.latency['short_steps_used']})" for s in timed]
    return lines + [""]


def results_markdown(scores: list[ModelScores], descriptions: dict[str, str], steps: int, command: str) -> str:
    """The Results section: every held-out set, the real recordings and latency, each model beside the first."""
    lines = ["## Results", "", f"Measured with `{command}`.", "",
             f"Diffusion decoder at {steps} steps from a canvas of uniform noise (or the checkpoint's own start), "
             "no language hint; greedy CTC of the projector head for comparison. CER/WER in %. Normalisation: "
             "NFKC, lowercase, punctuation and symbols removed; CER on characters without spaces; Mandarin WER on "
             "characters. Filler: % of transcripts with a run of one repeated punctuation mark (three or more) that "
             "the reference lacks, which the normalisation hides from CER.", ""]
    for name in scores[0].held_out:
        lines += _held_out_table(name, descriptions.get(name, ""), scores)
    if scores[0].real:
        lines += _real_table(scores)
    lines += _latency_lines(scores)
    return "\n".join(lines)


def update_card(model_dir: Path, results_md: str) -> None:
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
