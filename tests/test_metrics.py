"""FID and KID: closed-form checks of the Fréchet distance, KID sanity, and the real Inception network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from brushpen.gan.metrics import (evaluate_model, frechet_distance, inception_features, inception_path,
                                  kernel_inception_distance, stats)
from brushpen.store import read_metrics
from conftest import tiny_generator, write_shape_folder


def test_identical_statistics_give_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    sigma = a @ a.T + np.eye(8)
    mu = rng.normal(size=8)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_same_covariance_gives_squared_mean_distance() -> None:
    sigma = np.diag([0.5, 1.0, 2.0, 3.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, -1.0, 2.5, 0.0])
    expected = float(np.sum((mu1 - mu2) ** 2))  # 1 + 4 + 0.25 + 9
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(14.25)


def test_diagonal_covariances_closed_form() -> None:
    s1, s2 = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([0.0, 3.0, 0.0, 4.0])
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2) + np.sum((mu1 - mu2) ** 2)
    # (1-2)^2 + (2-1)^2 + 0 + (0.5-1)^2 + 9 + 16 = 27.25
    assert expected == pytest.approx(27.25)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, abs=1e-8)
    # The distance is symmetric.
    assert frechet_distance(mu2, np.diag(s2), mu1, np.diag(s1)) == pytest.approx(expected, abs=1e-8)


def test_rotation_invariance() -> None:
    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged,
    # which checks the full-matrix square root on non-diagonal covariances.
    s1, s2 = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([0.0, 3.0, 0.0, 4.0])
    q = ortho_group.rvs(4, random_state=1)
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(27.25, abs=1e-6)


def test_estimate_from_samples_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    d, n = 8, 20000
    s1, s2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    x = mu1 + rng.normal(size=(n, d)) * np.sqrt(s1)
    y = mu2 + rng.normal(size=(n, d)) * np.sqrt(s2)
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2) + np.sum((mu1 - mu2) ** 2)
    estimate = frechet_distance(*stats(x), *stats(y))
    assert estimate == pytest.approx(expected, rel=0.03, abs=0.02)
    # Two samples of one distribution: close to zero, far below the distance between the two.
    same = frechet_distance(*stats(x[: n // 2]), *stats(x[n // 2:]))
    assert 0 <= same < 0.02


def test_stats_shapes() -> None:
    f = np.random.default_rng(0).normal(size=(100, 5))
    mu, sigma = stats(f)
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    assert np.allclose(sigma, sigma.T)


def test_kid_identical_near_zero_and_shifted_positive() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 32))
    b = rng.normal(size=(400, 32))
    shifted = b + 0.5
    kw = dict(subsets=10, subset_size=200)
    kid_self = kernel_inception_distance(a, a, **kw)
    kid_same_dist = kernel_inception_distance(a, b, **kw)
    kid_shifted = kernel_inception_distance(a, shifted, **kw)
    assert kid_shifted > 0.3
    assert abs(kid_self) < 0.05 * kid_shifted
    assert abs(kid_same_dist) < 0.05 * kid_shifted
    # A larger shift is a larger distance; the seed makes it reproducible.
    assert kernel_inception_distance(a, b + 1.0, **kw) > kid_shifted
    assert kernel_inception_distance(a, shifted, **kw) == kid_shifted


def test_real_inception_features() -> None:
    assert inception_path().exists()
    assert inception_path().name == "default_1.pt"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 16, 16), generator=g, dtype=torch.uint8)
    images = torch.cat([images, images[:1]])  # the 4th is a copy of the 1st
    feats = inception_features(images, batch=2)
    assert feats.shape == (4, 2048) and feats.dtype == np.float64
    assert np.isfinite(feats).all() and (feats >= 0).all()  # pool3 of ReLU features
    assert np.allclose(feats[0], feats[3], atol=1e-5)
    assert np.abs(feats[0] - feats[1]).mean() > 1e-3


@pytest.mark.slow  # Inception on 14 images: about 30 s on 2 free cores
def test_eval_records_fid_and_kid_from_one_pass(tmp_path, brushpen_home) -> None:
    model = tmp_path / "tiny"
    tiny_generator().save_pretrained(model)
    reals = tmp_path / "reals"
    write_shape_folder(reals, n=8)
    both = evaluate_model(str(model), metric="both", num=6, data=reals, batch=3, noise_mode="none")
    assert set(both["values"]) == {"fid_noise_none", "kid_noise_none"}
    assert both["metric"] == "fid_noise_none" and both["value"] == both["values"]["fid_noise_none"]
    recorded = read_metrics(model)
    assert recorded["fid_noise_none"] == round(both["values"]["fid_noise_none"], 3)
    assert recorded["kid_noise_none"] == round(both["values"]["kid_noise_none"], 3)
    assert recorded["fid_num"] == recorded["kid_num"] == 6
    assert both["values"]["fid_noise_none"] > 0 and np.isfinite(both["values"]["kid_noise_none"])
    with pytest.raises(Exception, match="fid, kid or both"):
        evaluate_model(str(model), metric="is", num=6, data=reals)
