"""`POST /v1/audio/transcriptions` (OpenAI-compatible upload, plus `stream_drafts`, `denoising_steps`, `seed`) and
`POST /v1/audio/translations` (refused in OpenAI's error shape: the model transcribes only)."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.auth import require_api_key
from app.api.deps import EngineDep, RuntimeDep
from app.api.errors import ApiError
from app.api.responses import transcription_responses
from app.api.schemas import check_model, option_error, parse_transcription_form, transcription_form_openapi
from app.api.sse import stream_transcription
from app.api.transcription import (
    admit, note_result, prepare_audio, render_response, unless_disconnected,
)
from app.request_options import OptionError

router = APIRouter(tags=["audio"])


@router.post(
    "/v1/audio/transcriptions",
    dependencies=[Depends(require_api_key)],
    openapi_extra=transcription_form_openapi(),
    response_class=Response,
    responses=transcription_responses(),
    summary="Transcribe an audio file",
)
async def create_transcription(request: Request, runtime: RuntimeDep, engine: EngineDep) -> Response:
    """Decode the upload, transcribe it through the engine and answer in the requested format (or as SSE)."""
    settings = runtime.settings
    with admit(runtime, engine) as reservation:
        async with request.form(max_files=1, max_fields=32) as form:
            params, upload = parse_transcription_form(form)
            check_model(params.model, engine.model_name, settings.server.model_aliases)
            try:
                options = replace(runtime.resolver.resolve(params), word_timestamps=params.extras.words)
            except OptionError as exc:
                raise option_error(exc) from None
            data = await upload.read()
        audio = await prepare_audio(data, settings, runtime.decode_pool, engine, runtime.vad, runtime.metrics)
        request.state.audio_seconds = audio.duration
        # The deadline runs from arrival: reading, decoding and VAD have spent part of it.
        timeout_s = reservation.remaining(settings.engine.request_timeout_s, runtime.clock())
        reservation.release()  # the engine's queue counts the request from here
    if params.stream:
        return await stream_transcription(request, engine, audio, options, timeout_s, params.extras,
                                          drafts=params.stream_drafts)
    result = await unless_disconnected(engine.transcribe(audio, options, timeout_s), request)
    note_result(request, result)
    return render_response(result, params.response_format, engine.model_name, params.extras)


@router.post(
    "/v1/audio/translations",
    dependencies=[Depends(require_api_key)],
    response_class=Response,
    summary="Translate an audio file (not supported: the model transcribes only)",
    responses={400: {"description": "OpenAI's error shape, code `translation_not_supported`"}},
)
async def create_translation(engine: EngineDep) -> Response:
    """Always 400: the served model writes the transcript in the spoken language and cannot translate."""
    raise ApiError(
        400, f"The model {engine.model_name!r} transcribes only and cannot translate; use "
        "POST /v1/audio/transcriptions for a transcript in the spoken language.",
        code="translation_not_supported", param="model",
    )
