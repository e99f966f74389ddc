"""`diffusion-asr train`: synthetic data -> features -> tokenizer -> model -> three-loss training -> checkpoint.

The forward pass mirrors inference exactly (`app.model.pipeline`): Whisper log-mel of the clip padded to the full
window, the Whisper encoder, the projector, the prompt `PromptBuilder` renders (with the language hint in a
fraction of batches), the projected audio scattered into the `<audio>` slots, the backbone's causal encoder over
the prompt (its KV cache), and the decoder over a canvas at positions `prompt_len + arange(C)`.

Everything under `--work-dir` (datasets, features, tokenizer, resumable state) is scratch; the shipped model is
written with `save_checkpoint(..., half=True)` to `--out`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedTokenizerFast

from app.model.asr_config import SUPPORTED_LANGUAGES
from app.model.backbone import PromptBuilder
from app.model.checkpoint import ModelParts, asr_config_for, build_model, save_checkpoint
from app.model.encoder import feature_extractor_for, window_frames
from app.model.presets import PRESETS, ModelDims
from app.model.tokenizer import LANGUAGE_TAG_FORMAT, build_tokenizer
from app.training import losses
from app.training.features import FeatureSet

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"

# Changes to PRESETS["default"] for the shipped model, sized for the CPU budget (about 30 GFLOP/s on this
# 2-core machine; a training step costs ~9 GFLOP per clip): synthetic clips are at most ~6 s, so a 6 s window
# (300 encoder positions, 75 audio slots at subsample 4) instead of 10 s, and a narrower Whisper encoder.
SHIPPED_DIMS: dict = {
    "encoder_positions": 300,
    "encoder_width": 192,
    "encoder_layers": 4,
    "encoder_heads": 4,
    "encoder_ffn": 768,
    "projector_width": 384,
}


@dataclass
class TrainConfig:
    """Every choice of a training run (recorded in the model card and the resumable state)."""

    work_dir: Path = Path("runs/default")
    out: Path = Path("models/default")
    preset: str = "default"
    dims_override: dict = field(default_factory=lambda: dict(SHIPPED_DIMS))
    langs: tuple[str, ...] = SUPPORTED_LANGUAGES
    train_per_lang: int = 4000
    eval_per_lang: int = 100
    max_seconds: float = 8.0
    data_workers: int = 2
    seed: int = 0
    batch_size: int = 16
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_minutes: float = 75.0  # training-loop budget (data and features are extra)
    max_steps: int | None = None
    checkpoint_minutes: float = 5.0
    hint_prob: float = 0.3
    self_cond_prob: float = 0.5
    pad_weight: float = 0.25
    w_diffusion: float = 1.0
    w_ar: float = 0.5
    w_ctc: float = 0.5
    # Stage "ctc": until this much training time, only the CTC loss, with the lm_head frozen, updates the
    # Whisper encoder and projector (cheap steps that teach the audio path its alignment first).
    ctc_only_until_minutes: float = 0.0
    threads: int = 2
    resume: bool = False
    progress: bool = True

    def dims(self) -> ModelDims:
        return replace(PRESETS[self.preset], **self.dims_override)


# ----------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Example:
    index: int  # row in the FeatureSet
    lang: str
    text_ids: list[int]
    slots: int  # CTC input length: audio slots covering the real audio


def tokenizer_corpus(texts: list[str], langs: list[str]) -> list[str]:
    """The BPE training corpus: the training sentences, Mandarin split into single characters.

    A Mandarin sentence has no spaces, so byte-level BPE would see it as one pre-token and spend merges on
    whole sentences or multi-word runs. Giving each Hanzi as its own corpus entry (with its real frequency)
    makes the merges build whole characters (3 bytes each) for the common ones and nothing longer, so an
    encoded Mandarin sentence is about one token per character. Devanagari words are spaced like the Latin
    scripts and get their syllable and word merges from their frequency; Hindi sentences are given twice so
    its 3-byte characters and conjuncts compete for merges with the Latin-script languages.
    """
    corpus: list[str] = []
    for text, lang in zip(texts, langs):
        if lang == "zh":
            corpus.extend(ch for ch in text if not ch.isspace())
        elif lang == "hi":
            corpus.extend([text, text])
        else:
            corpus.append(text)
    return corpus


def train_tokenizer(texts: list[str], langs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    return build_tokenizer(tokenizer_corpus(texts, langs), vocab_size=vocab_size)


def audio_slots(num_samples: int, dims: ModelDims) -> int:
    """Projector slots covering `num_samples` of audio (mel hop 160, Whisper stride 2, projector subsample)."""
    per_slot = 160 * 2 * dims.subsample
    return min(dims.audio_slots, -(-int(num_samples) // per_slot) + 1)


def make_examples(
    feats: FeatureSet, tokenizer: PreTrainedTokenizerFast, dims: ModelDims
) -> tuple[list[Example], dict[str, int]]:
    """Tokenize every clip; drop those whose target does not fit the canvas or the CTC slots."""
    encoded = tokenizer(list(feats.texts), add_special_tokens=False).input_ids
    examples, dropped = [], {"canvas": 0, "ctc": 0, "window": 0}
    for i, (ids, lang, n) in enumerate(zip(encoded, feats.langs, feats.num_samples)):
        slots = audio_slots(n, dims)
        if n > dims.window_seconds * 16000:
            dropped["window"] += 1
            continue
        if len(ids) + 2 > dims.canvas_length:
            dropped["canvas"] += 1
            continue
        if losses.ctc_required_slots(ids) > slots:
            dropped["ctc"] += 1
            continue
        examples.append(Example(i, lang, ids, slots))
    return examples, dropped


@dataclass
class Batch:
    features: torch.Tensor  # [B, n_mels, frames]
    langs: list[str]
    hinted: bool
    targets: losses.Targets
    slots: torch.Tensor  # [B]


def collate(feats: FeatureSet, examples: list[Example], tokenizer, canvas_length: int, hinted: bool) -> Batch:
    index = np.array([e.index for e in examples])
    order = np.argsort(index)  # memmap reads in increasing order
    rows = np.empty((len(index), *feats.features.shape[1:]), dtype=np.float32)
    rows[order] = feats.features[index[order]]
    tag_ids = [tokenizer.convert_tokens_to_ids(LANGUAGE_TAG_FORMAT.format(lang=e.lang)) for e in examples]
    targets = losses.build_targets(
        [e.text_ids for e in examples], tag_ids, tokenizer.eos_token_id, tokenizer.pad_token_id, canvas_length
    )
    slots = torch.tensor([e.slots for e in examples], dtype=torch.long)
    return Batch(torch.from_numpy(rows), [e.lang for e in examples], hinted, targets, slots)


# ----------------------------------------------------------------------------------------------------------------
# Model forward with the three losses


class AsrTrainer:
    """Holds the model parts and computes the losses of one batch exactly along the inference path."""

    def __init__(self, parts: ModelParts, dims: ModelDims, config: TrainConfig) -> None:
        self.parts = parts
        self.dims = dims
        self.config = config
        self.model = parts.backbone.get_base_model()  # DiffusionGemmaForBlockDiffusion with LoRA layers injected
        self.encoder = parts.whisper.get_encoder()
        self.asr_config = asr_config_for(dims)
        self.prompts = PromptBuilder(parts.tokenizer, self.asr_config)
        self.vocab_size = self.model.config.text_config.vocab_size
        self.cap = self.model.final_logit_softcapping
        for p in self.parameters():
            p.requires_grad_(True)

    def modules(self) -> list[torch.nn.Module]:
        return [self.parts.whisper, self.parts.projector, self.parts.backbone]

    def parameters(self) -> list[torch.nn.Parameter]:
        seen, out = set(), []
        for module in self.modules():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def train(self, mode: bool = True) -> None:
        for module in self.modules():
            module.train(mode)

    def prompt(self, batch_size: int, language: list[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids `[B, L]` and audio positions `[slots]` (hinted prompts all have the same length)."""
        built = [self.prompts.build(lang) for lang in (language or [None] * batch_size)]
        return torch.stack([b.ids for b in built]), built[0].audio_positions

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Whisper encoder + projector: `[B, audio_slots, hidden]`."""
        hidden = self.encoder(features).last_hidden_state
        return self.parts.projector(hidden)

    def prefill(self, audio: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor):
        """Backbone causal encoder over the prompt with the audio scattered in (with gradients)."""
        embed = self.model.model.encoder.get_input_embeddings()
        embeds = embed(ids)
        slot_mask = torch.zeros(ids.shape, dtype=torch.bool)
        slot_mask[:, positions] = True
        embeds = embeds.masked_scatter(slot_mask[..., None], audio.to(embeds.dtype))
        batch, length = ids.shape
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        pos = torch.arange(length, dtype=torch.int32)[None].expand(batch, -1)
        mask = self.model.model.encoder.create_masks_for_generate(
            config=self.model.config, inputs_embeds=embeds,
            attention_mask=torch.ones((batch, length), dtype=torch.bool), cache=cache, position_ids=pos,
        )
        out = self.model.model.encoder(inputs_embeds=embeds, attention_mask=mask, cache=cache, position_ids=pos)
        return cache, out.last_hidden_state

    def ctc_only(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Stage "ctc": CTC through the frozen lm_head only; the backbone is not run."""
        audio = self.project(batch.features)
        weight = self.model.lm_head.weight.detach()
        logits = losses.softcap(torch.nn.functional.linear(audio, weight), self.cap)
        l_ctc = losses.ctc_loss(logits, batch.slots, batch.targets.ctc, batch.targets.ctc_lengths,
                                blank=self.parts.tokenizer.pad_token_id)
        nan = torch.tensor(float("nan"))
        return {"loss": l_ctc, "diff": nan, "ar": nan, "ctc": l_ctc}

    def losses(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.config
        targets = batch.targets
        bsz = batch.features.shape[0]
        audio = self.project(batch.features)
        ids, positions = self.prompt(bsz, batch.langs if batch.hinted else None)
        cache, prompt_hidden = self.prefill(audio, ids, positions)
        length = ids.shape[1]
        canvas_len = targets.canvas.shape[1]
        dec_pos = (length + torch.arange(canvas_len))[None].expand(bsz, -1)

        # (1) uniform diffusion, with self-conditioning on half of the rows
        noisy, _, _ = losses.corrupt(targets.canvas, self.vocab_size, generator)
        sc_mask = torch.rand(bsz, generator=generator) < cfg.self_cond_prob
        sc_logits = None
        if bool(sc_mask.any()):
            with torch.no_grad():
                first = self.model(decoder_input_ids=noisy, cache=cache, decoder_position_ids=dec_pos).logits
            # Inference feeds the previous step's temperature-scaled logits (T from 0.8 down to 0.4).
            temperature = self.asr_config.t_min + (self.asr_config.t_max - self.asr_config.t_min) * torch.rand(
                bsz, 1, 1, generator=generator)
            sc_logits = first / temperature
        logits = self.model(
            decoder_input_ids=noisy, cache=cache, decoder_position_ids=dec_pos,
            self_conditioning_logits=sc_logits, self_conditioning_mask=sc_mask if sc_logits is not None else None,
        ).logits
        l_diff = losses.diffusion_loss(logits, targets.canvas, targets.content, cfg.pad_weight)
        # (2) autoregressive auxiliary: after the decoder pass, since it appends the target to the cache
        embed = self.model.model.encoder.get_input_embeddings()
        ar_embeds = embed(targets.ar_inputs)
        steps = ar_embeds.shape[1]
        ar_pos = (length + torch.arange(steps, dtype=torch.int32))[None].expand(bsz, -1)
        mask = self.model.model.encoder.create_masks_for_generate(
            config=self.model.config, inputs_embeds=ar_embeds,
            attention_mask=torch.ones((bsz, length + steps), dtype=torch.bool), cache=cache, position_ids=ar_pos,
        )
        ar_out = self.model.model.encoder(inputs_embeds=ar_embeds, attention_mask=mask, cache=cache,
                                          position_ids=ar_pos)
        hidden = torch.cat([prompt_hidden[:, -1:], ar_out.last_hidden_state], dim=1)
        l_ar = losses.ar_loss(losses.softcap(self.model.lm_head(hidden), self.cap), targets.ar_labels)
        # (3) CTC on the projector output through the lm_head
        ctc_logits = losses.softcap(self.model.lm_head(audio), self.cap)
        l_ctc = losses.ctc_loss(ctc_logits, batch.slots, targets.ctc, targets.ctc_lengths,
                                blank=self.parts.tokenizer.pad_token_id)
        total = cfg.w_diffusion * l_diff + cfg.w_ar * l_ar + cfg.w_ctc * l_ctc
        return {"loss": total, "diff": l_diff, "ar": l_ar, "ctc": l_ctc}


# ----------------------------------------------------------------------------------------------------------------
# Optimisation loop with resumable state


def lr_factor(config: TrainConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up then cosine decay to `min_lr_ratio`; progress by steps when `max_steps` is set, else time."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.max_steps:
        progress = step / config.max_steps
    else:
        progress = elapsed_s / (config.max_minutes * 60.0)
    progress = min(max(progress, 0.0), 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class RunState:
    step: int = 0
    elapsed_s: float = 0.0
    examples_seen: int = 0
    history: list = field(default_factory=list)


def _rng_state(generator: torch.Generator, sampler: random.Random) -> dict:
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(), "python": sampler.getstate(),
            "numpy": np.random.get_state()}


def _set_rng_state(state: dict, generator: torch.Generator, sampler: random.Random) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    sampler.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save_state(path: Path, trainer: AsrTrainer, optimizer, run: RunState, generator, sampler) -> None:
    """Model, optimizer, step, elapsed time and every RNG, written atomically."""
    state = {
        "whisper": trainer.parts.whisper.state_dict(),
        "projector": trainer.parts.projector.state_dict(),
        "backbone": trainer.parts.backbone.state_dict(),
        "optimizer": optimizer.state_dict(),
        "run": asdict(run),
        "rng": _rng_state(generator, sampler),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, trainer: AsrTrainer, optimizer, generator, sampler) -> RunState:
    state = torch.load(path, weights_only=False)
    trainer.parts.whisper.load_state_dict(state["whisper"])
    trainer.parts.projector.load_state_dict(state["projector"])
    trainer.parts.backbone.load_state_dict(state["backbone"])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], generator, sampler)
    return RunState(**state["run"])


def make_optimizer(trainer: AsrTrainer, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in trainer.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-8,
    )


def next_batch(examples: list[Example], sampler: random.Random, config: TrainConfig, order: list[int]) -> tuple:
    """Draw a batch: epoch-wise shuffled order kept in `order` (state lives in the python RNG)."""
    if len(order) < config.batch_size:
        fresh = list(range(len(examples)))
        sampler.shuffle(fresh)
        order.extend(fresh)
    picked = [examples[order.pop(0)] for _ in range(config.batch_size)]
    hinted = sampler.random() < config.hint_prob
    return picked, hinted


class Loop:
    """The training loop on prepared data; usable on its own (tests) or from `train()`."""

    def __init__(self, config: TrainConfig, parts: ModelParts, dims: ModelDims, feats: FeatureSet,
                 examples: list[Example]) -> None:
        self.config = config
        self.trainer = AsrTrainer(parts, dims, config)
        self.feats = feats
        self.examples = examples
        self.optimizer = make_optimizer(self.trainer, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = random.Random(config.seed)
        self.run = RunState()
        self.order: list[int] = []
        self.state_path = Path(config.work_dir) / STATE_FILE

    def resume(self) -> bool:
        if not self.state_path.is_file():
            return False
        self.run = load_state(self.state_path, self.trainer, self.optimizer, self.generator, self.sampler)
        self.order = list(self.run.history[-1]["order"]) if self.run.history and "order" in self.run.history[-1] \
            else []
        return True

    def checkpoint(self) -> None:
        # The pending epoch order is part of the state so a resumed run draws the same next batch.
        self.run.history.append({"step": self.run.step, "order": list(self.order)})
        self.run.history = self.run.history[-1:]
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        save_state(self.state_path, self.trainer, self.optimizer, self.run, self.generator, self.sampler)

    def step(self) -> dict[str, float]:
        cfg = self.config
        picked, hinted = next_batch(self.examples, self.sampler, cfg, self.order)
        batch = collate(self.feats, picked, self.trainer.parts.tokenizer, self.trainer.dims.canvas_length, hinted)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, self.run.step, self.run.elapsed_s)
        self.trainer.train(True)
        if self.run.elapsed_s < cfg.ctc_only_until_minutes * 60.0:
            out = self.trainer.ctc_only(batch)
        else:
            out = self.trainer.losses(batch, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trainer.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.run.step += 1
        self.run.examples_seen += len(picked)
        values = {k: float(v.detach()) for k, v in out.items()}
        values["gnorm"] = float(norm)
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        return values

    def fit(self) -> RunState:
        cfg = self.config
        budget = cfg.max_minutes * 60.0
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.run.step, desc="train", mininterval=10,
                       dynamic_ncols=False, ncols=150, file=sys.stderr)
        last_ckpt = time.monotonic()
        smooth: dict[str, float] = {}
        while True:
            if cfg.max_steps is not None and self.run.step >= cfg.max_steps:
                break
            if cfg.max_steps is None and self.run.elapsed_s >= budget:
                break
            t0 = time.monotonic()
            values = self.step()
            self.run.elapsed_s += time.monotonic() - t0
            for key, value in values.items():
                if math.isnan(value):
                    continue
                smooth[key] = value if key not in smooth else 0.95 * smooth[key] + 0.05 * value
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(
                    f"loss {smooth['loss']:.3f} diff {smooth.get('diff', math.nan):.3f} "
                    f"ar {smooth.get('ar', math.nan):.3f} ctc {smooth['ctc']:.3f} lr {values['lr']:.2e} "
                    f"t {self.run.elapsed_s / 60:.1f}m",
                    refresh=False,
                )
            if self.run.step % 100 == 0:
                log.info("step %d %s", self.run.step, {k: round(v, 4) for k, v in smooth.items()})
            if time.monotonic() - last_ckpt >= cfg.checkpoint_minutes * 60.0:
                self.checkpoint()
                last_ckpt = time.monotonic()
        if bar is not None:
            bar.close()
        self.checkpoint()
        return self.run


# ----------------------------------------------------------------------------------------------------------------
# The whole run


def init_audio_path(parts: ModelParts) -> None:
    """Re-initialise the Whisper encoder's convolutions so the audio is not drowned by the position embeddings.

    Whisper adds fixed sinusoidal position embeddings (values of order 1) to the output of its two
    convolutions. With the library's default init (normal, std 0.02) the convolutions' output is ~20x smaller,
    so a from-scratch encoder sees almost only positions and its output barely depends on the audio: the first
    run of this trainer sat on the CTC plateau (all blanks, loss ~7.7 per token) for 600 steps. He (fan-in)
    init gives the convolution output unit scale from the start.
    """
    encoder = parts.whisper.get_encoder()
    for conv in (encoder.conv1, encoder.conv2):
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        torch.nn.init.zeros_(conv.bias)
    torch.nn.init.kaiming_normal_(parts.projector.conv.weight, nonlinearity="relu")
    torch.nn.init.zeros_(parts.projector.conv.bias)


def count_params(parts: ModelParts) -> dict[str, int]:
    whisper_enc = sum(p.numel() for p in parts.whisper.get_encoder().parameters())
    projector = sum(p.numel() for p in parts.projector.parameters())
    backbone = sum(p.numel() for p in parts.backbone.parameters())
    return {"encoder": whisper_enc, "projector": projector, "backbone_with_lora": backbone,
            "total": whisper_enc + projector + backbone}


def prepare_data(config: TrainConfig, dims: ModelDims) -> tuple[FeatureSet, FeatureSet, dict]:
    """Generate (or reuse) both splits, then extract (or reuse) their features."""
    from app.training.data import MANIFEST, generate_dataset
    from app.training.features import extract_features
    from transformers import WhisperModel

    from app.model.presets import whisper_config

    data_dir = Path(config.work_dir) / "data"
    timings = {}
    for split, n in (("eval", config.eval_per_lang), ("train", config.train_per_lang)):
        manifest = data_dir / split / MANIFEST
        ok = False
        if manifest.is_file():
            m = json.loads(manifest.read_text(encoding="utf-8"))
            ok = (m["n_per_lang"] == n and m["seed"] == config.seed and m["languages"] == list(config.langs)
                  and m["max_seconds"] == config.max_seconds)
        if not ok:
            t0 = time.monotonic()
            log.info("generating %s: %d clips per language", split, n)
            generate_dataset(data_dir, list(config.langs), n, config.seed, split, workers=config.data_workers,
                             max_seconds=config.max_seconds)
            timings[f"generate_{split}_s"] = round(time.monotonic() - t0, 1)
    encoder = WhisperModel(whisper_config(dims)).get_encoder()
    extractor, frames = feature_extractor_for(encoder), window_frames(encoder)
    t0 = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small STFTs: one thread is faster than two
    try:
        train_feats = extract_features(data_dir / "train", Path(config.work_dir) / "features" / "train", extractor,
                                       frames, config.progress)
        eval_feats = extract_features(data_dir / "eval", Path(config.work_dir) / "features" / "eval", extractor,
                                      frames, config.progress)
    finally:
        torch.set_num_threads(threads)
    timings["features_s"] = round(time.monotonic() - t0, 1)
    return train_feats, eval_feats, timings


def train(config: TrainConfig, argv: list[str] | None = None) -> Path:
    """The full run; returns the checkpoint directory written."""
    started = time.monotonic()
    torch.set_num_threads(config.threads)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dims = config.dims()
    train_feats, _, timings = prepare_data(config, dims)

    tok_dir = work / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    else:
        tokenizer = train_tokenizer(train_feats.texts, train_feats.langs, dims.vocab_size)
        tokenizer.save_pretrained(str(tok_dir))
    examples, dropped = make_examples(train_feats, tokenizer, dims)
    log.info("examples %d (dropped %s)", len(examples), dropped)

    torch.manual_seed(config.seed)
    parts = build_model(dims, tokenizer)
    init_audio_path(parts)
    loop = Loop(config, parts, dims, train_feats, examples)
    resumed = config.resume and loop.resume()
    if resumed:
        log.info("resumed at step %d (%.1f min trained)", loop.run.step, loop.run.elapsed_s / 60)
    run = loop.fit()

    info = {
        "command": "diffusion-asr " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "seed": config.seed,
        "steps": run.step,
        "examples_seen": run.examples_seen,
        "train_clips": len(examples),
        "dropped": dropped,
        "train_minutes": round(run.elapsed_s / 60, 1),
        "this_invocation_wall_minutes": round((time.monotonic() - started) / 60, 1),
        "data_timings": timings,
        "params": count_params(parts),
        "dims": asdict(dims),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "data_manifest": {k: train_feats_manifest(work) .get(k) for k in ("total", "hours", "counts", "text_source",
                                                                           "voices", "espeak_version")},
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    (work / "train_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    out = Path(config.out)
    save_checkpoint(out, parts, asr_config_for(dims), model_card(info), half=True)
    log.info("saved %s", out)
    return out


def train_feats_manifest(work: Path) -> dict:
    path = work / "data" / "train" / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def model_card(info: dict, results_md: str = "") -> str:
    """The model card; `results_md` (the eval table and latency) is filled in by `diffusion-asr eval`."""
    p = info["params"]
    d = info["dims"]
    data = info.get("data_manifest", {})
    return f"""# default: a small diffusion ASR model (en, de, fr, es, hi, zh)

The project's shipped demo model: the serving architecture (Whisper-style encoder -> projector ->
DiffusionGemma uniform-diffusion backbone with LoRA) at a size that runs on a laptop CPU. Trained from scratch
on synthetic espeak-ng speech only.

## Data

- Synthetic speech from espeak-ng ({data.get('espeak_version', 'espeak-ng')}), voices: {', '.join(f'{k} {len(v)}' for k, v in (data.get('voices') or {}).items())} voice variants,
  random speed, pitch, gain, white/pink noise and leading/trailing silence (`app/training/synth.py`).
- Text: {data.get('text_source', {}).get('source')}: random sequences of
  {data.get('text_source', {}).get('words_per_sentence')} words from the most frequent words per language
  ({data.get('text_source', {}).get('vocab_size')}). Training sentences never contain a held-out sentence.
- {data.get('total')} training clips ({data.get('hours')} h), {info['train_clips']} used after dropping clips whose
  tokens do not fit the canvas or the CTC slots ({info['dropped']}).

## Sizes

- Encoder (Whisper architecture): {d['encoder_layers']} layers x {d['encoder_width']}, {d['encoder_positions']}
  positions = {d['encoder_positions'] * 2 / 100:.0f} s window; {p['encoder']:,} parameters.
- Projector: conv subsample {d['subsample']} -> {d['encoder_positions'] // d['subsample']} audio slots,
  width {d['projector_width']}; {p['projector']:,} parameters.
- Backbone (DiffusionGemma): hidden {d['hidden']} x {d['layers']} layers, {d['experts']} experts top-{d['top_k_experts']},
  vocabulary {d['vocab_size']} (byte-level BPE trained on the training sentences, language tags `<|xx|>`),
  canvas {d['canvas_length']} tokens, LoRA rank {d['lora_rank']} on encoder/decoder attention;
  {p['backbone_with_lora']:,} parameters (encoder and decoder share their text weights).
- Total {p['total']:,} parameters, stored in fp16.

## Training

All parameters trained from random init (fp32, CPU, {info['machine']}, torch {info['torch']}) with three losses:
uniform-diffusion cross-entropy on the canvas (weight {info['config']['w_diffusion']}; corrupted fraction
t ~ U(0,1) per row, all positions scored, <pad> positions weighted {info['config']['pad_weight']}; self-conditioning
on {info['config']['self_cond_prob']:.0%} of rows with the first pass's logits divided by a temperature in
[0.4, 0.8]), autoregressive next-token loss through the backbone's causal encoder (weight {info['config']['w_ar']}),
CTC on the projector output through the lm_head (weight {info['config']['w_ctc']}, blank = <pad>, targets = text
tokens without the tag). Language hint in the prompt on {info['config']['hint_prob']:.0%} of batches.
AdamW lr {info['config']['lr']}, warm-up {info['config']['warmup_steps']} steps, cosine decay, batch
{info['config']['batch_size']}, {info['steps']} steps ({info['examples_seen']:,} clips seen).

```
{info['command']}
```

Seed {info['seed']}. Training loop {info['train_minutes']} min; data generation and feature extraction
{info['data_timings']} s; the whole invocation {info['this_invocation_wall_minutes']} min wall clock (2 shared CPU
cores; other jobs ran on the same cores, so timings are noisy).

{results_md}
## Limits

- Trained only on synthetic espeak-ng speech of random word sequences: expect weak results on real recordings
  (accents, reverberation, natural prosody) and no punctuation or casing.
- Windows of {d['encoder_positions'] * 2 / 100:.0f} s; at most {d['canvas_length'] - 2} tokens per window.
- A demo of the architecture, not a production model.
"""
