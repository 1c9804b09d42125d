"""`from_values`: a service's request dataclass built from named values, whatever face they came from.

The API hands over a pydantic body's `model_dump()`, the CLI argparse's `vars(args)`, the studio a
dict of its controls. Each holds more than the request takes (`size`, `out`, `func`, ...); only the
dataclass's own fields are kept. So a new request field touches the dataclass and the place that
exposes it, not a hand-written copy of every field in each face.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_values(cls: type[T], values: Mapping[str, Any], skip_none: bool = False) -> T:
    """`cls(**values)` restricted to `cls`'s init fields; `skip_none` leaves a None to the field's default."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in values.items() if k in names and not (skip_none and v is None)})
