"""The model families: one record each, read by the store, export, the job worker, the studio, the
API catalog and the CLI.

A family is a kind of model with its own package (`brushpen/gan/`, `brushpen/text/`,
`brushpen/safety/`) and its own folder in the weight store (`weights/<family>/<name>/`). What the
layers above need to know about it lives here and nowhere else: the figures `models list` shows,
the module that exports it to ONNX, the fine-tuning request and function, the training file it
takes, the length knob the studio's Fine-tune tab sets, and its shipped default model.

Modules are named by their import path and loaded on first use, so this core module imports no
model code (and no torch). Adding a family is one record here plus the family's package; see
docs/ARCHITECTURE.md, "Adding a model family".

The fine-tuning contract every family's trainer keeps:
- a request dataclass (`FinetuneRequest`): `base` (a model name), `out` (the adapter's name),
  `resume` (continue from the job's checkpoint rather than start over) and a `validate()` that
  raises `BadParameter` with a message;
- `finetune(req, progress)`, which trains, calls `progress(FinetuneEvent)` after every step (a
  callback may raise to stop the run), and returns a `FinetuneResult`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from brushpen.errors import BadParameter


class FinetuneRequest(Protocol):
    base: str
    out: str
    resume: bool

    def validate(self) -> None: ...


class Finetune(Protocol):
    def __call__(self, req: Any, progress: Callable[[Any], None] | None = None) -> Any: ...


@dataclass(frozen=True)
class Family:
    name: str                            # the store folder: weights/<name>/
    label: str                           # what the studio calls it: "GAN", "Detector"
    key_metrics: tuple[str, ...] = ()    # the figures `models list` shows first, from metrics.json
    default_model: str | None = None     # the shipped model a request without `model` gets
    makes_images: bool = False           # /v1/images and the Images tab take its models
    exporter: str | None = None          # module with export(path, int8=, student=, progress=)
    trainer: str | None = None           # module with finetune(req, progress)
    request: str | None = None           # the trainer module's request class (a FinetuneRequest)
    data_kind: str | None = None         # the fine-tuning upload it takes: ".zip" or ".jsonl"
    data_help: str = ""                  # that upload in words
    length_field: str | None = None      # the request field for "how long to train"
    length_is_float: bool = False        # GAN kimg is fractional; steps are whole
    cli_name: str | None = None          # `brushpen finetune NAME`; None = the family's name

    @property
    def exports(self) -> bool:
        return self.exporter is not None

    @property
    def finetunes(self) -> bool:
        return self.trainer is not None

    def export_module(self) -> Any:
        if self.exporter is None:
            raise BadParameter(f"{self.name} models do not export: only {', '.join(exportable())} do")
        return importlib.import_module(self.exporter)

    def request_class(self) -> type:
        if self.trainer is None or self.request is None:
            raise BadParameter(f"{self.name} models are not fine-tuned: only {', '.join(finetunable())} are")
        return getattr(importlib.import_module(self.trainer), self.request)

    def finetune(self) -> Finetune:
        self.request_class()   # the same message for a family without a trainer
        return importlib.import_module(self.trainer).finetune


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gan", "GAN", key_metrics=("fid", "kimg"), default_model="emoji64",
           makes_images=True, exporter="brushpen.edge.gan", trainer="brushpen.gan.finetune",
           request="GanFinetuneRequest", data_kind=".zip", data_help="zip of images",
           length_field="kimg", length_is_float=True),
    Family("text", "Copywriter", key_metrics=("val_loss", "perplexity"),
           default_model="smollm2-135m", exporter="brushpen.edge.lm", trainer="brushpen.text.lora",
           request="TextFinetuneRequest", data_kind=".jsonl", data_help="JSONL of brief/copy",
           length_field="max_steps"),
    Family("safety", "Detector", key_metrics=("auc",), default_model="detector",
           exporter="brushpen.edge.detector", trainer="brushpen.safety.lora_train",
           request="DetectorFinetuneRequest", data_kind=".zip", data_help="zip with fake/ and real/",
           length_field="steps", cli_name="detector"),
    # links to text-to-image pipeline folders a user already has on disk (`brushpen models add PATH`)
    Family("diffusers", "Diffusers pipeline", makes_images=True),
)}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise BadParameter(f"unknown family '{name}': expected one of {', '.join(FAMILIES)}") from None


def exportable() -> list[str]:
    return [f.name for f in FAMILIES.values() if f.exports]


def finetunable() -> list[str]:
    return [f.name for f in FAMILIES.values() if f.finetunes]


def image_families() -> list[str]:
    return [f.name for f in FAMILIES.values() if f.makes_images]


def default_model(name: str) -> str:
    model = family(name).default_model
    if model is None:
        raise BadParameter(f"{name} has no default model")
    return model
