"""MeanFlow (issue 38): the average velocity u(z, r, t) of the straight path, its identity and the training target,
checked against the closed form of Gaussian data (whose probability-flow ODE is linear, so u is known), the JVP
against finite differences of the U-Net, the sampler on the exact average velocity, and what MeanFlow refuses.
(Exact resume of a MeanFlow run: tests/test_train.py.)"""

import math

import pytest
import torch

from scorekit.config import ConfigError, load_config
from scorekit.model.denoiser import Denoiser
from scorekit.model.factory import build
from scorekit.model.meanflow import average_velocity
from scorekit.processes import FlowProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import sample, unhonoured
from scorekit.training.losses import fm_loss
from scorekit.training.meanflow import draw_times, meanflow_loss, meanflow_target

MU, VAR = 0.3, 0.2  # Gaussian data N(MU, VAR) per pixel


def _m(tau):
    return (1 - tau) * MU


def _S(tau):
    return (1 - tau) ** 2 * VAR + tau**2  # the marginal variance of z_tau


def marginal_velocity(z, t):
    """v(z, t) = m'(t) + S'(t) / (2 S(t)) (z - m(t)) for the Gaussian data."""
    return -MU + (-(1 - t) * VAR + t) / _S(t) * (z - _m(t))


def exact_u(z, r, t):
    """The average velocity from the linear flow map z_r = m(r) + sqrt(S(r) / S(t)) (z - m(t))."""
    z_r = _m(r) + torch.sqrt(_S(r) / _S(t)) * (z - _m(t))
    return (z - z_r) / (t - r)


class ExactMeanFlowNet(torch.nn.Module):
    """The closed-form u as a MeanFlow network: labels 1000 t and 1000 (t - r)."""

    mean_flow = True

    def forward(self, x, label, y=None, aug=None, gap=None):
        t = (label.double() / 1000).view(-1, 1, 1, 1)
        h = torch.zeros_like(t) if gap is None else (gap.double() / 1000).view(-1, 1, 1, 1)
        x = x.double()
        if float(h.abs().max()) == 0:
            return marginal_velocity(x, t)
        return torch.where(h > 0, exact_u(x, t - h, t), marginal_velocity(x, t))


def _bcast(v):
    return v.view(-1, 1, 1, 1)


def test_the_identity_holds_for_the_exact_average_velocity():
    """u = v - (t - r)(v d_z u + d_t u) (Eq. 6): the JVP target along the marginal velocity returns u itself."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.9, 0.5, 0.99, 0.3, 0.7, 1.0], dtype=torch.float64)
    r = torch.tensor([0.1, 0.45, 0.0, 0.29, 0.69, 0.0], dtype=torch.float64)
    u, target = meanflow_target(lambda z_, r_, t_: exact_u(z_, _bcast(r_), _bcast(t_)), z, r, t,
                                marginal_velocity(z, _bcast(t)))
    assert torch.allclose(target, u, atol=1e-10)
    # and u(z, t, t) = v(z, t): the average over a vanishing interval
    assert torch.allclose(exact_u(z, _bcast(t - 1e-7), _bcast(t)), marginal_velocity(z, _bcast(t)), atol=1e-5)


@pytest.mark.parametrize("r,t", [(0.0, 1.0), (0.2, 0.6)])
def test_the_conditional_target_regresses_onto_the_average_velocity(r, t):
    """With the conditional velocity eps - x0 as tangent (what training sees), E[u_tgt | z_t] = u(z_t, r, t): least
    squares of u_tgt on (1, z) over 200,000 draws recovers u's intercept and slope (u is linear in z here)."""
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = MU + VAR**0.5 * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    tt, rr = torch.full((n,), t, dtype=torch.float64), torch.full((n,), r, dtype=torch.float64)
    z = (1 - t) * x0 + t * eps
    _, target = meanflow_target(lambda z_, r_, t_: exact_u(z_, _bcast(r_), _bcast(t_)), z, rr, tt, eps - x0)
    A = torch.stack([torch.ones(n, dtype=torch.float64), z.flatten()], 1)
    coef = torch.linalg.lstsq(A, target.flatten()[:, None]).solution.flatten()
    zz = torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1)
    u0, u1 = exact_u(zz, torch.tensor(r, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)).flatten()
    assert abs(float(coef[0]) - float(u0)) < 0.01 and abs(float(coef[1]) - float(u1 - u0)) < 0.01


def test_jvp_through_the_unet_matches_finite_differences():
    """The total derivative d/dt u = v d_z u + d_t u of a MeanFlow U-Net (math attention under forward mode)."""
    torch.manual_seed(0)
    net = build("meanflow-digits", ["model.ch=8", "model.ch_mult=[1,2]", "model.norm_groups=2"]).net.double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    z, v = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t, r = torch.tensor([0.8, 0.5, 0.3], dtype=torch.float64), torch.tensor([0.1, 0.2, 0.0], dtype=torch.float64)

    def u_fn(z_, r_, t_):
        return net(z_, 1000 * t_, gap=1000 * (t_ - r_))

    u, target = meanflow_target(u_fn, z, r, t, v)
    h = 1e-6
    with torch.no_grad():
        dudt = (u_fn(z + h * v, r, t + h) - u_fn(z - h * v, r, t - h)) / (2 * h)
    assert torch.allclose(u, u_fn(z, r, t))
    expected = v - _bcast(t - r) * dudt
    assert float((target - expected).abs().max()) < 1e-6 * float(expected.abs().max())


def test_with_r_equal_t_the_loss_is_flow_matching():
    """u(z, t, t) is the plain velocity: the denoiser's view of a MeanFlow net, and its loss at r = t with p = 0 is the
    flow-matching loss (summed over pixels rather than averaged)."""
    torch.manual_seed(1)
    d = build("meanflow-digits", ["model.ch=8", "model.ch_mult=[1,2]", "model.norm_groups=2"])
    torch.nn.init.normal_(d.net.conv_out.weight, std=0.1)
    x0, eps = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    levels = torch.tensor([3.0, 250.0, 600.5, 998.0], dtype=torch.float64)
    tau = d.process.tau(levels)
    x_t = d.process.q_sample(x0, levels, eps)
    assert torch.allclose(d.raw(x_t, levels), average_velocity(d, x_t, tau, tau), atol=1e-6)
    mf = meanflow_loss(d.net, x0, tau, tau, eps, power=0.0)
    assert torch.allclose(mf, 64 * fm_loss(d, x0, levels, eps), rtol=1e-4)
    # the adaptive weight (p = 1) turns each image's loss into ||delta||^2 / (||delta||^2 + c), with the weight's
    # gradient stopped
    w = meanflow_loss(d.net, x0, tau, tau, eps, power=1.0)
    assert torch.allclose(w, mf / (mf + 1e-3), rtol=1e-5)


def test_one_jump_of_the_exact_average_velocity_samples_the_data():
    """MeanFlow's sampler on the closed-form u: one step maps z_1 ~ N(0, 1) to N(MU, VAR) exactly; two steps too."""
    d = Denoiser(ExactMeanFlowNet(), FlowProcess.from_levels(1000), output="velocity", image_shape=(1, 4, 4))
    for steps in (1, 2):
        x = sample(d, "meanflow", (500, 1, 4, 4), ImageRNG(3, range(500)), steps=steps)
        assert abs(float(x.mean()) - MU) < 0.02 and abs(float(x.var()) - VAR) < 0.01, steps
    z = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    x = sample(d, "meanflow", (8, 1, 4, 4), ImageRNG(0, range(8)), steps=1, x_T=z)
    assert torch.allclose(x, MU + VAR**0.5 * z, atol=1e-6)


def test_meanflow_times():
    """(t, r): r <= t, a fraction ``ratio`` with r < t, t the larger of two logit-normal draws (CDF F(t)^2)."""
    g = torch.Generator().manual_seed(5)
    t, r = draw_times(50_000, g, "cpu", 0.25, (-0.4, 1.0))
    assert bool((r <= t).all()) and abs(float((r < t).double().mean()) - 0.25) < 0.01
    grid = torch.tensor([0.2, 0.4, 0.5, 0.6, 0.8], dtype=torch.float64)
    cdf = 0.5 * (1 + torch.erf((torch.logit(grid) + 0.4) / math.sqrt(2)))
    emp = (t[:, None] <= grid[None]).double().mean(0)
    assert float((emp - cdf**2).abs().max()) < 0.01
    t_u, r_u = draw_times(50_000, g, "cpu", 1.0, None)
    assert abs(float(t_u.mean()) - 2 / 3) < 0.01 and abs(float(r_u.mean()) - 1 / 3) < 0.01  # max / min of uniforms


@pytest.mark.parametrize("overrides,match", [
    (["model.mean_flow=false"], "training.loss: meanflow trains the average velocity"),
    (["training.t_sampling=mode"], "training.t_sampling: MeanFlow draws"),
    (["training.meanflow_ratio=1.5"], "training.meanflow_ratio"),
    (["training.adaptive_p=-1"], "training.adaptive_p"),
    (["model.output=eps"], "model.mean_flow: the average velocity"),
])
def test_meanflow_refuses_what_it_cannot_do(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("meanflow-digits", overrides)
    with pytest.raises(ConfigError, match="model.mean_flow"):
        load_config("ddpm-digits", ["model.mean_flow=true"])


def test_average_velocity_and_the_sampler_refuse_bad_times_and_plain_flows():
    d = build("meanflow-digits", ["model.ch=8", "model.ch_mult=[1,2]", "model.norm_groups=2"])
    z = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="0 <= r <= t <= 1"):
        average_velocity(d, z, 0.6, 0.4)
    with pytest.raises(ValueError, match="decrease from 1 to 0"):
        sample(d, "meanflow", (2, 1, 8, 8), ImageRNG(0, range(2)), times=torch.tensor([1.0, 0.7, 0.8, 0.0]))
    plain = build("fm-digits", ["model.ch=8", "model.ch_mult=[1,2]", "model.norm_groups=2"])
    assert unhonoured(plain, "meanflow")[0] == "sampler"
    with pytest.raises(ValueError, match="MeanFlow"):
        average_velocity(plain, z, 0.0, 1.0)
    assert unhonoured(d, "meanflow", steps=2) is None
