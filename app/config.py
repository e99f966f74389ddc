"""All settings in one place, grouped by the component that reads them, validated at start.

Every field is an environment variable with the prefix `ASR_`, under two names: the documented flat one
(`ASR_MAX_BATCH_SIZE`) and the nested one (`ASR_ENGINE__MAX_BATCH_SIZE`), which wins when both are set. The flat
name is the field's name, prefixed by its group's `flat_prefix`; `FLAT_NAMES` lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "ASR_"
NESTED_DELIMITER = "__"


class Group(BaseModel):
    """One component's settings."""

    model_config = {"extra": "forbid"}
    flat_prefix: ClassVar[str] = ""
    """Prefix of the group's flat variable names (`ASR_<prefix><FIELD>`)."""
    flat_renames: ClassVar[dict[str, str]] = {}
    """Fields whose flat name is not prefix + field name."""

    @classmethod
    def flat_name(cls, field: str) -> str:
        """The documented variable name of `field`, without `ASR_`."""
        return cls.flat_renames.get(field, cls.flat_prefix + field).upper()


class ModelSettings(Group):
    """Which model, on which device, and the decoding defaults of requests that give none."""

    flat_renames: ClassVar[dict[str, str]] = {"path": "model"}

    path: Path | None = None
    """ASR_MODEL: directory holding the whole model (encoder/, backbone/, adapter/). Unset: the embedded default."""
    encoder: Path | None = None
    """Hugging Face Whisper directory; overrides MODEL/encoder."""
    backbone: Path | None = None
    """Hugging Face DiffusionGemma directory with its tokenizer; overrides MODEL/backbone."""
    adapter: Path | None = None
    """Adapter directory: the project's layout, or a published adapter folder as downloaded; overrides MODEL/adapter."""
    trust_adapter_code: bool = False
    """Build a published adapter's projector with the adapter's own `audio.AudioProjector` (runs its code)."""
    cache_dir: Path = Path.home() / ".cache" / "diffusion-asr"
    """ASR_CACHE_DIR: where `convert-encoder` writes whisper-base (`whisper-base/`) and where a generated fallback
    model is written when no trained default model ships with the code."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Device the model runs on; auto picks CUDA when present."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype; auto is bf16 on CUDA and fp32 on CPU."""
    denoising_steps: int | None = Field(None, ge=1, le=64)
    """Denoising step budget of requests that give none; unset: the checkpoint's own `default_steps`."""
    canvas_length: int | None = Field(None, ge=8, le=4096)
    """Canvas slots per window; unset: the adapter's own."""
    default_seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seed of requests that give none, so equal input gives equal output."""
    sampler: Literal["inverse-cdf", "multinomial"] = "inverse-cdf"
    """Token sampling strategy (multinomial reproduces transformers' generate() stream exactly; slower)."""


class EngineSettings(Group):
    """The batching worker: batch and queue sizes, deadlines, draining."""

    max_batch_size: int = Field(8, ge=1, le=256)
    """Most rows denoised together."""
    max_wait_ms: float = Field(5.0, ge=0, le=10_000)
    """How long the worker waits to fill a batch when it is idle."""
    continuous_batching: bool = True
    """Admit queued jobs between denoising steps; off: a batch runs to its end before the next starts."""
    max_queue: int = Field(64, ge=1)
    """Jobs waiting beyond this are refused at once with 503 and Retry-After."""
    request_timeout_s: float = Field(120.0, gt=0)
    """Per-request deadline (504 when passed)."""
    drain_timeout_s: float = Field(30.0, ge=0)
    """On shutdown, how long queued and running jobs may take to finish."""
    fault_injection_prompt: str | None = None
    """Testing only: a job whose prompt equals this string fails inside the worker (at its prefill)."""
    hold_prompt: str | None = None
    """Testing only: a job whose prompt equals this string stops after its first denoising step and holds the
    worker there until it is cancelled or its deadline passes (tests of back-pressure that do not race the CPU)."""


class ServerSettings(Group):
    """The HTTP listener, authentication and per-request limits."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity."""
    api_keys: list[str] = []
    """Comma-separated bearer keys; empty: no authentication."""
    cors_origins: list[str] = []
    """Comma-separated origins allowed by CORS and on WebSocket handshakes (`*`: any)."""
    model_aliases: list[str] = ["whisper-1"]
    """Comma-separated other names the served model answers to in `model` (clients hard-coded to OpenAI's
    `whisper-1` keep working); empty: only its own name."""
    shutdown_grace_s: float = Field(2.0, ge=0, le=300)
    """After SIGTERM, keep serving this long with /readyz at 503 (so load balancers stop routing here), then drain;
    a second signal skips it."""
    header_timeout_s: float = Field(10.0, gt=0, le=600)
    """A connection whose request headers are not complete this long after it opened (or after the next
    request's first byte) is answered 408 and closed, so slow clients cannot hold sockets forever."""
    keep_alive_s: int = Field(5, ge=1, le=600)
    """An idle keep-alive connection is closed after this many seconds."""
    max_upload_mb: float = Field(25.0, gt=0)
    """Largest accepted upload (413 past it, enforced while the body arrives)."""
    max_audio_seconds: float = Field(600.0, gt=0)
    """Longest accepted audio (413 past it, enforced while decoding)."""
    max_prompt_chars: int = Field(224, ge=0, le=4096)
    """Longest accepted `prompt` (400 past it), so context text cannot overflow the backbone's window."""
    decode_threads: int = Field(2, ge=1, le=64)
    """Threads that decode uploads off the event loop."""

    @field_validator("api_keys", "cors_origins", "model_aliases", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


class StreamSettings(Group):
    """WebSocket streaming sessions (flat names `ASR_STREAM_*`)."""

    flat_prefix: ClassVar[str] = "stream_"

    partial_interval_s: float = Field(1.0, gt=0)
    """Refresh a partial after this much new audio."""
    endpoint_silence_ms: float = Field(600.0, gt=0)
    """Silence that ends an utterance."""
    max_frame_bytes: int = Field(256 * 1024, ge=1024)
    """Largest binary frame (close 1009 past it)."""
    max_session_s: float = Field(3600.0, gt=0)
    """Longest session in audio seconds."""
    idle_timeout_s: float = Field(60.0, gt=0)
    """Close a session that sends nothing for this long."""
    max_sessions: int = Field(32, ge=1)
    """Concurrent sessions (refused past it with 1013)."""
    max_silence_s: float = Field(5.0, gt=0)
    """A stretch this long without speech becomes its own final (empty text), so silence is not held back for the
    next utterance (capped at the model's window)."""


GROUPS: dict[str, type[Group]] = {
    "model": ModelSettings, "engine": EngineSettings, "server": ServerSettings, "stream": StreamSettings,
}
FLAT_NAMES: dict[str, tuple[str, str]] = {
    group.flat_name(field): (name, field) for name, group in GROUPS.items() for field in group.model_fields
}
"""Flat variable name (without `ASR_`) -> (group, field)."""


def nest(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{"max_batch_size": 4}` -> `{"engine": {"max_batch_size": 4}}` (keys: flat names, any case)."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.upper() not in FLAT_NAMES:
            raise ValueError(f"unknown setting {key!r}")
        group, field = FLAT_NAMES[key.upper()]
        nested.setdefault(group, {})[field] = value
    return nested


class _EnvironmentSource(PydanticBaseSettingsSource):
    """`ASR_<GROUP>__<FIELD>`, else the flat `ASR_<NAME>`, as raw strings for pydantic to validate."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every group at once

    def __call__(self) -> dict[str, Any]:
        env = {key.upper(): value for key, value in os.environ.items() if key.upper().startswith(ENV_PREFIX)}
        values: dict[str, dict[str, str]] = {}
        for name, group in GROUPS.items():
            for field in group.model_fields:
                nested = f"{ENV_PREFIX}{name}{NESTED_DELIMITER}{field}".upper()
                flat = ENV_PREFIX + group.flat_name(field)
                for key in (nested, flat):
                    if key in env:
                        values.setdefault(name, {})[field] = env[key]
                        break
        return values


class Settings(BaseSettings):
    """Service settings: `Settings()` reads the environment; keyword groups override it."""

    model_config = SettingsConfigDict(extra="forbid")

    model: ModelSettings = ModelSettings()
    engine: EngineSettings = EngineSettings()
    server: ServerSettings = ServerSettings()
    stream: StreamSettings = StreamSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments first, then the environment; no dotenv or secrets files.
        return init_settings, _EnvironmentSource(settings_cls)

    @classmethod
    def flat(cls, **values: Any) -> "Settings":
        """Settings with some values given by their flat names, e.g. `Settings.flat(max_batch_size=4)`."""
        return cls(**nest(values))
