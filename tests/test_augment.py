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
