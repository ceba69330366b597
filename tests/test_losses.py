import math

import pytest
import torch

from scorekit.evaluation.likelihood import discretized_gaussian_log_likelihood
from scorekit.processes import VPProcess
from scorekit.toy import GaussianMixture, exact_denoiser
from scorekit.training.losses import ddpm_loss

BINS = torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.9, -5.0), (-1.2, 0.5), (0.3, -9.0), (2.5, -1.0)])
def test_discretized_decoder_sums_to_one(mean, log_scale):
    x = BINS[:, None]
    lp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_decoder_is_the_gaussian_mass_of_each_bin():
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    mean, std = 0.1, 0.05
    for k in (0, 100, 140, 255):
        x = BINS[k].item()
        lower = -math.inf if k == 0 else (x - 1 / 255 - mean) / std
        upper = math.inf if k == 255 else (x + 1 / 255 - mean) / std
        p = (phi(upper) if upper != math.inf else 1.0) - (phi(lower) if lower != -math.inf else 0.0)
        got = discretized_gaussian_log_likelihood(torch.tensor([x], dtype=torch.float64), torch.tensor([mean]),
                                                  torch.tensor([math.log(std)], dtype=torch.float64)).exp().item()
        assert got == pytest.approx(max(p, 1e-12), rel=1e-6)


def test_decoder_on_a_zero_one_range_equals_the_rescaled_one():
    x = torch.arange(256, dtype=torch.float64) / 255
    a = discretized_gaussian_log_likelihood(x, torch.full_like(x, 0.4), torch.full_like(x, math.log(0.02)), (0, 1))
    b = discretized_gaussian_log_likelihood(2 * x - 1, torch.full_like(x, -0.2), torch.full_like(x, math.log(0.04)))
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("output", ["eps", "x0", "mean"])
def test_mse_losses_vanish_for_the_true_target(output):
    """An oracle that outputs the regression target of each parameterization has zero loss."""
    p = VPProcess.from_schedule("linear", 100)
    x0 = torch.rand(4, 1, 2, 2, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 10, 50, 99])
    x_t = p.q_sample(x0, t, eps)

    class Oracle(torch.nn.Module):
        def forward(self, x, label):
            if output == "eps":
                return eps
            if output == "x0":
                return x0
            a = p.posterior_mean_coef1[t].reshape(-1, 1, 1, 1)
            b = p.posterior_mean_coef2[t].reshape(-1, 1, 1, 1)
            return a * x0 + b * x_t  # Eq. 7 written out independently

    from scorekit.model.denoiser import Denoiser

    d = Denoiser(Oracle(), p, output=output)
    assert ddpm_loss(d, x0, t, eps).abs().max().item() < 1e-20
    pred = d(x_t, t)
    assert torch.allclose(pred.x0, x0, atol=1e-9) and torch.allclose(pred.eps, eps, atol=1e-6)
    wrong = Denoiser(Oracle(), p, output="x0" if output != "x0" else "eps")
    assert ddpm_loss(wrong, x0, t, eps)[1:].min().item() > 1e-3  # at t = 0 the posterior mean is x0


def test_kl_loss_is_smallest_for_the_exact_denoiser():
    """The bound's terms are minimised by the true posterior mean: a perturbed eps-predictor does worse."""
    p = VPProcess.from_schedule("linear", 1000)
    mix = GaussianMixture.gaussian(0.1, 0.3, 16)
    exact = exact_denoiser(mix, p, (1, 4, 4))
    g = torch.Generator().manual_seed(1)
    x0 = mix.sample(512, g)[0].float().reshape(-1, 1, 4, 4)
    t = torch.randint(1, 1000, (512,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    base = ddpm_loss(exact, x0, t, eps, "kl").mean()

    class Biased(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, label):
            return self.net(x, label) + 0.05

    from scorekit.model.denoiser import Denoiser

    worse = ddpm_loss(Denoiser(Biased(exact.net), p), x0, t, eps, "kl").mean()
    assert worse > base


def test_learned_diagonal_variance_is_the_networks_log_variance_and_the_bound_trains_it():
    """DDPM's Table 2 'learned diagonal Sigma': the extra output channels are log sigma_t^2 itself, and the
    true bound's KL term is the closed form between the posterior and N(mean, exp(log_var))."""
    from scorekit.evaluation.likelihood import vb_terms_bpd
    from scorekit.model.denoiser import Denoiser
    from scorekit.processes.base import normal_kl

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.log_var = torch.nn.Parameter(torch.tensor(-4.0))

        def forward(self, x, label):
            return torch.cat([torch.zeros_like(x), self.log_var.expand_as(x)], dim=1)

    process = VPProcess.from_schedule("linear", 20)
    d = Denoiser(Net(), process, output="eps", variance="learned")
    x0 = torch.rand(3, 1, 2, 2) * 2 - 1
    t = torch.tensor([3, 7, 12])
    x_t = process.q_sample(x0, t, torch.randn_like(x0))
    mean, log_var, _ = d.p_mean_variance(x_t, t)
    assert torch.allclose(log_var, torch.full_like(log_var, -4.0))
    true_mean, _, true_log_var = process.q_posterior(x0, x_t, t)
    kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / math.log(2)
    assert torch.allclose(vb_terms_bpd(d, x0, x_t, t)[0], kl, atol=1e-6)
    loss = ddpm_loss(d, x0, t, torch.randn_like(x0), "kl").mean()
    loss.backward()
    assert d.net.log_var.grad is not None and d.net.log_var.grad.abs() > 0
