"""`GET /v1/models`: the image models in the store and the copy models (the SmolLM2 base and text/NAME)."""

from __future__ import annotations

from fastapi import APIRouter

from brushpen.api import service
from brushpen.api.limits import run_blocking
from brushpen.errors import ModelNotFound

router = APIRouter(tags=["models"])


@router.get("/models", summary="List the image and copy models")
async def list_models() -> dict:
    cat = await run_blocking(service.catalog, True)
    return {"object": "list", "data": list(cat.images.values()) + list(cat.copy.values())}


@router.get("/models/{model:path}", summary="One model")
async def get_model(model: str) -> dict:
    cat = await run_blocking(service.catalog)
    name = cat.aliases.get(model, model)
    found = cat.images.get(name) or cat.copy.get(name)
    if found is None:
        raise ModelNotFound(f"unknown model '{model}': available: {', '.join([*cat.images, *cat.copy])}")
    return found
