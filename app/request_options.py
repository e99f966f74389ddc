"""The one request resolver: an HTTP form, a WebSocket query or CLI flags become `RequestOptions` (one set of
types, so validation, error messages and the OpenAPI schema agree), then `DecodeOptions` against the loaded model.

Defaults are resolved here and nowhere else: steps from the request, else `ASR_DENOISING_STEPS` when set, else
the checkpoint's `default_steps`; the seed from the request, else `ASR_DEFAULT_SEED`; the language checked
against the languages the loaded model itself transcribes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.languages import SUPPORTED_LANGUAGES
from app.results import DecodeOptions

MIN_STEPS, MAX_STEPS = 1, 64
MAX_SEED = 2**32 - 1  # the model derives per-window torch seeds as seed * 1_000_003 + window

Language = Literal[SUPPORTED_LANGUAGES]  # type: ignore[valid-type]
# Error codes other than the default `invalid_value`, by parameter.
_CODES = {"language": "unsupported_language"}

M = TypeVar("M", bound=BaseModel)


class OptionError(ValueError):
    """A request option is invalid; `message` names the parameter, the limit and the value received."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


class RequestOptions(BaseModel):
    """What every way of asking for a transcription may choose."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    language: Language | None = Field(None, description="ISO-639-1 code; unset: the model names the language")
    prompt: str | None = Field(None, description="context or vocabulary text placed in the prompt")
    denoising_steps: int | None = Field(None, ge=MIN_STEPS, le=MAX_STEPS,
                                        description="denoising step budget (extension); unset: the server's default")
    seed: int | None = Field(None, ge=0, le=MAX_SEED,
                             description="random seed (extension); unset: the server's fixed default")

    @field_validator("language", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def parse_options(model: type[M], raw: Mapping[str, Any]) -> M:
    """Validate raw values (strings from a form, a query or flags) into `model`; blank strings count as absent.

    Raises `OptionError` for the first bad value, in the pattern `denoising_steps must be between 1 and 64, got
    100`.
    """
    values = {}
    for key, value in raw.items():
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        values[key] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error.get("loc") else "request"
        raise OptionError(name, describe_error(model, name, error), _CODES.get(name, "invalid_value")) from None


def describe_error(model: type[BaseModel], name: str, error: Mapping[str, Any]) -> str:
    """One line naming the parameter, what it must be and what was received."""
    field = next((f for key, f in model.model_fields.items() if name in (key, f.alias)), None)
    alias = name
    raw = error.get("input")
    kind = error.get("type", "")
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None) if field else None
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None) if field else None
    if kind in ("greater_than_equal", "less_than_equal") and low is not None and high is not None:
        return f"{alias} must be between {low} and {high}, got {raw}"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        limits = f" between {low} and {high}" if low is not None and high is not None else ""
        return f"{alias} must be an integer{limits}, got {raw!r}"
    if kind in ("float_parsing", "float_type"):
        return f"{alias} must be a number, got {raw!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{alias} must be true or false, got {raw!r}"
    if kind == "literal_error":
        return f"{alias} must be one of {', '.join(_choices(field))}, got {raw!r}"
    return f"{alias} is invalid: {error.get('msg', '')}, got {raw!r}"


def _choices(field: Any) -> list[str]:
    """The values a Literal-typed field (or a list of them) accepts."""
    pending, found = [field.annotation] if field is not None else [], []
    while pending:
        annotation = pending.pop()
        if getattr(annotation, "__origin__", None) is Literal:
            found.extend(str(v) for v in get_args(annotation))
        else:
            pending.extend(get_args(annotation))
    return found


@dataclass(frozen=True)
class RequestResolver:
    """Turns validated options into `DecodeOptions` for one loaded model, every default resolved once."""

    languages: tuple[str, ...]  # what the loaded model transcribes
    default_steps: int
    default_seed: int
    max_prompt_chars: int

    @classmethod
    def for_model(cls, languages: tuple[str, ...], checkpoint_steps: int, steps_setting: int | None,
                  default_seed: int, max_prompt_chars: int) -> "RequestResolver":
        """The resolver of a model whose checkpoint defaults to `checkpoint_steps`; `steps_setting`
        (`ASR_DENOISING_STEPS`), when set, wins over it."""
        return cls(tuple(languages), steps_setting or checkpoint_steps, default_seed, max_prompt_chars)

    def resolve(self, options: RequestOptions) -> DecodeOptions:
        """The request's choices with the defaults filled in; raises `OptionError`."""
        if options.language is not None and options.language not in self.languages:
            raise OptionError("language", f"language must be one of {', '.join(self.languages)}, got "
                              f"{options.language!r}", "unsupported_language")
        if options.prompt is not None and len(options.prompt) > self.max_prompt_chars:
            raise OptionError("prompt", f"prompt must be at most {self.max_prompt_chars} characters, got "
                              f"{len(options.prompt)}")
        return DecodeOptions(
            steps=options.denoising_steps or self.default_steps,
            language=options.language,
            prompt=options.prompt,
            seed=self.default_seed if options.seed is None else options.seed,
        )
