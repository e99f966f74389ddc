"""`POST /v1/audio/transcriptions` (OpenAI-compatible upload, plus `stream`, `denoising_steps`, `seed`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.auth import require_api_key
from app.api.deps import EngineDep, RuntimeDep
from app.api.schemas import check_model, parse_transcription_form
from app.api.sse import stream_transcription
from app.api.transcription import (
    check_capacity, decode_options, note_result, prepare_audio, render_response, unless_disconnected,
)

router = APIRouter(tags=["audio"])

# The form is parsed by hand (after authentication, under the body limit), so describe it for /docs here.
_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "model": {"type": "string"},
                "language": {"type": "string", "enum": ["en", "de", "fr", "es", "hi", "zh"]},
                "prompt": {"type": "string"},
                "response_format": {"type": "string", "enum": ["json", "text", "verbose_json", "srt", "vtt"]},
                "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment"]}},
                "stream": {"type": "boolean"},
                "denoising_steps": {"type": "integer", "minimum": 1, "maximum": 64},
                "seed": {"type": "integer", "minimum": 0},
                "temperature": {"type": "number", "description": "accepted and ignored"},
            },
        }}},
    }
}


@router.post(
    "/v1/audio/transcriptions",
    dependencies=[Depends(require_api_key)],
    openapi_extra=_FORM_DOC,
    response_class=Response,
    summary="Transcribe an audio file",
)
async def create_transcription(request: Request, runtime: RuntimeDep, engine: EngineDep) -> Response:
    """Decode the upload, transcribe it through the engine and answer in the requested format (or as SSE)."""
    settings = runtime.settings
    check_capacity(engine, settings, runtime.metrics)
    async with request.form(max_files=1, max_fields=32) as form:
        params = parse_transcription_form(form, settings.max_prompt_chars)
        check_model(params.model, engine.model_name)
        data = await params.file.read()
    audio = await prepare_audio(data, settings, runtime.decode_pool, engine, runtime.vad, runtime.metrics)
    request.state.audio_seconds = audio.duration
    options = decode_options(params, settings, engine)
    if params.stream:
        return await stream_transcription(request, engine, audio, options, settings.request_timeout_s)
    result = await unless_disconnected(engine.transcribe(audio, options, settings.request_timeout_s), request)
    note_result(request, result)
    return render_response(result, params.response_format, engine.model_name)
