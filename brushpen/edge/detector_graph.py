"""The detector's ONNX graph: what goes into it, how it is quantized, and how onnxruntime runs it.

**The graph** (`ScoringGraph`, exported by `onnx_bytes`) is the whole scoring path of one batch of
tiles, so a caller only cuts the image into 64x64 tiles (`brushpen.safety.detector.tile_image`):

    input   patches            uint8   [batch, 64, 64, 3]   RGB tiles, NHWC, as numpy/PIL hold them
    output  logit              float32 [batch]              the tile's raw "AI-made" logit
            probability        float32 [batch]              sigmoid(logit / T), T the model's temperature
            region_logit       float32 [batch, 1, 16, 16]   the localisation head's raw logits
            region_probability float32 [batch, 1, 16, 16]   sigmoid(region_logit / T): the heatmap

Inside: cast to float, NHWC -> NCHW, x / 127.5 - 1, the NPR residual (two nearest Resizes and a
Sub), the conv stack with BatchNorm folded into each conv (`fuse_conv_bn_eval`, eval statistics),
both heads and the temperature. An image's score is `sigmoid(mean(tile logits) / T)`, as
`score_image` computes it; that is why `logit` is an output next to the per-tile `probability`.

**int8** (`quantize_bytes`): onnxruntime's static QDQ quantizer on the fp32 graph, per-channel
int8 conv weights, uint8 activations, MinMax ranges from training patches (`CalibrationReader`).
The two 1x1 head convs and the temperature/sigmoid stay fp32: they hold 130 weights, and an int8
step on the logit itself would be a visible step in every score (ties in the ranking).
Both files are written with short inner names (`compact`): names were 13% of the int8 file.

**Serving** (`OnnxDetector`): quacks like `brushpen.safety.detector.Detector` for `score_image`
(`config`, `calibration`, `__call__(x) -> (logits, region logits)`), so torch and onnxruntime go
through the very same tiling, mean and heatmap code, and differ only in the network.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from brushpen.edge.common import OPSET, TensorSpec, load_session
from brushpen.errors import BrokenModel
from brushpen.safety.detector import Calibration, Detector, DetectorConfig

INPUT = "patches"
OUTPUTS = ("logit", "probability", "region_logit", "region_probability")
HEAD_NODES = ("fc", "loc")      # the 1x1 head convs, kept fp32 in the int8 graph


class ScoringGraph(nn.Module):
    """uint8 NHWC tiles -> (logit, probability, region_logit, region_probability), BN folded."""

    def __init__(self, det: Detector):
        super().__init__()
        self.det = fold_batchnorm(det)
        self.temperature = float(det.calibration.temperature)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = patches.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0   # = detector.to_tensor
        logit, where = self.det(x)
        return logit, torch.sigmoid(logit / self.temperature), where, torch.sigmoid(where / self.temperature)


def fold_batchnorm(det: Detector) -> Detector:
    """A copy of the detector in eval mode with every BatchNorm folded into the conv before it."""
    det = copy.deepcopy(det).eval()
    for block in det.body:   # ConvBNReLU = Sequential(conv, bn, relu)
        block[0] = fuse_conv_bn_eval(block[0], block[1])
        block[1] = nn.Identity()
    return det


def specs(config: DetectorConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    t = config.tile
    g = t // int(np.prod(config.strides))
    return ([TensorSpec(INPUT, "uint8", ["batch", t, t, 3])],
            [TensorSpec("logit", "float32", ["batch"]), TensorSpec("probability", "float32", ["batch"]),
             TensorSpec("region_logit", "float32", ["batch", 1, g, g]),
             TensorSpec("region_probability", "float32", ["batch", 1, g, g])])


def onnx_bytes(det: Detector) -> bytes:
    """The fp32 graph, weights inside. The TorchScript exporter (`dynamo=False`, as edge.gan uses)
    gives the same bytes for the same weights, exports in 0.2 s against 8 s for dynamo, and keeps
    the pooling a GlobalAveragePool; both exporters were measured equal in onnxruntime speed."""
    example = torch.zeros(2, det.config.tile, det.config.tile, 3, dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # the TorchScript exporter's deprecation notice
        torch.onnx.export(ScoringGraph(det).eval(), (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_axes={n: {0: "batch"} for n in (INPUT, *OUTPUTS)}, do_constant_folding=True)
    return buf.getvalue()


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over fixed batches of uint8 training tiles."""

    def __init__(self, patches: np.ndarray, batch: int = 32):
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{INPUT: patches[i:i + batch]} for i in range(0, len(patches), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_bytes(fp32: bytes, calibration: np.ndarray) -> tuple[bytes, list[str]]:
    """Static QDQ int8 of the fp32 graph (as `onnx_bytes` wrote it, node names intact); returns the
    bytes and the nodes left in fp32 (the heads)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    keep = [n.name for n in onnx.load_from_string(fp32).graph.node if n.name in {f"/det/{h}/Conv" for h in HEAD_NODES}]
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(str(src), str(out), CalibrationReader(calibration),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                        calibrate_method=CalibrationMethod.MinMax)
        return out.read_bytes(), keep


def compact(model):
    """Short names for every node and inner tensor, no value_info: the same graph, fewer bytes.

    Why by hand: the int8 graph of a 73k-parameter net is 73 kB of weights plus ~13 kB of names
    like `/det/body/body.0/body.0.0/Conv_output_0_QuantizeLinear_Output`, which alone put it over
    30% of the fp32 file. onnx has no renaming pass; the graph's inputs and outputs keep their names.
    """
    g = model.graph
    keep = {v.name for v in [*g.input, *g.output]}
    names: dict[str, str] = {}
    rename = lambda n: n if (not n or n in keep) else names.setdefault(n, f"t{len(names)}")
    for init in g.initializer:
        init.name = rename(init.name)
    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    del g.value_info[:]
    return model


# ---- serving ----------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int, threads: int | None):
    # Keyed on mtime too, so a re-export is picked up without a restart (as edge.lm_runtime does).
    return load_session(Path(path), threads)


class OnnxDetector:
    """An exported detector graph under onnxruntime, usable wherever `score_image` takes a Detector."""

    def __init__(self, path: Path, config: DetectorConfig, calibration: Calibration, threads: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise BrokenModel(f"{self.path.name} is missing from {self.path.parent}: re-run `brushpen export`")
        self.session, self.info = _session(str(self.path.resolve()), self.path.stat().st_mtime_ns, threads)
        self.config, self.calibration = config, calibration
        if [t.name for t in self.info.outputs] != list(OUTPUTS) or self.info.inputs[0].shape[1:] != [
                config.tile, config.tile, 3]:
            raise BrokenModel(f"{self.path.name} is not a detector graph for {config.tile}px tiles: "
                              "re-run `brushpen export`")
        temperature = float(self.info.extra.get("calibration", {}).get("temperature", calibration.temperature))
        if abs(temperature - calibration.temperature) > 1e-9:
            raise BrokenModel(f"{self.path.name} was exported with temperature {temperature:.6g}, the model now has "
                              f"{calibration.temperature:.6g}: re-run `brushpen export`")

    def run(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 [batch, tile, tile, 3] -> every graph output by name."""
        try:
            out = self.session.run(None, {INPUT: np.ascontiguousarray(patches, dtype=np.uint8)})
        except Exception as e:  # onnxruntime's own error types: a graph that does not fit the input
            raise BrokenModel(f"{self.path.name} failed to run: {str(e).splitlines()[0][:300]}") from e
        return dict(zip(OUTPUTS, out))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What `Detector.forward` returns, for x = to_tensor(tiles) in [-1, 1]. The graph takes the
        uint8 tiles themselves; (x + 1) * 127.5 recovers them exactly (|error| < 1e-4 before rounding)."""
        patches = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = self.run(patches)
        return torch.from_numpy(out["logit"]), torch.from_numpy(out["region_logit"])

    def eval(self) -> "OnnxDetector":
        return self
