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
    """The served model (OpenAI shape); `created` is when this server loaded it."""
    return ModelList(data=[ModelCard(id=engine.model_name, created=runtime.loaded_at)])
