"""The deepfake detector: a small NPR + RGB convolutional network with a classification head and a
localisation head, its calibration (temperature and three verdict bands) and how it scores an image.

Why this design (the anchors were CNNDetection, NPR and UnivFD):
- Every generator family we test against up-samples somewhere (StyleGAN's up-sampling layers, the
  diffusion model's 32->64 resize and U-Net decoder, transposed-conv and upsample decoders). NPR's
  observation is that up-sampling leaves correlated neighbouring pixels, visible in the residual
  `x - up(down(x))` (nearest 2x down, nearest 2x up) whatever the content. So that residual, next
  to the RGB pixels, is the input (6 channels).
- A frozen Inception-v3 probe (UnivFD) needs 299x299 inputs: ~5.7 GFLOP per 64x64 patch, 80x
  this network, and its features are blind to pixel-level residuals after the resize. Not for a
  CPU or an int8 edge target.
- CNNDetection's lesson is kept in training: blur and JPEG augmentation (`detector_data.augment`).
- The network is only conv/BN/ReLU, a global average pool and 1x1 convs (no attention, no
  grouped or deformable convs), so BN folds into the convs and static QDQ int8 covers every op.

Forward (`Detector.forward`), for x in [-1, 1] of shape (B, 3, 64, 64):
    r      = x - up2(down2(x))                     # NPR residual, 0 where 2x2 blocks repeat
    h      = body(cat(x, npr_gain * r))           # conv3x3-BN-ReLU stack, two stride-2 stages
    logit  = fc(avgpool(h))                       # the image's "AI-made" logit
    where  = loc(h)                               # (B, 1, 16, 16) per-region logits: the heatmap,
                                                   # trained on the splice masks
    logit += max(where)                            # if `region_max` (the default)
Why `region_max`: the pooled head averages a small pasted region away; the localisation head sees
it. Trained both ways on the same fake set, splice TPR at 1% FPR was 0.62 with it against 0.30
without on validation (0.57 / 0.26 on test), whole-image families level (BENCHMARKS.md). Models
saved before the field keep the plain `fc` logit they were calibrated on (`load_detector`).
Calibration: p = sigmoid(logit / T); verdict `fake` if p >= t_fake, `real` if p < t_real, else
`uncertain` (`Calibration`, thresholds chosen on validation, see `brushpen.safety.calibrate`).

Saved as `config.json` (`DetectorConfig` + `Calibration`) and `model.safetensors`: plain torch,
no diffusers import, so a scan starts in well under a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from brushpen.errors import BrokenModel
from brushpen.store import atomic_write_json, check_safe_weight

TILE = 64           # the patch size the detector is trained on; larger images are tiled
MAX_TILES = 256     # a scan samples at most this many tiles per image (an evenly spaced grid)


@dataclass
class DetectorConfig:
    """Every size of the network. The defaults are the shipped model's."""

    widths: tuple[int, ...] = (24, 32, 32, 64, 64)
    strides: tuple[int, ...] = (1, 2, 1, 2, 1)
    npr: bool = True            # feed the NPR residual next to RGB
    npr_gain: float = 4.0       # residuals are small; this puts them near the RGB range at init
    tile: int = TILE
    region_max: bool = True     # image logit += the largest region logit (splices are local)

    def __post_init__(self) -> None:
        self.widths, self.strides = tuple(self.widths), tuple(self.strides)
        if len(self.widths) != len(self.strides):
            raise ValueError("widths and strides must have the same length")


@dataclass
class Calibration:
    """Temperature and verdict bands, fitted on validation (`calibrate.calibrate`)."""

    temperature: float = 1.0
    t_real: float = 0.5          # p < t_real -> "real"
    t_fake: float = 0.5          # p >= t_fake -> "fake"; in between "uncertain"
    rule: str = "uncalibrated"   # how the thresholds were chosen, in words
    fitted_on: dict = field(default_factory=dict)   # counts of the validation set

    def probability(self, logits: np.ndarray | float) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def verdict(self, p: float) -> str:
        if p >= self.t_fake:
            return "fake"
        return "real" if p < self.t_real else "uncertain"


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x - up(down(x)) with nearest 2x both ways (NPR): zero wherever a 2x2 block repeats a pixel."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(down, scale_factor=2.0, mode="nearest")


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Detector(nn.Module):
    def __init__(self, config: DetectorConfig | None = None, calibration: Calibration | None = None):
        super().__init__()
        self.config = config or DetectorConfig()
        self.calibration = calibration or Calibration()
        c = 6 if self.config.npr else 3
        layers = []
        for width, stride in zip(self.config.widths, self.config.strides):
            layers.append(ConvBNReLU(c, width, stride))
            c = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Conv2d(c, 1, 1)     # on the pooled features: the classification head
        self.loc = nn.Conv2d(c, 1, 1)    # on every position: the localisation head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image logits (B,), region logits (B, 1, H/4, W/4)) for x in [-1, 1]."""
        if self.config.npr:
            x = torch.cat([x, self.config.npr_gain * npr_residual(x)], dim=1)
        h = self.body(x)
        logit, where = self.fc(F.adaptive_avg_pool2d(h, 1)).flatten(1)[:, 0], self.loc(h)
        if self.config.region_max:
            logit = logit + where.amax(dim=(1, 2, 3))
        return logit, where

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---- persistence --------------------------------------------------------------------------------

def save_detector(model: Detector, folder: Path, extra: dict | None = None) -> Path:
    """config.json + model.safetensors, each written atomically (temp file, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(folder / "model.safetensors")
    atomic_write_json(folder / "config.json", {"model_type": "brushpen-detector",
                                               "architecture": asdict(model.config),
                                               "calibration": asdict(model.calibration), **(extra or {})})
    return folder


def load_detector(folder: Path) -> Detector:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        arch = {"region_max": False, **meta["architecture"]}   # saved before the field: plain fc logit
        model = Detector(DetectorConfig(**arch), Calibration(**meta["calibration"]))
        model.load_state_dict(load_file(str(check_safe_weight(folder / "model.safetensors"))))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise BrokenModel(f"{folder} is not a readable detector: {e}") from e
    return model.eval()


# ---- scoring an image -----------------------------------------------------------------------------

def to_tensor(arrays: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tile_image(image: Image.Image, tile: int = TILE, max_tiles: int = MAX_TILES
               ) -> tuple[np.ndarray, list[tuple[int, int]], tuple[int, int]]:
    """(tiles (N, tile, tile, 3) uint8, their top-left corners, the working size).

    An image smaller than a tile on either side is first enlarged (bicubic) so its short side is
    one tile: up-sampling blurs the very cue the detector reads, so such scores are weaker, but a
    thumbnail still gets one. Larger images are cut into non-overlapping tiles, never resized;
    past `max_tiles` an evenly spaced subset of the grid is scored.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if min(w, h) < tile:
        f = tile / min(w, h)
        w, h = max(tile, round(w * f)), max(tile, round(h * f))
        image = image.resize((w, h), Image.BICUBIC)
    xs = np.linspace(0, w - tile, max(1, w // tile)).round().astype(int)
    ys = np.linspace(0, h - tile, max(1, h // tile)).round().astype(int)
    corners = [(int(x), int(y)) for y in ys for x in xs]
    if len(corners) > max_tiles:
        keep = np.linspace(0, len(corners) - 1, max_tiles).round().astype(int)
        corners = [corners[i] for i in keep]
    # Tile by tile: a copy of the whole image as one array would cost 3 bytes a pixel more (108 MB at 36 MP).
    tiles = np.stack([np.asarray(image.crop((x, y, x + tile, y + tile))) for x, y in corners])
    return tiles, corners, (w, h)


@dataclass
class ImageScore:
    logit: float                 # mean of the tile logits: the image's uncalibrated score
    probability: float           # calibrated P(AI-made)
    verdict: str
    tiles: int
    heatmap: np.ndarray | None   # (H, W) float in [0, 1] at the working size, if asked


@torch.no_grad()
def score_image(model: Detector, image: Image.Image, heatmap: bool = False, batch: int = 64) -> ImageScore:
    """Score one image of any size: tiles, mean tile logit, calibrated probability and verdict.

    The mean (not the max) of tile logits keeps a large real photo's false-positive rate near the
    single-tile rate the thresholds were chosen for; the heatmap shows where a splice sits.
    """
    tiles, corners, (w, h) = tile_image(image, model.config.tile)
    logits, maps = [], []
    for i in range(0, len(tiles), batch):
        lg, where = model(to_tensor(tiles[i:i + batch]))
        logits.append(lg)
        maps.append(where)
    logit = float(torch.cat(logits).mean())
    p = float(model.calibration.probability(logit))
    heat = None
    if heatmap:
        t = model.config.tile
        region = torch.sigmoid(torch.cat(maps) / model.calibration.temperature)
        region = F.interpolate(region, size=(t, t), mode="bilinear", align_corners=False)[:, 0].numpy()
        heat, count = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
        for (x, y), m in zip(corners, region):
            heat[y:y + t, x:x + t] += m
            count[y:y + t, x:x + t] += 1
        heat = np.where(count > 0, heat / np.maximum(count, 1), 0.0)
    return ImageScore(logit, p, model.calibration.verdict(p), len(tiles), heat)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The heatmap over the image: blue (real-like) to red (AI-like), at the heatmap's size."""
    base = np.asarray(image.convert("RGB").resize(heat.shape[::-1], Image.BICUBIC), np.float32)
    colour = np.stack([heat, 0.2 * np.ones_like(heat), 1.0 - heat], axis=-1) * 255.0
    return Image.fromarray((base * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8))
