"""Likelihood training: the g^2 weighting of each SDE, the continuous bound's scale on Gaussian data, improved
DDPM's importance sampler of t (unbiased, lower variance) and its hybrid loss."""

import math

import pytest
import torch

from scorekit.evaluation.likelihood import vb_terms_bpd
from scorekit.processes import VESDE, VPSDE, SubVPProcess, SubVPSDE, VEProcess, VPProcess
from scorekit.toy import GaussianMixture, exact_denoiser
from scorekit.training.losses import ddpm_loss, likelihood_loss
from scorekit.training.tsampling import (
    HISTORY,
    UNIFORM_SHARE,
    LossSecondMomentSampler,
    continuous_levels,
    log_sigma_slope,
)

N = 2000  # table points of the discretised SDEs


def _tables_of(sde_name: str):
    """A discrete process whose level i is the SDE at time tau_i = i / (N - 1) on [1e-3, 1], and the SDE."""
    tau = torch.linspace(1e-3, 1.0, N, dtype=torch.float64)
    if sde_name == "vp":
        sde = VPSDE(0.1, 20.0)
        ab = sde.marginal(tau)[0] ** 2
        return VPProcess(1.0 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])), sde, tau
    if sde_name == "subvp":
        sde = SubVPSDE(0.1, 20.0)
        return SubVPProcess((-sde.integral(tau)).exp()), sde, tau
    sde = VESDE(0.01, 50.0)
    return VEProcess(sde.sigma(tau).flip(0)), sde, tau


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_likelihood_weighting_is_g_squared_for_each_sde(sde_name):
    """The loss's weight on ||eps - eps_hat||^2 per unit of SDE time, d log sigma / dtau from the process tables,
    is lambda(tau) / (2 s(tau)^2) with lambda = g^2 from the SDE's own drift and diffusion (Song et al. 2021)."""
    process, sde, tau = _tables_of(sde_name)
    i = torch.arange(10, N - 1, 37)
    mid = (tau[i] + tau[i + 1]) / 2
    weight_per_tau = log_sigma_slope(process, i.double()) / (tau[1] - tau[0])
    _, g = sde.sde(torch.zeros(len(i), 1, dtype=torch.float64), mid)
    _, s = sde.marginal(mid)
    torch.testing.assert_close(weight_per_tau, 0.5 * g**2 / s**2, rtol=2e-3, atol=0)


def _closed_form_bpd(var: float, s_min: float, s_max: float) -> float:
    """E ||eps - E[eps | x]||^2 = var / (var + sigma^2) per dimension for x0 ~ N(m, var), integrated over log sigma."""
    f = lambda s: math.log(s) - 0.5 * math.log(var + s * s)  # noqa: E731
    return (f(s_max) - f(s_min)) / math.log(2.0)


@pytest.mark.parametrize("kind", ["uniform", "importance"])
@pytest.mark.parametrize("process", [VPProcess.from_schedule("linear", 1000, 1e-6, 0.02),
                                     SubVPProcess.from_schedule("linear", 1000, 1e-4, 0.02),
                                     VEProcess.from_ladder(5.0, 1e-3, 300)], ids=["vp", "subvp", "ve"])
def test_likelihood_loss_of_the_exact_denoiser_is_the_closed_form(process, kind):
    """With the exact denoiser of Gaussian data the expected loss is int var/(var + sigma^2) d log sigma (in
    bits/dim): the same for the three processes and both samplers of t, as the bound's diffusion term must be."""
    m, std, dim = 0.1, 0.3, 16
    d = exact_denoiser(GaussianMixture.gaussian(m, std, dim), process, (1, 4, 4))
    g = torch.Generator().manual_seed(0)
    B = 40_000
    t, w = continuous_levels(process, B, g, "cpu", kind)
    x0 = (m + std * torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64))
    eps = torch.randn(B, 1, 4, 4, generator=g, dtype=torch.float64)
    loss = likelihood_loss(d, x0, t, eps, w)
    expected = _closed_form_bpd(std**2, process.sigma_min, process.sigma_max)
    assert abs(loss.mean().item() - expected) < 4 * loss.std().item() / math.sqrt(B) + 1e-3, (loss.mean(), expected)
    if kind == "uniform":  # weight=None is the uniform-t weight
        torch.testing.assert_close(likelihood_loss(d, x0[:64], t[:64], eps[:64]), loss[:64])


def test_second_moment_sampler_follows_the_papers_rule():
    s = LossSecondMomentSampler(5)
    assert not s.warm and torch.allclose(s.probs(), torch.full((5,), 0.2, dtype=torch.float64))
    rows = {lvl: [float(lvl + 1)] * HISTORY for lvl in range(5)}
    rows[4] = [1.0] * (HISTORY - 1)  # level 4 one short: still uniform
    for lvl, vals in rows.items():
        s.update(torch.full((len(vals),), lvl), torch.tensor(vals))
    assert not s.warm
    s.update(torch.tensor([4, 4, 4]), torch.tensor([5.0, 5.0, 5.0]))  # the oldest values drop out
    assert s.warm and s.history[4].tolist() == [1.0] * (HISTORY - 3) + [5.0] * 3
    rms = torch.tensor([1.0, 2.0, 3.0, 4.0, math.sqrt((7 * 1 + 3 * 25) / 10)], dtype=torch.float64)
    expected = rms / rms.sum() * (1 - UNIFORM_SHARE) + UNIFORM_SHARE / 5
    torch.testing.assert_close(s.probs(), expected)
    # the draws follow p, and the weights 1/(N p_t) make E_p[w L_t] the uniform mean of any L_t exactly
    t, w = s.draw(200_000, torch.Generator().manual_seed(1), "cpu")
    freq = torch.bincount(t, minlength=5).double() / len(t)
    assert torch.allclose(freq, expected, atol=4e-3)
    torch.testing.assert_close(w, 1.0 / (5 * expected[t]))
    L = torch.tensor([0.3, 7.0, 1.0, 2.5, 0.01], dtype=torch.float64)
    torch.testing.assert_close((expected * (1.0 / (5 * expected)) * L).sum(), L.mean())
    other = LossSecondMomentSampler(5)
    other.load_state_dict(s.state_dict())
    torch.testing.assert_close(other.probs(), s.probs())
    with pytest.raises(ValueError, match="history of shape"):
        LossSecondMomentSampler(6).load_state_dict(s.state_dict())


def test_importance_sampled_vlb_is_unbiased_and_less_noisy_on_a_fixed_model():
    """On a fixed model (the exact Gaussian denoiser, 40 levels) the importance-sampled L_vlb estimate agrees with
    the uniform-t estimate and with the mean of all terms, with a smaller spread."""
    T = 40
    process = VPProcess.from_schedule("linear", T, 1e-4, 0.3)
    d = exact_denoiser(GaussianMixture.gaussian(0.1, 0.3, 16), process, (1, 4, 4))
    g = torch.Generator().manual_seed(3)

    def terms(t):
        z = torch.randn(len(t), 1, 4, 4, generator=g, dtype=torch.float64)
        x0 = ((0.1 + 0.3 * z).clamp(-1, 1) * 127.5).round() / 127.5  # 8-bit values
        x_t = process.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        return vb_terms_bpd(d, x0, x_t, t)[0]

    truth = torch.stack([terms(torch.full((2000,), i)).mean() for i in range(T)]).mean()
    s = LossSecondMomentSampler(T)
    for _ in range(3):  # warm: 10 values of every level
        t = torch.arange(T).repeat(4)
        s.update(t, terms(t))
    assert s.warm
    B = 8000
    t_is, w = s.draw(B, g, "cpu")
    est_is = w * terms(t_is)
    est_u = terms(torch.randint(0, T, (B,), generator=g))
    for est in (est_is, est_u):
        assert abs(est.mean() - truth) < 4 * est.std() / math.sqrt(B), (est.mean(), truth)
    assert est_is.std() < 0.5 * est_u.std()


def test_hybrid_loss_is_l_simple_plus_lambda_vlb_with_the_mean_detached():
    """Improved DDPM Eq. 16: the eps channels get L_simple's gradient only; the variance channels get
    0.001 x L_vlb's gradient."""
    from scorekit.model.factory import build

    d = build("ddpm-digits", ["model.variance=learned_range", "training.loss=hybrid", "model.ch_mult=[1,2]"])
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([0, 3, 200, 999])
    eps = torch.randn(x0.shape, generator=g)
    raw = d.raw(d.process.q_sample(x0, t, eps), t).detach().requires_grad_(True)
    d.raw = lambda *a, **k: raw  # the loss sees this output
    hybrid = ddpm_loss(d, x0, t, eps, "hybrid", hybrid_weight=0.001).sum()
    (g_h,) = torch.autograd.grad(hybrid, raw)
    out, v = raw.chunk(2, 1)
    simple = ((eps - out) ** 2).flatten(1).mean(1).sum()
    vlb = vb_terms_bpd(d, x0, d.process.q_sample(x0, t, eps), t, raw=torch.cat([out.detach(), v], 1))[0].sum()
    (g_s,) = torch.autograd.grad(simple, raw, retain_graph=True)
    (g_v,) = torch.autograd.grad(vlb, raw)
    torch.testing.assert_close(g_h, g_s + 0.001 * g_v)
    assert torch.all(g_v[:, :1] == 0) and g_v[:, 1:].abs().sum() > 0
    torch.testing.assert_close(hybrid, simple + 0.001 * vlb)
