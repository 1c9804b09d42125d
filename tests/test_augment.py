"""Differentiable augmentation and the adaptive augment probability."""

from __future__ import annotations

import pytest
import torch

from brushpen.gan.augment import AdaptiveAugment, augment


def batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_p_zero_is_identity() -> None:
    x = batch()
    assert augment(x, 0.0) is x
    assert torch.equal(augment(x, 0.0, generator=torch.Generator().manual_seed(1)), x)


def test_p_one_changes_every_image() -> None:
    x = batch()
    y = augment(x, 1.0, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    per_image = (y - x).abs().flatten(1).mean(1)
    assert (per_image > 1e-3).all()
    # Cutout always applies at p=1: a 7x7 square (|dy|, |dx| < h/4) around a random centre is
    # zeroed, clipped at the border, so between 4x4 (a corner centre) and 7x7 pixels.
    zero_pixels = (y == 0).all(dim=1).flatten(1).sum(1)
    assert ((zero_pixels >= 16) & (zero_pixels <= 49)).all()
    assert (zero_pixels == 49).any()


def test_intermediate_p_changes_some_images_only() -> None:
    x = batch(64)
    y = augment(x, 0.1, generator=torch.Generator().manual_seed(0))
    changed = ((y - x).abs().flatten(1).amax(1) > 0).float().mean().item()
    # Each of 5 ops fires with p=0.1: 1 - 0.9^5 = 0.41 of images expected to change.
    assert 0.15 < changed < 0.7


def test_augment_is_seeded() -> None:
    x = batch()
    a = augment(x, 0.5, generator=torch.Generator().manual_seed(3))
    b = augment(x, 0.5, generator=torch.Generator().manual_seed(3))
    c = augment(x, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_flows_through_augment() -> None:
    x = batch().requires_grad_(True)
    y = augment(x, 1.0, generator=torch.Generator().manual_seed(0))
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    # Every image gets some gradient (cutout removes only a quarter of the pixels).
    assert (x.grad.abs().flatten(1).sum(1) > 0).all()


def test_translation_is_a_whole_pixel_shift_with_border_fill() -> None:
    # The clamped-index shift that augment uses equals the sampler it replaced: a nearest,
    # border-padded grid_sample over the same integer shift gives the same pixels.
    x = batch(8)
    shift = torch.tensor([[2, -1], [0, 0], [-2, 2], [1, 1], [2, 2], [-2, -2], [0, 1], [1, 0]])
    theta = torch.zeros(8, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift * 2 / 16
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    want = torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)
    rows = (torch.arange(16)[None, :] + shift[:, 1:2]).clamp(0, 15)
    cols = (torch.arange(16)[None, :] + shift[:, 0:1]).clamp(0, 15)
    got = torch.stack([x[i][:, rows[i]][:, :, cols[i]] for i in range(8)])
    assert torch.equal(got, want)


def test_images_that_only_moved_are_whole_pixel_shifts() -> None:
    # An image of distinct whole numbers: colour ops make fractions, cutout zeroes >= 16 pixels, so
    # an output of whole numbers with fewer zeros was only translated, and must equal the input
    # shifted by at most 2 pixels each way with the border repeated.
    ramp = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16).repeat(256, 3, 1, 1)
    out = augment(ramp, 0.5, generator=torch.Generator().manual_seed(5))
    shifted = {}
    for sy in range(-2, 3):
        for sx in range(-2, 3):
            rows = (torch.arange(16) + sy).clamp(0, 15)
            cols = (torch.arange(16) + sx).clamp(0, 15)
            shifted[sy, sx] = ramp[0][:, rows][:, :, cols]
    moved = 0
    for img in out:
        if torch.equal(img, ramp[0]) or (img != img.round()).any() or (img == 0).all(0).sum() >= 16:
            continue
        assert any(torch.equal(img, ref) for ref in shifted.values())
        moved += 1
    assert moved >= 3


def test_r1_can_differentiate_through_augment_twice() -> None:
    # R1 takes the gradient of D(augment(x)) with respect to x and then differentiates that gradient.
    # CUDA's grid_sample has no second derivative (the first H200 run crashed at its first R1 step);
    # a gather has one on every device. The CPU grid_sample passed this too: the H200 run is the proof.
    x = batch(4).requires_grad_(True)
    w = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = augment(x, 1.0, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad(((y * w).sum((1, 2, 3)) ** 2).sum(), x, create_graph=True)
    g.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_adaptive_p_rises_when_d_is_overconfident() -> None:
    ada = AdaptiveAugment(p=0.2, target=0.6, speed_kimg=1.0)
    ada.accumulate(torch.tensor([1.0, 2.0, 3.0, -1.0]))  # r_t = (3 - 1) / 4 = 0.5 < target
    ada.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0]))   # total r_t = 6 / 8 = 0.75 > target
    assert ada.update(images_seen=100) == pytest.approx(0.3)  # + 100 / 1000
    assert ada.state() == {"p": pytest.approx(0.3), "sum": 0.0, "count": 0}  # stats reset


def test_adaptive_p_falls_when_d_is_unsure() -> None:
    ada = AdaptiveAugment(p=0.5, target=0.6, speed_kimg=1.0)
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0, -1.0]))  # r_t = 0
    assert ada.update(images_seen=250) == pytest.approx(0.25)


def test_adaptive_p_clamps_to_unit_interval() -> None:
    ada = AdaptiveAugment(p=0.95, target=0.6, speed_kimg=1.0)
    ada.accumulate(torch.ones(8))
    assert ada.update(images_seen=500) == 1.0
    ada = AdaptiveAugment(p=0.05, target=0.6, speed_kimg=1.0)
    ada.accumulate(-torch.ones(8))
    assert ada.update(images_seen=500) == 0.0


def test_adaptive_p_without_statistics_or_fixed_stays() -> None:
    ada = AdaptiveAugment(p=0.4, target=0.6, speed_kimg=1.0)
    assert ada.update(images_seen=500) == 0.4  # nothing accumulated
    fixed = AdaptiveAugment(p=0.4, target=0.6, speed_kimg=1.0, fixed=True)
    fixed.accumulate(torch.ones(8))
    assert fixed.update(images_seen=500) == 0.4
    assert fixed.state()["count"] == 0


def test_state_round_trip() -> None:
    ada = AdaptiveAugment(p=0.37, target=0.6)
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0]))
    state = ada.state()
    assert state == {"p": 0.37, "sum": 1.0, "count": 3}
    other = AdaptiveAugment()
    other.load(state)
    assert other.state() == state
    # The restored tracker continues exactly as the original does.
    assert other.update(100) == ada.update(100)
