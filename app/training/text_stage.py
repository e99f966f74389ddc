"""Text-only training of the backbone before it hears any audio (`diffusion-asr pretrain-text`).

The real model's DiffusionGemma arrives pretrained on text and learns only the adapter; the embedded model's small
backbone starts from random weights and otherwise learns its languages from the transcripts of the clips it
trains on, a few thousand sentences. This stage gives it the corpus's text first, at a fraction of an audio step's
cost: the same prompt with its audio slots left out, the same canvas, and two of the three losses (uniform
diffusion and the autoregressive auxiliary; CTC needs audio). `diffusion-asr train --init-from` then continues
from the checkpoint it writes, with the audio.

Without audio the prompt is the template's text before and after the audio placeholder. Under aligned positions
the tokens after the audio sit where the audio case puts them: one past the transcript's last token, as if every
text token had been spoken (`aligned_positions` with the counts ending at the transcript's length).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shlex
import time
from dataclasses import dataclass, replace

import torch

from app.checkpoint.parts import build_model, save_checkpoint
from app.checkpoint.tokenizer import LANGUAGE_TAG_FORMAT
from app.model.aligned_positions.positions import aligned_positions
from app.training import losses
from app.training.batches import train_tokenizer
from app.training.cached import cache_reference, cached_dims, load_cached_splits
from app.training.card import count_params
from app.training.config import TrainConfig
from app.training.forward import AsrTrainer
from app.training.state import lr_factor, make_optimizer
from app.training.trainer import init_audio_path, move_parts, training_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextBatch:
    """Sentences of one step: their languages, their token ids, and whether the prompt names the language."""

    langs: list[str]
    text_ids: list[list[int]]
    hinted: bool


def fitting_sentences(texts: dict[str, list[str]], tokenizer, canvas_length: int) -> dict[str, list[list[int]]]:
    """Each language's sentences as token ids, without those whose canvas (tag, text, eos) would not fit."""
    out: dict[str, list[list[int]]] = {}
    for lang, sentences in texts.items():
        encoded = tokenizer(sentences, add_special_tokens=False).input_ids if sentences else []
        out[lang] = [ids for ids in encoded if ids and len(ids) + 2 <= canvas_length]
    return {lang: ids for lang, ids in out.items() if ids}


def draw_batch(sentences: dict[str, list[list[int]]], sampler: random.Random, batch_size: int,
               hint_prob: float) -> TextBatch:
    """A language uniformly for each row, then one of its sentences uniformly.

    Languages are drawn equally rather than by corpus size: Hindi has about a twentieth of German's sentences and
    would otherwise barely be seen.
    """
    langs = sorted(sentences)
    picked = [sampler.choice(langs) for _ in range(batch_size)]
    return TextBatch(picked, [sampler.choice(sentences[lang]) for lang in picked], sampler.random() < hint_prob)


class TextStage:
    """Diffusion and autoregressive losses of canvases after a prompt without audio, and their optimizer steps."""

    def __init__(self, trainer: AsrTrainer, sentences: dict[str, list[list[int]]], config: TrainConfig) -> None:
        if not sentences:
            raise ValueError("no sentence fits the canvas: nothing to train on")
        self.trainer = trainer
        self.sentences = sentences
        self.config = config
        self.optimizer = make_optimizer(trainer, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = random.Random(config.seed)
        self.step_count = 0
        self.elapsed_s = 0.0

    def prompt(self, batch: TextBatch) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Prompt ids `[B, L]` without the audio slots, their rotary positions (None: indices) and canvas slot
        0's position."""
        ids, layout = self.trainer.prompt(len(batch.langs), batch.langs if batch.hinted else None)
        keep = torch.ones(ids.shape[1], dtype=torch.bool)
        keep[layout.audio_positions] = False
        ids = ids[:, keep.to(ids.device)]
        if not self.config.aligned_positions:
            return ids, None, ids.shape[1]
        # One audio slot that has emitted the whole transcript, then that slot dropped: the audio case's rule.
        audio_start = int(layout.audio_positions[0])
        spoken = torch.tensor([[len(t)] for t in batch.text_ids], device=ids.device)
        rotary = aligned_positions(spoken, audio_start, ids.shape[1] + 1)
        return ids, torch.cat([rotary[:, :audio_start], rotary[:, audio_start + 1:]], dim=1), audio_start

    def losses(self, batch: TextBatch) -> dict[str, torch.Tensor]:
        """The diffusion and autoregressive losses of one batch, weighted as in the audio stage."""
        tokenizer, device = self.trainer.parts.tokenizer, self.trainer.device
        tags = [tokenizer.convert_tokens_to_ids(LANGUAGE_TAG_FORMAT.format(lang=lang)) for lang in batch.langs]
        targets = losses.build_targets(batch.text_ids, tags, tokenizer.eos_token_id, tokenizer.pad_token_id,
                                       self.trainer.dims.canvas_length).to(device)
        ids, rotary, canvas_at = self.prompt(batch)
        hidden = self.trainer.model.config.text_config.hidden_size
        no_audio = torch.zeros(ids.shape[0], 0, hidden, device=device)
        cache, prompt_hidden = self.trainer.prefill(no_audio, ids, torch.zeros(0, dtype=torch.long), rotary)
        l_diff, l_ar = self.trainer.canvas_losses(cache, prompt_hidden, targets, canvas_at, ids.shape[1],
                                                  self.generator)
        total = self.config.w_diffusion * l_diff + self.config.w_ar * l_ar
        return {"loss": total, "diff": l_diff, "ar": l_ar}

    def step(self) -> dict[str, float]:
        """One optimizer step on a fresh batch, at the scheduled learning rate."""
        cfg = self.config
        batch = draw_batch(self.sentences, self.sampler, cfg.batch_size, cfg.hint_prob)
        scheduled = cfg.lr * lr_factor(cfg, self.step_count, self.elapsed_s)
        for group in self.optimizer.param_groups:
            group["lr"] = scheduled * group.get("lr_scale", 1.0)
        self.trainer.train(True)
        out = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.trainer.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        return {**{k: float(v.detach()) for k, v in out.items()}, "lr": scheduled}

    def fit(self) -> dict[str, float]:
        """Steps until `max_steps`, or the `max_minutes` budget without it; the last smoothed losses."""
        cfg = self.config
        smooth: dict[str, float] = {}
        while (self.step_count < cfg.max_steps if cfg.max_steps is not None
               else self.elapsed_s < cfg.max_minutes * 60.0):
            started = time.monotonic()
            values = self.step()
            self.elapsed_s += time.monotonic() - started
            for key, value in values.items():
                if not math.isnan(value):
                    smooth[key] = value if key not in smooth else 0.95 * smooth[key] + 0.05 * value
            if self.step_count % 100 == 0:
                log.info("text step %d %s", self.step_count, {k: round(v, 4) for k, v in smooth.items()})
        return smooth


def pretrain_text(config: TrainConfig, texts: dict[str, list[str]], argv: list[str]) -> dict:
    """Build the run's model on `config.encoder_cache`'s encoder, train it on `texts` alone, save it to `out`.

    The tokenizer is built from `texts` and the cache's training transcripts together, so the audio stage that
    continues from this checkpoint (which keeps its tokenizer) has every character of its own sentences.
    Returns the run's record, also written beside the checkpoint.
    """
    if config.encoder_cache is None:
        raise ValueError("pretrain-text builds the model of an --encoder-cache run: name the cache")
    torch.set_num_threads(config.threads)
    device = training_device(config.device)
    train_feats, _ = load_cached_splits(config.encoder_cache)
    reference, dims = cache_reference(train_feats), cached_dims(config.dims(), train_feats)
    all_texts = [s for lang in sorted(texts) for s in texts[lang]] + list(train_feats.texts)
    all_langs = [lang for lang in sorted(texts) for _ in texts[lang]] + list(train_feats.langs)
    tokenizer = train_tokenizer(all_texts, all_langs, dims.vocab_size, config.characters, config.word_initial)
    torch.manual_seed(config.seed)
    parts = build_model(dims, tokenizer, reference)
    init_audio_path(parts, config.conv_gain)
    move_parts(parts, device)
    stage = TextStage(AsrTrainer(parts, dims, config), fitting_sentences(texts, tokenizer, dims.canvas_length),
                      config)
    smooth = stage.fit()
    move_parts(parts, torch.device("cpu"))
    info = {
        "command": "diffusion-asr " + " ".join(shlex.quote(a) for a in argv),
        "steps": stage.step_count,
        "train_minutes": round(stage.elapsed_s / 60, 1),
        "sentences": {lang: len(ids) for lang, ids in stage.sentences.items()},
        "last_losses": {k: round(v, 4) for k, v in smooth.items()},
        "params": count_params(parts),
        "torch": torch.__version__,
    }
    card = ("# Text-only stage (not a speech model)\n\nThe backbone trained on sentences alone, to be continued "
            "with audio by `diffusion-asr train --init-from`. Its projector is untrained.\n\n```\n"
            f"{info['command']}\n```\n\n{stage.step_count} steps of {config.batch_size} sentences in "
            f"{info['train_minutes']} minutes.\n")
    save_checkpoint(config.out, parts, replace(stage.trainer.asr_config, **config.sampler), card, half=True)
    (config.out / "adapter" / "text_stage.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info
