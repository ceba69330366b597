import math

import pytest
import torch

from scorekit.processes import SCHEDULES, VESDE, VPSDE, VEProcess, VPProcess, beta_schedule, normal_kl, sigma_ladder


def linear():
    return VPProcess.from_schedule("linear", 1000, 1e-4, 0.02)


def test_spec_spot_values_linear_schedule():
    p = linear()
    assert p.betas.dtype == torch.float64
    assert p.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)
    assert p.alphas_cumprod[-1].sqrt().item() == pytest.approx(6.3528e-3, rel=1e-4)
    assert p.posterior_variance[0].item() == 0.0
    assert p.posterior_variance[487].item() == pytest.approx(0.0097916, abs=5e-8)
    assert p.posterior_variance[999].item() == pytest.approx(0.0199999, abs=1e-7)
    # log-variance clipped: beta~_1 replaced by beta~_2
    assert p.posterior_log_variance_clipped[0] == p.posterior_log_variance_clipped[1]
    assert p.large_log_variance[0] == p.posterior_log_variance_clipped[1]
    assert torch.allclose(p.large_log_variance[1:], p.betas[1:].log())


@pytest.mark.parametrize("T", [1, 10, 1000])
@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_is_valid_for_any_T(name, T):
    b = beta_schedule(name, T, 1e-4, 0.02)
    assert b.shape == (T,) and b.dtype == torch.float64
    assert bool(((b > 0) & (b <= 1)).all())


def test_schedule_definitions():
    T = 100
    assert torch.allclose(beta_schedule("quad", T).sqrt(), torch.linspace(1e-2, 0.02**0.5, T, dtype=torch.float64))
    assert torch.allclose(beta_schedule("jsd", T), 1 / torch.arange(T, 0, -1, dtype=torch.float64))
    assert bool((beta_schedule("const", T) == 0.02).all())
    w = beta_schedule("warmup10", T)
    assert torch.allclose(w[:10], torch.linspace(1e-4, 0.02, 10, dtype=torch.float64)) and bool((w[10:] == 0.02).all())
    w = beta_schedule("warmup50", T)
    assert torch.allclose(w[:50], torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)) and bool((w[50:] == 0.02).all())
    # cosine: alphabar(t) = cos^2(((t/T + s)/(1 + s)) pi/2) / f(0), s = 0.008
    ab = torch.cumprod(1 - beta_schedule("cosine", T), 0)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert ab[T // 2].item() == pytest.approx(f((T // 2 + 1) / T) / f(0), rel=1e-9)
    with pytest.raises(ValueError, match="unknown beta schedule 'nope'"):
        beta_schedule("nope")


def _grid_posterior(prior_mean, prior_var, obs, obs_scale, obs_var):
    """Mean/variance of p(y | x = obs) with y ~ N(prior_mean, prior_var), x | y ~ N(obs_scale y, obs_var),
    by numerical integration of Bayes' rule on a grid."""
    sd = math.sqrt(max(prior_var, obs_var / obs_scale**2))
    centres = (prior_mean, obs / obs_scale)
    y = torch.linspace(min(centres) - 12 * sd, max(centres) + 12 * sd, 400001, dtype=torch.float64)
    logw = -0.5 * (y - prior_mean) ** 2 / prior_var - 0.5 * (obs - obs_scale * y) ** 2 / obs_var
    w = torch.softmax(logw, 0)
    mean = (w * y).sum()
    return mean.item(), (w * (y - mean) ** 2).sum().item()


@pytest.mark.parametrize("t", [1, 50, 487, 999])
def test_vp_posterior_matches_bayes_rule(t):
    p = linear()
    x0, x_t = 0.7, -0.4
    ab_prev = p.alphas_cumprod[t - 1].item()
    mean, var = _grid_posterior(math.sqrt(ab_prev) * x0, 1 - ab_prev, x_t, math.sqrt(p.alphas[t].item()),
                                p.betas[t].item())
    m, v, _ = p.q_posterior(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[x_t]], dtype=torch.float64),
                            torch.tensor([t]))
    assert m.item() == pytest.approx(mean, abs=1e-7)
    assert v.item() == pytest.approx(var, rel=1e-5)


@pytest.mark.parametrize("t", [1, 5, 9])
def test_ve_posterior_matches_bayes_rule(t):
    p = VEProcess.from_ladder(10.0, 0.1, 10)
    x0, x_t = 0.3, 1.7
    s_prev, s = p.sigmas[t - 1].item(), p.sigmas[t].item()
    # x_{t-1} ~ N(x0, s_prev^2); x_t | x_{t-1} ~ N(x_{t-1}, s^2 - s_prev^2)
    mean, var = _grid_posterior(x0, s_prev**2, x_t, 1.0, s**2 - s_prev**2)
    m, v, _ = p.q_posterior(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[x_t]], dtype=torch.float64),
                            torch.tensor([t]))
    assert m.item() == pytest.approx(mean, abs=1e-7)
    assert v.item() == pytest.approx(var, rel=1e-5)


def test_ve_ladder_and_label_order():
    s = sigma_ladder(50.0, 0.01, 232)
    assert s[0].item() == pytest.approx(50.0) and s[-1].item() == pytest.approx(0.01)
    assert torch.allclose(s[1:] / s[:-1], (s[1] / s[0]).expand(231))  # geometric
    p = VEProcess(s)
    assert p.sigmas[0].item() == pytest.approx(0.01)  # t = 0 is the least noise
    assert p.net_label(torch.tensor(0)).item() == 231  # the authors' index of sigma_L
    assert p.t_of_label(p.net_label(torch.tensor([3, 100]))).tolist() == [3, 100]
    assert torch.allclose(sigma_ladder(1.0, 0.5, 3, "uniform"), torch.tensor([1.0, 0.75, 0.5], dtype=torch.float64))
    assert p.posterior_variance[0] == 0 and p.posterior_mean_coef1[0] == 1  # last step: predicted x0


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(2.0)
    x = m1 + math.exp(lv1 / 2) * torch.randn(2_000_000, generator=g, dtype=torch.float64)
    logq = -0.5 * (x - m1) ** 2 / math.exp(lv1) - lv1 / 2
    logp = -0.5 * (x - m2) ** 2 / math.exp(lv2) - lv2 / 2
    mc = (logq - logp).mean().item()
    kl = normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, lv1, m2, lv2))).item()
    assert kl == pytest.approx(mc, abs=3e-3)


def test_prior_kl_spec_values():
    p = linear()
    assert p.prior_kl_bpd(torch.ones(1, 1, 1, 1)).item() == pytest.approx(2.9e-5, rel=0.01)
    assert p.prior_kl_bpd(torch.zeros(1, 1, 1, 1, dtype=torch.float64)).item() == pytest.approx(5.9e-10, rel=0.01)


@pytest.mark.parametrize("proc", [linear(), VEProcess.from_ladder(50.0, 0.01, 232)])
def test_fractional_levels_interpolate_log_sigma(proc):
    t_int = torch.tensor([0, 7, proc.num_levels - 1])
    assert torch.equal(proc.sigma(t_int), proc.sigmas[t_int])
    assert torch.allclose(proc.sigma(t_int.double()), proc.sigmas[t_int], rtol=1e-12)
    t = torch.tensor([0.25, 3.5, proc.num_levels - 1.5], dtype=torch.float64)
    lo = t.floor().long()
    expected = (proc.log_sigmas[lo] * (1 - (t - lo)) + proc.log_sigmas[lo + 1] * (t - lo)).exp()
    assert torch.allclose(proc.sigma(t), expected, rtol=1e-12)
    assert torch.allclose(proc.t_of_sigma(proc.sigma(t)), t, atol=1e-9)
    a, s = proc.alpha_s(t)
    assert torch.allclose(s / a, proc.sigma(t), rtol=1e-12)


def test_vp_fractional_alpha_is_variance_preserving():
    p = linear()
    a, s = p.alpha_s(torch.tensor([10.3, 500.7], dtype=torch.float64))
    assert torch.allclose(a**2 + s**2, torch.ones(2, dtype=torch.float64))


def test_subset_keeps_marginals():
    p = linear()
    ts = torch.tensor([0, 99, 499, 999])
    q = p.subset(ts)
    assert torch.allclose(q.alphas_cumprod, p.alphas_cumprod[ts], rtol=1e-12)
    v = VEProcess.from_ladder(50.0, 0.01, 232)
    assert torch.allclose(v.subset(torch.tensor([0, 99, 231])).sigmas, v.sigmas[[0, 99, 231]])


def test_continuous_vp_sde_is_the_limit_of_ddpm_linear():
    p, sde = linear(), VPSDE(0.1, 20.0)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    a, _ = sde.marginal(t)
    idx = (t * 1000).long() - 1
    assert torch.allclose((a**2).log(), p.alphas_cumprod[idx].log(), rtol=1e-2)
    assert torch.allclose(sde.sigma(t), (1 / a**2 - 1).sqrt())


def test_continuous_ve_sde():
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t and g(t)^2 = d sigma^2 / dt (checked numerically)."""
    sde = VESDE(0.01, 50.0)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    assert torch.allclose(sde.sigma(t)[[0, 2]], torch.tensor([0.01, 50.0], dtype=torch.float64))
    h = 1e-6
    dsig2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    _, g = sde.sde(torch.zeros(3, 1, dtype=torch.float64), t)
    assert torch.allclose(g**2, dsig2, rtol=1e-5)
