"""Frechet distance, streaming statistics, KID and precision/recall against independent references."""

import numpy as np
import pytest
import scipy.linalg

from scorekit.metrics.frechet import RunningStats, frechet_distance, load_stats, save_stats
from scorekit.metrics.scores import kid, knn_radii, mmd2_unbiased, precision_recall


def _spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T + (1e-9 if rank else 0.1) * np.eye(d) * (rank is None)


def _scipy_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("rank", [None, 3])
def test_frechet_distance_matches_scipy(rank):
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = 12
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _spd(rng, d, rank), _spd(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    v1, v2 = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    exact = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(exact, rel=1e-10)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-10)


def test_streaming_statistics_equal_numpy_over_uneven_batches():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1000, 7)) * 5 + 100  # a large mean tests the float64 accumulation
    rs = RunningStats()
    for a, b in [(0, 3), (3, 250), (250, 251), (251, 1000)]:
        rs.update(x[a:b].astype(np.float32).astype(np.float64))
    x32 = x.astype(np.float32).astype(np.float64)
    assert np.allclose(rs.mu, x32.mean(0), rtol=1e-12)
    assert np.allclose(rs.sigma, np.cov(x32, rowvar=False), rtol=1e-8, atol=1e-10)


def test_statistics_files_in_the_ttur_format(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "ttur.npz", mu=mu, sigma=sigma)  # as TTUR / EDM / clean-fid write them
    assert all(np.array_equal(a, b) for a, b in zip(load_stats(tmp_path / "ttur.npz"), (mu, sigma)))
    save_stats(tmp_path / "ours.npz", mu, sigma, n=5)
    with np.load(tmp_path / "ours.npz") as f:
        assert set(f.files) >= {"mu", "sigma"} and f["mu"].dtype == np.float64
    np.savez(tmp_path / "bad.npz", mean=mu)
    from scorekit.errors import DataError

    with pytest.raises(DataError, match="expected arrays 'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")


def test_unbiased_mmd_matches_a_brute_force_double_sum():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((15, 4)), rng.standard_normal((11, 4)) + 0.5
    k = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(15) for j in range(15) if i != j) / (15 * 14)
    yy = sum(k(y[i], y[j]) for i in range(11) for j in range(11) if i != j) / (11 * 10)
    xy = sum(k(x[i], y[j]) for i in range(15) for j in range(11)) / (15 * 11)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    same = rng.standard_normal((600, 4))
    m, s = kid(same[:300], same[300:], subsets=20, subset_size=200)
    assert abs(m) < 2 * s  # unbiased: ~0 for two samples of one distribution
    shifted, _ = kid(same[:300], same[300:] + 0.5, subsets=20, subset_size=200)
    assert shifted > 10 * s
    assert kid(x, y, subsets=5, subset_size=10, seed=1) == kid(x, y, subsets=5, subset_size=10, seed=1)


def test_precision_recall_on_sets_with_a_known_answer():
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)
    assert np.allclose(knn_radii(grid, 3), np.where(np.ones(100), 1.0, 0), atol=0.42)  # 3rd neighbour: 1 or sqrt 2
    inside = grid[:50] + 0.1  # generated points on half of the real manifold
    p, r = precision_recall(grid, inside)
    assert p == 1.0 and 0.4 <= r <= 0.6
    far = grid + 100.0
    assert precision_recall(grid, far) == (0.0, 0.0)
