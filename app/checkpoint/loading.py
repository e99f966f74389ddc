"""Loading a whole model: from settings or directories to an `AsrPipeline`, every part checked against the others.

The one place where the row start is chosen: the stock `NoiseStart`, or one of the embedded demo's starts when
the adapter's `asr_config.json` has its section: `CtcStart` (`ctc_start`), `AlignedStart` (`aligned_positions`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from app.checkpoint.adapter_plan import AdapterPlan, plan_adapter
from app.checkpoint.embedded import embedded_model_dir
from app.checkpoint.errors import CheckpointError, reading
from app.checkpoint.layout import CheckpointPaths
from app.checkpoint.prompt_check import check_prompt
from app.checkpoint.reading import encoder_frames, load_backbone, load_encoder, load_lexicons, load_tokenizer
from app.config import ModelSettings
from app.model.aligned_positions.start import AlignedStart
from app.model.asr_config import AsrConfig
from app.model.ctc_start.config import CtcStartConfig
from app.model.ctc_start.start import CtcStart
from app.model.pipeline import AsrParts, AsrPipeline
from app.model.prompt import PromptBuilder
from app.model.row_start import NoiseStart, RowStart
from app.model.sampling import SAMPLERS, TokenSampler
from app.model.transcript import TranscriptDecoder

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (bf16 matmuls are several times slower on common CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_pipeline(
    paths: CheckpointPaths,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    canvas_length: int | None = None,
    sampler: TokenSampler | None = None,
    trust_adapter_code: bool = False,
) -> AsrPipeline:
    """Load and check the three parts (offline); `canvas_length` overrides the adapter's.

    Order matters: everything that can be checked from configs, tensor headers and the tokenizer (the adapter's
    plan, its LoRA names against the backbone's layers, the prompt's tokens) is checked before any encoder or
    backbone weight is read, so a wrong adapter fails in seconds, not after the backbone's minutes.
    """
    plan, config, tokenizer = _preflight(paths, trust_adapter_code, canvas_length)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    # Every part's load names the file at fault when it fails (a truncated download, a corrupt copy).
    with reading(paths.adapter):
        projector = plan.build_projector(trust_adapter_code).to(device=device, dtype=dtype)
        lora_tensors = plan.lora_tensors()
    log.info("adapter %s (%s layout): projector %s, LoRA on %d layers", paths.adapter, plan.layout,
             plan.projector.kind, len(plan.lora.modules))  # type: ignore[union-attr]
    with reading(paths.encoder):
        encoder = load_encoder(paths.encoder, device, dtype)
    with reading(paths.backbone):
        backbone = load_backbone(paths.backbone, plan.lora, lora_tensors, device, dtype,  # type: ignore[arg-type]
                                 config.canvas_length, config.final_logit_softcapping)
    parts = AsrParts(encoder=encoder, projector=projector.eval().requires_grad_(False), backbone=backbone,
                     tokenizer=tokenizer)
    _check_shapes(paths, parts, config)
    return AsrPipeline(paths.name, parts, config, _row_start(paths.adapter, parts, config), sampler)


def _preflight(paths: CheckpointPaths, trust_adapter_code: bool,
               canvas_length: int | None) -> tuple[AdapterPlan, AsrConfig, PreTrainedTokenizerBase]:
    """The checks that read no weights: files, the adapter's plan, the prompt against the tokenizer."""
    paths.validate()
    with reading(paths.encoder):
        frames = encoder_frames(paths.encoder)
    with reading(paths.adapter):
        plan = plan_adapter(paths.adapter, paths.backbone, trust_adapter_code, frames)
    config = plan.config if canvas_length is None else replace(plan.config, canvas_length=canvas_length)
    with reading(paths.backbone):
        tokenizer = load_tokenizer(paths.backbone)
    check_prompt(tokenizer, config, str(paths.adapter))
    return plan, config, tokenizer


def load_model_dir(model: Path | None = None, **overrides) -> AsrPipeline:
    """`load_pipeline` from one model directory (standard layout) or from the three parts given separately."""
    parts = {k: overrides.pop(k, None) for k in ("encoder", "backbone", "adapter")}
    return load_pipeline(CheckpointPaths.resolve(model, **parts), **overrides)


def _row_start(adapter: Path, parts: AsrParts, config: AsrConfig) -> RowStart:
    if config.aligned_positions is not None:
        return AlignedStart(parts.backbone, parts.tokenizer.pad_token_id, parts.projector.subsample,
                            hold_padding=config.past_audio == "hold")
    if config.ctc_start is None:
        return NoiseStart(parts.backbone)
    try:
        ctc = CtcStartConfig.from_dict(config.ctc_start)
        tags = TranscriptDecoder(parts.tokenizer, config).tag_ids
        return CtcStart(parts.backbone, parts.tokenizer, tags, config.canvas_length, parts.projector.subsample,
                        ctc, load_lexicons(adapter) if ctc.decoding == "lexicon" else {})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{adapter}: {exc}") from None


def _check_shapes(paths: CheckpointPaths, parts: AsrParts, config: AsrConfig) -> None:
    """The parts must fit each other: projector slots, widths and the prompt against the backbone."""
    frames = parts.encoder.config.max_source_positions
    slots = parts.projector.slots(frames)
    if slots != config.audio_slots:
        raise CheckpointError(f"{paths.adapter}: the prompt has audio_slots={config.audio_slots} but the "
                              f"projector gives {slots} for {frames} encoder frames")
    hidden = parts.backbone.config.text_config.hidden_size
    if parts.projector.out_features != hidden:
        raise CheckpointError(f"{paths.adapter}: projector outputs {parts.projector.out_features} but the "
                              f"backbone's hidden size is {hidden}")
    try:
        longest = len(PromptBuilder(parts.tokenizer, config).build("en", "x" * 64).ids)
    except ValueError as exc:
        raise CheckpointError(f"{paths.adapter}: {exc}") from None
    window = parts.backbone.config.text_config.sliding_window
    if longest >= window:
        raise CheckpointError(f"prompt of {longest} tokens does not fit the backbone's sliding window {window}")


def resolve_paths(settings: ModelSettings) -> CheckpointPaths:
    """The configured model, or the embedded default when nothing is configured."""
    if settings.path is None and not (settings.encoder and settings.backbone and settings.adapter):
        model = embedded_model_dir(settings.cache_dir)
    else:
        model = settings.path
    return CheckpointPaths.resolve(model, settings.encoder, settings.backbone, settings.adapter)


def check_model(settings: ModelSettings) -> None:
    """Everything about the configured model that can be checked without reading weights: files present, the
    adapter's plan (projector, LoRA names against the backbone's layers), the prompt against the tokenizer.

    Run before the server starts, so a wrong adapter fails at once with its message, not inside start-up.
    """
    _preflight(resolve_paths(settings), settings.trust_adapter_code, settings.canvas_length)


def resolve_device(settings: ModelSettings) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is an error, not a silent fallback."""
    if settings.device == "auto":
        return default_device()
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("ASR_DEVICE=cuda but no CUDA device is available")
    return torch.device(settings.device)


def load_from_settings(settings: ModelSettings) -> AsrPipeline:
    """Load the pipeline the model settings describe."""
    return load_pipeline(resolve_paths(settings), device=resolve_device(settings), dtype=DTYPES.get(settings.dtype),
                         canvas_length=settings.canvas_length, sampler=SAMPLERS[settings.sampler](),
                         trust_adapter_code=settings.trust_adapter_code)
