"""All settings in one place (environment prefix ASR_), validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from app.model.asr_config import SUPPORTED_LANGUAGES



class Settings(BaseSettings):
    """Service settings; every field can be set as ASR_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="ASR_", env_file=None, extra="ignore")

    model: Path | None = None
    """Directory holding the whole model (encoder/, backbone/, adapter/). Unset: the embedded default model."""
    encoder: Path | None = None
    """Hugging Face Whisper directory; overrides MODEL/encoder."""
    backbone: Path | None = None
    """Hugging Face DiffusionGemma directory with its tokenizer; overrides MODEL/backbone."""
    adapter: Path | None = None
    """Adapter directory (projector, LoRA, asr_config.json); overrides MODEL/adapter."""
    cache_dir: Path = Path.home() / ".cache" / "diffusion-asr"
    """Where a generated fallback model is written when no trained default model ships with the code."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Device the model runs on; auto picks CUDA when present."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype; auto is bf16 on CUDA and fp32 on CPU."""
    denoising_steps: int = Field(8, ge=1, le=64)
    """Default denoising step budget per request."""
    canvas_length: int | None = Field(None, ge=8, le=4096)
    """Canvas slots per window; unset: the adapter's own."""
    default_seed: int = Field(0, ge=0)
    """Seed of requests that give none, so equal input gives equal output."""
    sampler: Literal["inverse-cdf", "multinomial"] = "inverse-cdf"
    """Token sampling strategy (multinomial reproduces transformers' generate() stream exactly; slower)."""
    max_batch_size: int = Field(8, ge=1, le=256)
    """Most rows denoised together."""
    max_wait_ms: float = Field(5.0, ge=0, le=10_000)
    """How long the worker waits to fill a batch when it is idle."""
    continuous_batching: bool = True
    """Admit queued jobs between denoising steps; off: a batch runs to its end before the next starts."""
    fault_injection_prompt: str | None = None
    """Testing only: a job whose prompt equals this string fails inside the worker (at its prefill)."""
    max_queue: int = Field(64, ge=1)
    """Jobs waiting beyond this are refused at once with 503 and Retry-After."""
    request_timeout_s: float = Field(120.0, gt=0)
    """Per-request deadline (504 when passed)."""
    drain_timeout_s: float = Field(30.0, ge=0)
    """On shutdown, how long queued and running jobs may take to finish."""
    shutdown_grace_s: float = Field(0.0, ge=0, le=300)
    """After SIGTERM, keep serving this long with /readyz at 503 (so load balancers stop routing here), then drain."""
    max_upload_mb: float = Field(25.0, gt=0)
    """Largest accepted upload (413 past it, enforced while the body arrives)."""
    max_audio_seconds: float = Field(600.0, gt=0)
    """Longest accepted audio (413 past it, enforced while decoding)."""
    max_prompt_chars: int = Field(224, ge=0, le=4096)
    """Longest accepted `prompt` (400 past it), so context text cannot overflow the backbone's window."""
    decode_threads: int = Field(2, ge=1, le=64)
    """Threads that decode uploads off the event loop."""
    api_keys: Annotated[list[str], NoDecode] = []
    """Comma-separated bearer keys; empty: no authentication."""
    cors_origins: Annotated[list[str], NoDecode] = []
    """Comma-separated origins allowed by CORS."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity."""
    stream_partial_interval_s: float = Field(1.0, gt=0)
    """WebSocket: refresh a partial after this much new audio."""
    stream_endpoint_silence_ms: float = Field(600.0, gt=0)
    """WebSocket: silence that ends an utterance."""
    stream_max_frame_bytes: int = Field(256 * 1024, ge=1024)
    """WebSocket: largest binary frame (close 1009 past it)."""
    stream_max_session_s: float = Field(3600.0, gt=0)
    """WebSocket: longest session in audio seconds."""
    stream_idle_timeout_s: float = Field(60.0, gt=0)
    """WebSocket: close a session that sends nothing for this long."""
    stream_max_sessions: int = Field(32, ge=1)
    """WebSocket: concurrent sessions (refused past it with 1013)."""
    stream_max_silence_s: float = Field(5.0, gt=0)
    """WebSocket: a stretch this long without speech becomes its own final (empty text), so silence is not
    held back for the next utterance (capped at the model's window)."""

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def languages(self) -> tuple[str, ...]:
        return SUPPORTED_LANGUAGES
