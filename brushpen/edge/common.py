"""What every edge variant shares: backend names, the `edge/` folder layout, the variant's JSON
description, atomic ONNX writes and onnxruntime sessions that fail with a clear message.

A model folder `weights/<family>/<name>/` gets an `edge/` folder:

    edge/model.onnx          fp32 graph, weights inside the file
    edge/model.json          inputs, outputs, opset, sha256 of the .onnx, source weights' sha256
    edge/model.int8.onnx     int8 graph (static QDQ for convnets, blockwise int8 MatMul for the LM)
    edge/model.int8.json
    edge/student/            a distilled student, an ordinary model folder of the same family
    edge/student.onnx/.json  (optional) the student exported too
    edge/report.json         parity and quality figures of every variant, `report.md` beside it

Derived models too big to commit (SmolLM2's fp32 graph is ~540 MB) get the same layout under
`$BRUSHPEN_HOME/edge/<family>/<name>/` instead; `edge_dir` picks the place.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brushpen.config import get_settings
from brushpen.errors import BadParameter, BrokenModel, ModelNotFound
from brushpen.store import atomic_write_bytes, atomic_write_json, sha256_file

BACKENDS = ("torch", "onnx", "onnx-int8", "student")
# backend -> the graph file it runs (the student backend runs edge/student/ under torch).
VARIANT_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
OPSET = 18


@dataclass
class TensorSpec:
    name: str
    dtype: str                 # "float32", "int64", ...
    shape: list[int | str]     # str entries are dynamic axes ("batch", "seq")


@dataclass
class VariantInfo:
    """The JSON written beside each .onnx file."""

    model: str                 # family/name of the source model
    variant: str               # "onnx" or "onnx-int8" (or "student-onnx")
    file: str                  # the .onnx file name, relative to edge/
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str                # of the .onnx bytes
    source_sha256: str         # of the source weights the graph was exported from
    quantization: str | None = None   # e.g. "static QDQ int8, 64 calibration samples"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "VariantInfo":
        data = dict(data)
        data["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
        data["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
        return cls(**data)


def check_backend(backend: str, available: list[str] | tuple[str, ...] = BACKENDS) -> str:
    if backend not in BACKENDS:
        raise BadParameter(f"unknown backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if backend not in available:
        raise BadParameter(f"backend '{backend}' is not available for this model "
                           f"(available: {', '.join(available)}); run `brushpen export` first")
    return backend


def edge_dir(model_dir: Path, big: bool = False) -> Path:
    """Where a model's edge variants live: beside it in the store, or in $BRUSHPEN_HOME if `big`."""
    model_dir = Path(model_dir)
    if big:
        return get_settings().home / "edge" / model_dir.parent.name / model_dir.name
    return model_dir / "edge"


def find_edge_dir(model_dir: Path) -> Path | None:
    """The edge folder that holds exports of this model, if any."""
    for candidate in (edge_dir(model_dir), edge_dir(model_dir, big=True)):
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def available_backends(model_dir: Path) -> list[str]:
    """`torch` always; then each edge variant whose files are present."""
    out = ["torch"]
    edge = find_edge_dir(Path(model_dir))
    if edge is None:
        return out
    for backend, name in VARIANT_FILES.items():
        if (edge / name).exists():
            out.append(backend)
    if (edge / "student" / "config.json").exists():
        out.append("student")
    return out


def write_onnx(model_proto: Any, path: Path) -> str:
    """Serialize an in-memory ONNX model with weights inside the file, atomically; return sha256."""
    buf = io.BytesIO()
    buf.write(model_proto.SerializeToString())
    data = buf.getvalue()
    if len(data) >= 2**31:
        raise BadParameter(f"{path.name} would exceed 2 GB: export it with external data instead")
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def write_info(info: VariantInfo, edge: Path) -> Path:
    return atomic_write_json(Path(edge) / (Path(info.file).name.removesuffix(".onnx") + ".json"), asdict(info))


def read_info(onnx_path: Path) -> VariantInfo:
    onnx_path = Path(onnx_path)
    meta = onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".json")
    if not onnx_path.exists():
        raise ModelNotFound(f"no exported graph at {onnx_path}: run `brushpen export` first")
    if not meta.exists():
        raise BrokenModel(f"{onnx_path.name} has no {meta.name} beside it: re-run `brushpen export`")
    try:
        return VariantInfo.from_json(json.loads(meta.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as e:
        raise BrokenModel(f"{meta} is not a valid edge description: {e}") from e


def load_session(onnx_path: Path, threads: int | None = None, check_hash: bool = True) -> tuple[Any, VariantInfo]:
    """An onnxruntime session for an exported graph, checked against its JSON.

    A truncated, corrupt or swapped .onnx file, or one whose inputs no longer match its
    description, raises `BrokenModel` with the file name, never an onnxruntime traceback.
    """
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    info = read_info(onnx_path)
    if check_hash and sha256_file(onnx_path) != info.sha256:
        raise BrokenModel(f"{onnx_path.name} does not match its {onnx_path.stem}.json (sha256 differs): "
                          "the file is corrupt or from another export; re-run `brushpen export`")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or get_settings().threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise BrokenModel(f"onnxruntime cannot load {onnx_path.name}: {str(e).splitlines()[0][:300]}") from e
    got = [i.name for i in sess.get_inputs()]
    want = [t.name for t in info.inputs]
    if got != want:
        raise BrokenModel(f"{onnx_path.name} takes inputs {got}, but its description says {want}: "
                          "re-run `brushpen export`")
    return sess, info


def write_report(edge: Path, report: dict, merge: bool = False) -> None:
    """Merge `report` (variant -> figures) into edge/report.json and re-render edge/report.md.

    A variant's row is replaced whole, or with `merge` its figures are added to the row's others
    (a slow figure, e.g. FID, measured apart from the export)."""
    edge = Path(edge)
    path = edge / "report.json"
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for variant, figures in report.items():
        current[variant] = {**current.get(variant, {}), **figures} if merge else figures
    atomic_write_json(path, current)
    keys = sorted({k for v in current.values() for k in v})
    lines = ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for variant, figures in current.items():
        cells = [_fmt(figures.get(k, "")) for k in keys]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    atomic_write_bytes(edge / "report.md", ("\n".join(lines) + "\n").encode())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
