"""Edge variants of a StyleGAN generator: the fp32 ONNX graph, its static int8 copy, and serving them.

`export(model_dir, int8, student, progress)` is `brushpen export`'s GAN exporter (see edge/export.py):

- `edge/model.onnx`: the generator traced with the export-friendly modulated conv (`fused=False`:
  modulate the input, shared-weight conv, demodulate the output), through the TorchScript-based
  exporter (`dynamo=False`), which writes the weights inside the file and gives the same bytes for
  the same weights. Inputs: `z` [batch, z_dim] float32, `truncation_psi` [1 or batch] float32 and,
  for a class-conditional model, `labels` [batch] int64. Output: `image` [batch, 3, R, R] in [-1, 1].
  Per-pixel noise is baked in as noise_mode "none" (the studio's default): the graph takes no noise,
  so torch's "const"/"random" modes and style mixing are torch-only.
- `edge/model.int8.onnx`: static QDQ int8 (onnxruntime.quantization.quantize_static) calibrated on
  the generator's own input distribution: z ~ N(0, I), classes uniform, psi 1.
- `--student`: a half-width generator distilled from this one (`edge.gan_distill`), saved under
  `edge/student/` and exported to `edge/student.onnx` the same way.

Parity (max/mean abs error vs torch on fixed seeds) goes into `edge/report.json`; FID of the
variants is measured separately by `python -m brushpen.edge.gan_quality` (it takes minutes).
`OnnxGenerator` runs an exported graph for the image service, one cached session per (file, mtime).
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from brushpen.edge import gan_distill
from brushpen.edge.common import (OPSET, TensorSpec, VariantInfo, edge_dir, load_session, sha256_file,
                                  write_info, write_onnx, write_report)
from brushpen.errors import BrokenModel
from brushpen.gan.networks import StyleGANGenerator

Progress = Callable[[str, float], None]
PARITY_SEEDS = 16          # images compared against torch, seeds 0..15
CALIB_SAMPLES = 128        # z's drawn for int8 calibration
CALIB_BATCH = 16
CALIB_SEED = 2024          # apart from the parity seeds, so parity is measured on unseen inputs
# Left in fp32 by the int8 copy (node-name patterns): the demodulation MatMuls (an int8 s^2 rounds
# small styles to 0 and 1/sqrt blows them up) and the toRGB convs, which write the image itself.
# Both are well under 1% of the FLOPs. Everything else (mapping, affines, 3x3 convs) is int8.
KEEP_FP32 = ("/demod/", "/torgb/conv/Conv")


def load_generator(model_dir: Path) -> StyleGANGenerator:
    try:
        return StyleGANGenerator.from_pretrained(str(model_dir)).eval()
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise BrokenModel(f"cannot load the generator in {model_dir}: {str(e).splitlines()[0][:300]}") from e


def weights_file(model_dir: Path) -> Path:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise BrokenModel(f"{model_dir} holds no .safetensors weights")
    return files[0]


class Demodulate(nn.Module):
    """1 / sqrt(s^2 @ sum_k W^2): the demodulation factors, from a precomputed [in, out] matrix."""

    def __init__(self, wsq_t: torch.Tensor):
        super().__init__()
        self.register_buffer("wsq_t", wsq_t)

    def forward(self, styles: torch.Tensor) -> torch.Tensor:
        return (styles.square() @ self.wsq_t + 1e-8).rsqrt()


class ExportModConv(nn.Module):
    """`ModulatedConv2d`'s non-fused path with the weight pre-scaled and sum_k W^2 precomputed.

    Traced as is, the exporter folds `weight * weight_gain` and the squared weight into two full
    copies of every conv weight (a 16.8 MB file for 10 MB of weights). Precomputing sum_k W^2 as an
    [in, out] matrix keeps one copy plus 1/9 of it.
    """

    def __init__(self, conv: nn.Module):
        super().__init__()
        weight = (conv.weight * conv.weight_gain).detach()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.affine = conv.affine
        self.padding = conv.padding
        self.demod = Demodulate(weight.square().sum(dim=[2, 3]).t().contiguous()) if conv.demodulate else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        styles = self.affine(w)
        out = F.conv2d(x * styles[:, :, None, None], self.weight, padding=self.padding)
        return out * self.demod(styles)[:, :, None, None] if self.demod is not None else out


class ExportWrapper(nn.Module):
    """The traced function: z, psi[, labels] -> image, truncation as a tensor input, noise off."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = copy.deepcopy(G)
        for block in self.G.blocks:
            for layer in [*block.layers, block.torgb]:
                layer.conv = ExportModConv(layer.conv)

    def forward(self, z: torch.Tensor, truncation_psi: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        G = self.G
        w = G.mapping(z, labels, truncation_psi=1.0)
        psi = truncation_psi.reshape(-1, 1)          # [1] or [batch] -> broadcast over w_dim
        w = G.mapping.w_avg + psi * (w - G.mapping.w_avg)   # = w_avg.lerp(w, psi), as in MappingNetwork
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
        return G.synthesis(ws, noise_mode="none", fused=False)


def draw_inputs(seed: int, z_dim: int, num_classes: int, label: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """z [1, z_dim] and the class [1] (or None) of a seed, drawn exactly as `StyleGANPipeline` draws
    them (z first, then a random class unless one is given), so every backend gets the same inputs."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(1, z_dim, generator=gen)
    if not num_classes:
        return z, None
    if label is not None:
        return z, torch.full((1,), int(label), dtype=torch.long)
    return z, torch.randint(0, num_classes, (1,), generator=gen)


def example_inputs(G: nn.Module, seeds: range | list[int], psi: float = 1.0) -> dict[str, np.ndarray]:
    """ONNX feeds for a batch of seeds, each drawn as the image service draws it (`draw_inputs`)."""
    drawn = [draw_inputs(s, G.z_dim, G.num_classes) for s in seeds]
    feeds = {"z": torch.cat([z for z, _ in drawn]).numpy(), "truncation_psi": np.full([len(drawn)], psi, np.float32)}
    if G.num_classes:
        feeds["labels"] = torch.cat([lab for _, lab in drawn]).numpy()
    return feeds


def torch_images(G: nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The torch reference for the same feeds (noise off, non-fused conv)."""
    labels = torch.from_numpy(feeds["labels"]) if "labels" in feeds else None
    with torch.no_grad():
        out = G(torch.from_numpy(feeds["z"]), labels, truncation_psi=float(feeds["truncation_psi"][0]),
                noise_mode="none", fused=False)
    return out.numpy()


def specs(G: nn.Module) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs = [TensorSpec("z", "float32", ["batch", G.z_dim]), TensorSpec("truncation_psi", "float32", ["psi"])]
    if G.num_classes:
        inputs.append(TensorSpec("labels", "int64", ["batch"]))
    res = G.config.resolution
    return inputs, [TensorSpec("image", "float32", ["batch", 3, res, res])]


def onnx_bytes(G: nn.Module) -> bytes:
    """The fp32 graph. The TorchScript exporter writes weights inside the file and is deterministic
    (the dynamo exporter puts weights in a `.onnx.data` file by default)."""
    inputs, _ = specs(G)
    feeds = example_inputs(G, range(2))
    args = tuple(torch.from_numpy(feeds[t.name]) for t in inputs)
    axes = {"z": {0: "batch"}, "truncation_psi": {0: "psi"}, "labels": {0: "batch"}, "image": {0: "batch"}}
    buf = io.BytesIO()
    torch.onnx.export(ExportWrapper(G), args, buf, dynamo=False, opset_version=OPSET,
                      input_names=[t.name for t in inputs], output_names=["image"],
                      dynamic_axes={k: v for k, v in axes.items() if k in [t.name for t in inputs] + ["image"]},
                      do_constant_folding=True)
    return buf.getvalue()


def write_variant(G: nn.Module, data: bytes, edge: Path, file: str, variant: str, model: str,
                  source_sha: str, quantization: str | None = None, extra: dict | None = None) -> VariantInfo:
    import onnx

    sha = write_onnx(onnx.load_from_string(data), edge / file)
    inputs, outputs = specs(G)
    info = VariantInfo(model=model, variant=variant, file=file, opset=OPSET, inputs=inputs, outputs=outputs,
                       sha256=sha, source_sha256=source_sha, quantization=quantization,
                       extra={"noise_mode": "none", "truncation_psi": "input: [1] or [batch]", **(extra or {})})
    write_info(info, edge)
    return info


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over the generator's own inputs."""

    def __init__(self, G: nn.Module, samples: int = CALIB_SAMPLES, batch: int = CALIB_BATCH, seed: int = CALIB_SEED):
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [example_inputs(G, range(seed + i, seed + min(i + batch, samples))) for i in range(0, samples, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_bytes(G: nn.Module, edge: Path, samples: int = CALIB_SAMPLES) -> tuple[bytes, list[str]]:
    """Static QDQ int8 of the fp32 graph: per-channel int8 weights, uint8 activations, MinMax calibration.

    Returns the bytes and the names of the nodes left in fp32 (`KEEP_FP32`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(dir=edge) as tmp:
        source, out = Path(tmp) / "source.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(onnx_bytes(G))
        keep = [n.name for n in onnx.load(str(source)).graph.node if any(k in n.name for k in KEEP_FP32)]
        quantize_static(str(source), str(out), CalibrationReader(G, samples),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibMovingAverage": True})
        model = onnx.load(str(out))
    fp16_constants(model, "/demod/MatMul")
    return model.SerializeToString(), keep


def fp16_constants(model, node_pattern: str) -> int:
    """Store the fp32 weight inputs of matching nodes as fp16 behind a Cast; returns how many.

    The demodulation matrices stay out of int8 (see `KEEP_FP32`) but are 1/9 of the conv weights:
    in fp32 they would hold the int8 file above 30% of the fp32 one. onnxruntime folds the Cast
    once, when the session loads. (Done on the graph because the exporter folds any Cast itself.)
    """
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    casts = []
    for node in model.graph.node:
        if node_pattern not in node.name:
            continue
        for name in node.input:
            if name in inits and inits[name].data_type == TensorProto.FLOAT:
                half = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16), name + "_fp16")
                model.graph.initializer.remove(inits.pop(name))
                model.graph.initializer.append(half)
                casts.append(helper.make_node("Cast", [half.name], [name], name=name + "_cast", to=TensorProto.FLOAT))
    for i, cast in enumerate(casts):   # no inputs but initializers: first in topological order
        model.graph.node.insert(i, cast)
    return len(casts)


def parity(session_path: Path, G: nn.Module, seeds: int = PARITY_SEEDS, psi: float = 1.0) -> dict[str, float]:
    """Max and mean abs error of an exported graph vs torch on seeds 0..seeds-1 (one batch)."""
    sess, _ = load_session(session_path, threads=1)
    feeds = example_inputs(G, range(seeds), psi)
    got = sess.run(None, feeds)[0]
    ref = torch_images(G, feeds)
    err = np.abs(got - ref)
    return {"max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()), "parity_images": seeds}


def export(model_dir: Path, int8: bool = False, student: bool = False, progress: Progress | None = None,
           student_minutes: float = 15.0, student_steps: int | None = None) -> dict:
    """Write model.onnx (+ model.int8.onnx, + a distilled student) into `model_dir/edge/`; return the report."""
    progress = progress or (lambda stage, frac: None)
    model_dir = Path(model_dir)
    G = load_generator(model_dir)
    edge = edge_dir(model_dir)
    edge.mkdir(parents=True, exist_ok=True)
    ref = f"gan/{model_dir.name}"
    source_sha = sha256_file(weights_file(model_dir))
    report: dict[str, dict] = {}

    progress("export fp32 onnx", 0.0)
    write_variant(G, onnx_bytes(G), edge, "model.onnx", "onnx", ref, source_sha)
    report["onnx"] = {**parity(edge / "model.onnx", G), "size_bytes": (edge / "model.onnx").stat().st_size}
    report["onnx"]["max_abs_err_psi0.7"] = parity(edge / "model.onnx", G, psi=0.7)["max_abs_err"]
    if int8:
        progress("calibrate + quantize int8", 0.2)
        data, kept = quantize_bytes(G, edge)
        write_variant(G, data, edge, "model.int8.onnx", "onnx-int8", ref, source_sha,
                      quantization=f"static QDQ int8 (per-channel int8 weights, uint8 activations, MinMax "
                                   f"moving average), "
                                   f"{CALIB_SAMPLES} calibration z's; fp32: demodulation (fp16-stored) and toRGB convs",
                      extra={"fp32_nodes": f"{len(kept)} nodes matching {', '.join(KEEP_FP32)}"})
        report["onnx-int8"] = {**parity(edge / "model.int8.onnx", G),
                               "size_bytes": (edge / "model.int8.onnx").stat().st_size,
                               "size_vs_fp32": (edge / "model.int8.onnx").stat().st_size
                               / (edge / "model.onnx").stat().st_size}
    if student:
        progress("distil student", 0.4)
        gan_distill.distill(load_generator(model_dir), model_dir, edge / "student", example_inputs,
                            minutes=student_minutes, steps=student_steps,
                            progress=lambda f: progress("distil student", 0.4 + 0.5 * f))
        report.update(export_student(model_dir, write=False))
    write_report(edge, report)
    progress("done", 1.0)
    return report


def export_student(model_dir: Path, write: bool = True) -> dict:
    """student.onnx from edge/student/, and the student's report row (written unless `write` is False)."""
    model_dir = Path(model_dir)
    edge = edge_dir(model_dir)
    G, S = load_generator(model_dir), load_generator(edge / "student")
    write_variant(S, onnx_bytes(S), edge, "student.onnx", "student-onnx", f"gan/{model_dir.name}",
                  sha256_file(weights_file(edge / "student")))
    trained = json.loads((edge / "student" / "metrics.json").read_text(encoding="utf-8"))
    row = {"student": {**{k: trained[k] for k in ("steps", "train_seconds", "l1_vs_teacher") if k in trained},
                       **gan_distill.student_figures(G, S, example_inputs(G, [0])), **parity(edge / "student.onnx", S),
                       "size_bytes": (edge / "student.onnx").stat().st_size}}
    if write:
        write_report(edge, row)
    return row


# ---- serving ----------------------------------------------------------------------------------

_sessions: dict[tuple[str, int, int], tuple[object, VariantInfo]] = {}
_sessions_guard = threading.Lock()


def cached_session(path: Path, threads: int | None = None):
    """One onnxruntime session per (file, mtime, threads): a re-export is picked up, a repeat is free."""
    path = Path(path)
    if not path.exists():
        raise BrokenModel(f"{path.name} is missing from {path.parent}: re-run `brushpen export`")
    key = (str(path.resolve()), path.stat().st_mtime_ns, threads or 0)
    with _sessions_guard:
        if key not in _sessions:
            for old in [k for k in _sessions if k[0] == key[0]]:
                del _sessions[old]
            _sessions[key] = load_session(path, threads)
        return _sessions[key]


class OnnxGenerator:
    """An exported generator under onnxruntime: the same z and labels in, an NCHW image tensor out."""

    def __init__(self, path: Path, threads: int | None = None):
        self.session, self.info = cached_session(path, threads)
        self.names = [t.name for t in self.info.inputs]

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None, truncation_psi: float) -> torch.Tensor:
        feeds = {"z": z.numpy().astype(np.float32),
                 "truncation_psi": np.full([1], truncation_psi, np.float32)}
        if "labels" in self.names:
            if labels is None:
                raise BrokenModel(f"{self.info.file} is class-conditional but the model gave no labels")
            feeds["labels"] = labels.numpy().astype(np.int64)
        try:
            out = self.session.run(None, feeds)[0]
        except Exception as e:  # onnxruntime's own error types: a graph that does not fit the model
            raise BrokenModel(f"{self.info.file} failed to run: {str(e).splitlines()[0][:300]}") from e
        return torch.from_numpy(out)
