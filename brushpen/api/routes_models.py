"""`GET /v1/models`: the image models in the store and the copy models (the SmolLM2 base and text/NAME)."""

from __future__ import annotations

from fastapi import APIRouter

from brushpen.api import service
from brushpen.api.limits import run_blocking
from brushpen.api.responses import ModelList, ModelObject

router = APIRouter(tags=["models"])


@router.get("/models", summary="List the image and copy models", response_model=ModelList,
            response_model_exclude_unset=True)
async def list_models() -> dict:
    return await run_blocking(service.list_models)


@router.get("/models/{model:path}", summary="One model", response_model=ModelObject,
            response_model_exclude_unset=True)
async def get_model(model: str) -> dict:
    return await run_blocking(service.get_model, model)
