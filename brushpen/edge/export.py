"""`export_model`: the one service behind `brushpen export`, the API and the studio's Export tab.

It finds the model, picks the exporter its family's record names (`brushpen.families`: `edge.gan`,
`edge.lm`, `edge.detector`) and returns the parity/quality report those write into the model's `edge/report.json`. Each family
module exposes `export(model_dir, int8, student, progress) -> dict` with the same meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from brushpen.errors import BadParameter
from brushpen.families import FAMILIES, exportable
from brushpen.store import resolve_model

Progress = Callable[[str, float], None]   # (stage description, fraction done 0..1)


@dataclass
class ExportRequest:
    model: str
    int8: bool = False
    student: bool = False


def model_family(model: str) -> tuple[Path, str]:
    """(folder, family) of a model name, including the text base model that lives outside the store."""
    from brushpen.text.base import BASE_ALIASES, resolve_text_model
    from brushpen.text.install import INSTALLABLE

    if str(model) in BASE_ALIASES or str(model) in INSTALLABLE:
        return resolve_text_model(model), "text"
    path = resolve_model(model)
    family = path.parent.name if path.parent.name in FAMILIES else None
    if family is None:  # a folder outside the store: tell the kinds apart by their files
        if (path / "tokenizer_config.json").exists():
            family = "text"
        elif (path / "model.safetensors").exists() and (path / "train.json").exists():
            family = "safety"
        else:
            family = "gan"
    return path, family


def export_model(req: ExportRequest, progress: Progress | None = None) -> dict:
    path, family = model_family(req.model)
    if not FAMILIES[family].exports:
        raise BadParameter(f"'{req.model}' is a {family} model: only {', '.join(exportable())} models export")
    module = FAMILIES[family].export_module()
    return module.export(path, int8=req.int8, student=req.student, progress=progress)
