"""Differentiable augmentation for small datasets (DiffAugment ops, ADA-style adaptive p).

The same random colour, translation and cutout ops are applied to reals and fakes before the
discriminator sees them, each op to each sample with probability p. Because the ops are
differentiable, G's gradient flows through them, and since D never sees an un-augmented image
once p is high, the augmentations do not leak into the generated images as long as p stays < ~0.8.
`AdaptiveAugment` raises p when D grows over-confident on reals (r_t = E[sign(D(real))] above the
target) and lowers it otherwise, as ADA does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _apply_where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], new, old)


def augment(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Colour (brightness, saturation, contrast), translation (1/8 of the size) and cutout (1/2)."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    dev = x.device
    # Draw on the generator's own device, then move: a CPU generator cannot draw on CUDA, and this
    # keeps a CPU generator's stream the same whichever device x is on (resume parity).
    gen_dev = generator.device if generator is not None else dev

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=generator, device=gen_dev).to(dev)

    def coin() -> torch.Tensor:
        return u() < p

    # Colour: brightness shift, saturation and contrast scale.
    x = _apply_where(coin(), x + (u(1, 1, 1) - 0.5), x)
    mean_c = x.mean(dim=1, keepdim=True)
    x = _apply_where(coin(), (x - mean_c) * (u(1, 1, 1) * 2) + mean_c, x)
    mean_all = x.mean(dim=[1, 2, 3], keepdim=True)
    x = _apply_where(coin(), (x - mean_all) * (u(1, 1, 1) + 0.5) + mean_all, x)

    # Translation by up to 1/8 of the image, filling with the border (white for emoji). A whole-pixel
    # shift is a gather of clamped indices: twice differentiable everywhere (R1 differentiates
    # through it), where CUDA's grid_sample has no second derivative.
    max_shift = max(1, h // 8)
    shift = (((u(2) * 2 - 1) * max_shift).round() * coin()[:, None]).long()
    rows = (torch.arange(h, device=dev)[None, :] + shift[:, 1:2]).clamp(0, h - 1)
    cols = (torch.arange(w, device=dev)[None, :] + shift[:, 0:1]).clamp(0, w - 1)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    x = x.flatten(2).gather(2, index).view_as(x)

    # Cutout: zero a square of half the size at a random place.
    cut = coin()
    cy, cx = (u() * h).long(), (u() * w).long()
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    inside = ((ys - cy[:, None, None]).abs() < h // 4) & ((xs - cx[:, None, None]).abs() < w // 4)
    mask = (inside & cut[:, None, None]).unsqueeze(1)
    return x.masked_fill(mask, 0.0)


@dataclass
class AdaptiveAugment:
    """Tracks p. Call `accumulate(real_logits)` every step and `update()` every `interval` steps."""

    p: float = 0.0
    target: float = 0.6
    speed_kimg: float = 100.0  # p can move from 0 to 1 in this many kimg
    fixed: bool = False
    _sum: float | torch.Tensor = 0.0  # a device tensor between updates: accumulating never syncs
    _count: int = 0

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self._sum = self._sum + real_logits.detach().sign().sum().double()
        self._count += real_logits.numel()

    def update(self, images_seen: int) -> float:
        if self._count and not self.fixed:
            rt = float(self._sum) / self._count
            step = images_seen / (self.speed_kimg * 1000)
            self.p = float(min(max(self.p + (step if rt > self.target else -step), 0.0), 1.0))
        self._sum, self._count = 0.0, 0
        return self.p

    def state(self) -> dict:
        return {"p": self.p, "sum": float(self._sum), "count": self._count}

    def load(self, state: dict) -> None:
        self.p, self._sum, self._count = float(state["p"]), float(state["sum"]), int(state["count"])
