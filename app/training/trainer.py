"""`diffusion-asr train`: synthetic data -> features -> tokenizer -> model -> three-loss training -> checkpoint.

Everything under `--work-dir` (datasets, features, tokenizer, resumable state) is scratch; the shipped model is
written with `save_checkpoint(..., half=True)` to `--out`. The forward pass and losses are in
`app.training.forward`, the resumable state in `app.training.state`, the model card in `app.training.card`.
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
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function
from transformers import PreTrainedTokenizerFast

from app.checkpoint.parts import ModelParts, build_model, load_parts, save_checkpoint
from app.checkpoint.presets import ModelDims
from app.model.encoder import feature_extractor_for, window_frames
from app.training import losses
from app.training.augment import mask_spectrogram
from app.training.batches import (
    Batch,
    Example,
    collate,
    make_examples,
    next_batch,
    probe_batch,
    train_tokenizer,
)
from app.training.cached import cache_reference, cached_dims, load_cached_splits, train_clip_counts
from app.training.card import count_params, model_card, train_feats_manifest
from app.training.config import TrainConfig
from app.training.features import FeatureSet
from app.training.forward import AsrTrainer
from app.training.state import (
    RunState,
    load_state,
    lr_factor,
    make_optimizer,
    save_state,
)

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


class Loop:
    """The training loop on prepared data; usable on its own (tests) or from `train()`."""

    def __init__(self, config: TrainConfig, parts: ModelParts, dims: ModelDims, feats: FeatureSet,
                 examples: list[Example]) -> None:
        if len(examples) < config.batch_size:  # a batch is drawn without repeats
            raise ValueError(f"--batch-size {config.batch_size} is more than the {len(examples)} usable training "
                             f"clips (--train-per-lang {config.train_per_lang}); lower it or raise --train-per-lang")
        if config.masks().active and parts.whisper is None:
            raise ValueError("spectrogram masks need log-mel features: a run on cached encoder outputs has none")
        if config.train_only not in ("all", "adapter"):
            raise ValueError(f"--train-only must be 'all' or 'adapter', got {config.train_only!r}")
        self.config = config
        self.trainer = AsrTrainer(parts, dims, config)
        if config.train_only == "adapter":
            self.trainer.train_only_adapter()
        self.feats = feats
        self.examples = examples
        self.optimizer = make_optimizer(self.trainer, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = random.Random(config.seed)
        self.run = RunState()
        self.order: list[int] = []
        self.state_path = Path(config.work_dir) / STATE_FILE
        self.probe: Batch | None = None  # held-out clips whose greedy-CTC CER the log reports

    def probe_cer(self) -> float:
        """Greedy-CTC CER (normalised, spaces removed) of the probe clips: is the audio path learning?"""
        from app.training.evaluate import cer

        tokenizer = self.trainer.parts.tokenizer
        self.trainer.train(False)
        with torch.no_grad():
            audio = self.trainer.project(self.probe.features)
            logits = self.trainer.model.lm_head(audio)
        hyps = [tokenizer.decode(ids) for ids in losses.greedy_ctc(logits, self.probe.slots, tokenizer.pad_token_id)]
        refs = [tokenizer.decode(row[:n]) for row, n in zip(self.probe.targets.ctc.tolist(),
                                                             self.probe.targets.ctc_lengths.tolist())]
        return cer(refs, hyps)

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
        """One optimizer step on the next batch; its parts are labelled for `app.training.step_timing`."""
        with record_function("train.step"):
            return self._step()

    def _step(self) -> dict[str, float]:
        cfg = self.config
        with record_function("train.batch"):
            picked, hinted = next_batch(self.examples, self.sampler, cfg.batch_size, cfg.hint_prob, self.order,
                                        cfg.bucket_batches)
            batch = collate(self.feats, picked, self.trainer.parts.tokenizer, self.trainer.dims.canvas_length,
                            hinted).to(self.trainer.device)
        masks = cfg.masks()
        if masks.active:  # drawn only when on, so runs without masks keep their random stream
            frames = torch.from_numpy(self.feats.audio_frames(np.array([e.index for e in picked])))
            batch.features = mask_spectrogram(batch.features, frames, masks, self.generator)
        full_stage = self.run.elapsed_s >= cfg.ctc_only_until_minutes * 60.0
        if full_stage and self.run.full_stage_step is None:
            self.run.full_stage_step = self.run.step
        scheduled = cfg.lr * lr_factor(cfg, self.run.step, self.run.elapsed_s, self.run.full_stage_step)
        for group in self.optimizer.param_groups:
            group["lr"] = scheduled * group.get("lr_scale", 1.0)
        self.trainer.train(True)
        if not full_stage:
            out = self.trainer.ctc_only(batch)
        else:
            if cfg.freeze_audio and cfg.ctc_only_until_minutes > 0 and cfg.train_only == "all":
                self.trainer.freeze_audio()  # idempotent; also right after a resume into the full stage
            with record_function("train.losses"):
                out = self.trainer.losses(batch, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        with record_function("train.backward"):
            out["loss"].backward()
        with record_function("train.optimizer"):
            norm = torch.nn.utils.clip_grad_norm_(self.trainer.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.run.step += 1
        self.run.examples_seen += len(picked)
        values = {k: float(v.detach()) for k, v in out.items()}
        values["gnorm"] = float(norm)
        values["lr"] = scheduled
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
            if self.probe is not None and cfg.probe_every and self.run.step % cfg.probe_every == 0:
                log.info("step %d held-out greedy-CTC CER %.3f", self.run.step, self.probe_cer())
            if time.monotonic() - last_ckpt >= cfg.checkpoint_minutes * 60.0:
                self.checkpoint()
                last_ckpt = time.monotonic()
        if bar is not None:
            bar.close()
        self.checkpoint()
        return self.run


def training_device(name: str) -> torch.device:
    """The device `--device` names, refused by name when this machine has none of that kind."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA device is available to torch {torch.__version__}")
        # TF32 matmuls: fp32 training at tensor-core speed; the small model needs no bf16 autocast.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: training runs on 'cpu' or 'cuda[:N]'")
    return device


def move_parts(parts: ModelParts, device: torch.device) -> None:
    """Move the trainable modules (the tokenizer stays where it is)."""
    for module in (parts.whisper, parts.projector, parts.backbone):
        if module is not None:  # no Whisper when a run reads the pretrained encoder's cached outputs
            module.to(device)


def init_audio_path(parts: ModelParts, conv_gain: float = 1.0) -> None:
    """Re-initialise the Whisper encoder's convolutions so the audio is not drowned by the position embeddings.

    Whisper adds fixed sinusoidal position embeddings (values of order 1) to the output of its two
    convolutions. With the library's default init (normal, std 0.02) the convolutions' output is ~20x smaller,
    so a from-scratch encoder sees almost only positions and its output barely depends on the audio: the first
    run of this trainer sat on the CTC plateau (all blanks, loss ~7.7 per token) for 600 steps. He (fan-in)
    init gives the convolution output unit scale from the start; `conv_gain` scales the second convolution
    further, so that the audio outweighs the positions in the residual stream (as Transformer ASR front ends
    scale their subsampled features by sqrt(width) before adding positions).
    """
    if parts.whisper is not None:  # a pretrained encoder keeps its weights
        encoder = parts.whisper.get_encoder()
        for conv in (encoder.conv1, encoder.conv2):
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
        with torch.no_grad():
            encoder.conv2.weight.mul_(conv_gain)
    torch.nn.init.kaiming_normal_(parts.projector.conv.weight, nonlinearity="relu")
    torch.nn.init.zeros_(parts.projector.conv.bias)


def prepare_data(config: TrainConfig, dims: ModelDims) -> tuple[FeatureSet, FeatureSet, dict]:
    """Generate (or reuse) both splits, then extract (or reuse) their features."""
    from transformers import WhisperModel

    from app.checkpoint.presets import whisper_config
    from app.training.data import MANIFEST, generate_dataset
    from app.training.features import extract_features

    data_dir = Path(config.work_dir) / "data"
    timings = {}
    for split, n in (("eval", config.eval_per_lang), ("train", config.train_per_lang)):
        manifest = data_dir / split / MANIFEST
        ok = False
        if manifest.is_file():
            m = json.loads(manifest.read_text(encoding="utf-8"))
            ok = (m["n_per_lang"] == n and m["seed"] == config.seed and m["languages"] == list(config.langs)
                  and m["max_seconds"] == config.max_seconds and m.get("engines", []) == list(config.engines)
                  and m.get("text_source", {}).get("corpus") == (str(config.corpus) if config.corpus else None))
        if not ok:
            t0 = time.monotonic()
            log.info("generating %s: %d clips per language", split, n)
            generate_dataset(data_dir, list(config.langs), n, config.seed, split, workers=config.data_workers,
                             max_seconds=config.max_seconds, corpus_dir=config.corpus, engines=config.engines)
            timings[f"generate_{split}_s"] = round(time.monotonic() - t0, 1)
    encoder = WhisperModel(whisper_config(dims)).get_encoder()
    extractor, frames = feature_extractor_for(encoder), window_frames(encoder)
    t0 = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small STFTs: one thread is faster than two
    try:
        train_feats = extract_features(data_dir / "train", Path(config.work_dir) / "features" / "train", extractor,
                                       frames, config.progress, config.data_workers)
        eval_feats = extract_features(data_dir / "eval", Path(config.work_dir) / "features" / "eval", extractor,
                                      frames, config.progress, config.data_workers)
    finally:
        torch.set_num_threads(threads)
    timings["features_s"] = round(time.monotonic() - t0, 1)
    return train_feats, eval_feats, timings


def build_loop(config: TrainConfig) -> tuple[Loop, dict, dict]:
    """Data, tokenizer and model as `config` names them, and the loop over them (resumed when asked).

    Returns the loop, the examples dropped per reason, and the data preparation's timings.
    """
    torch.set_num_threads(config.threads)
    device = training_device(config.device)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dims = config.dims()
    reference = None
    if config.encoder_cache is not None:
        train_feats, eval_feats = load_cached_splits(config.encoder_cache)
        reference, dims, timings = cache_reference(train_feats), cached_dims(dims, train_feats), {}
    parts = load_parts(config.init_from, dims) if config.init_from else None
    if parts is not None and parts.pretrained_encoder != reference:
        # Its projector learned from one encoder's outputs: continuing on another's would start from noise.
        raise ValueError(f"--init-from {config.init_from}: its encoder ({parts.pretrained_encoder or 'its own'}) is "
                         f"not the run's ({reference or 'its own, from log-mels'})")
    if config.encoder_cache is None:  # after the checks above, which read no data
        train_feats, eval_feats, timings = prepare_data(config, dims)

    tok_dir = work / "tokenizer"
    if parts is not None:
        tokenizer = parts.tokenizer  # the checkpoint's ids are what its weights mean
        tokenizer.save_pretrained(str(tok_dir))
    elif (tok_dir / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    else:
        tokenizer = train_tokenizer(
            train_feats.texts, train_feats.langs, dims.vocab_size, config.characters, config.word_initial
        )
        tokenizer.save_pretrained(str(tok_dir))
    examples, dropped = make_examples(train_feats, tokenizer, dims)
    log.info("examples %d (dropped %s)", len(examples), dropped)

    torch.manual_seed(config.seed)
    if parts is None:
        parts = build_model(dims, tokenizer, reference)
        init_audio_path(parts, config.conv_gain)  # on the CPU, so a seed gives the same weights on any device
    move_parts(parts, device)
    loop = Loop(config, parts, dims, train_feats, examples)
    if eval_feats is not None:
        loop.probe = probe_batch(eval_feats, tokenizer, dims).to(device)
    resumed = config.resume and loop.resume()
    if resumed:
        log.info("resumed at step %d (%.1f min trained)", loop.run.step, loop.run.elapsed_s / 60)
    return loop, dropped, timings


def train(config: TrainConfig, argv: list[str] | None = None) -> Path:
    """The full run; returns the checkpoint directory written."""
    started = time.monotonic()
    loop, dropped, timings = build_loop(config)
    parts, dims, examples, work = loop.trainer.parts, loop.trainer.dims, loop.examples, Path(config.work_dir)
    device = loop.trainer.device
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
                                                                           "voices", "espeak_version", "engines")},
        "cache_clips": train_clip_counts(config.encoder_cache) if config.encoder_cache is not None else None,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
    }
    (work / "train_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    out = Path(config.out)
    move_parts(parts, torch.device("cpu"))
    # The checkpoint's asr_config is the one training ran with, so inference reads the audio the same way, with
    # the recipe's sampler settings.
    save_checkpoint(out, parts, replace(loop.trainer.asr_config, **config.sampler), model_card(info), half=True)
    # The run's record travels with the checkpoint, so `diffusion-asr eval --update-card` can re-render the card.
    (out / "adapter" / "train_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    log.info("saved %s", out)
    return out
