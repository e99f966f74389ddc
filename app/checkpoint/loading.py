"""Loading a whole model: from settings or directories to an `AsrPipeline`, every part checked against the others.

The one place where the row start is chosen: the stock `NoiseStart`, or the embedded demo's `CtcStart` when
the adapter's `asr_config.json` has a `ctc_start` section.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from app.checkpoint.asr_config_file import read_asr_config
from app.checkpoint.embedded import embedded_model_dir
from app.checkpoint.errors import CheckpointError, reading
from app.checkpoint.layout import ASR_CONFIG_FILE, LORA_DIR, PROJECTOR_FILE, CheckpointPaths
from app.checkpoint.reading import load_backbone, load_encoder, load_lexicons, load_projector, load_tokenizer
from app.config import ModelSettings
from app.model.asr_config import AsrConfig
from app.model.ctc_start.config import CtcStartConfig
from app.model.ctc_start.start import CtcStart
from app.model.pipeline import AsrParts, AsrPipeline
from app.model.prompt import PromptBuilder
from app.model.row_start import NoiseStart, RowStart
from app.model.sampling import SAMPLERS, TokenSampler
from app.model.transcript import TranscriptDecoder

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
) -> AsrPipeline:
    """Load and check the three parts (offline); `canvas_length` overrides the adapter's."""
    paths.validate()
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    with reading(paths.adapter / ASR_CONFIG_FILE):
        config = read_asr_config(paths.adapter)
    if canvas_length is not None:
        config = replace(config, canvas_length=canvas_length)
    # Every part's load names the file at fault when it fails (a truncated download, a corrupt copy).
    with reading(paths.backbone):
        tokenizer = load_tokenizer(paths.backbone)
    with reading(paths.encoder):
        encoder = load_encoder(paths.encoder, device, dtype)
    with reading(paths.adapter / PROJECTOR_FILE):
        projector = load_projector(paths.adapter, device, dtype)
    with reading(paths.backbone):
        backbone = load_backbone(paths.backbone, paths.adapter / LORA_DIR, device, dtype, config.canvas_length)
    parts = AsrParts(encoder=encoder, projector=projector, backbone=backbone, tokenizer=tokenizer)
    _check_shapes(paths, parts, config)
    return AsrPipeline(paths.name, parts, config, _row_start(paths.adapter, parts, config), sampler)


def load_model_dir(model: Path | None = None, **overrides) -> AsrPipeline:
    """`load_pipeline` from one model directory (standard layout) or from the three parts given separately."""
    parts = {k: overrides.pop(k, None) for k in ("encoder", "backbone", "adapter")}
    return load_pipeline(CheckpointPaths.resolve(model, **parts), **overrides)


def _row_start(adapter: Path, parts: AsrParts, config: AsrConfig) -> RowStart:
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
        raise CheckpointError(f"{paths.adapter}: asr_config.json has audio_slots={config.audio_slots} but the "
                              f"projector gives {slots} for {frames} encoder frames")
    hidden = parts.backbone.config.text_config.hidden_size
    if parts.projector.proj.out_features != hidden:
        raise CheckpointError(f"{paths.adapter}: projector outputs {parts.projector.proj.out_features} but the "
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
                         canvas_length=settings.canvas_length, sampler=SAMPLERS[settings.sampler]())
