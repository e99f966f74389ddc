"""`GET /v1/models`: the one served model, in OpenAI's list shape."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.auth import require_api_key
from app.api.deps import EngineDep, RuntimeDep
from app.api.responses import error_responses
from app.api.schemas import ModelCard, ModelList

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401, 503),
            summary="List the served model")
async def list_models(runtime: RuntimeDep, engine: EngineDep) -> ModelList:
    """The served model (OpenAI shape), then its aliases (`ASR_MODEL_ALIASES`); `created` is when this server
    loaded it."""
    names = [engine.model_name] + [a for a in runtime.settings.server.model_aliases if a != engine.model_name]
    return ModelList(data=[ModelCard(id=name, created=runtime.loaded_at) for name in names])
