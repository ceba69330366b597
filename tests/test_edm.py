"""EDM's preconditioning and loss (Karras et al. 2022, Table 1, Eq. 2 and 8) against closed forms and an exact
denoiser."""

import math

import pytest
import torch
from torch import nn

from scorekit.model.denoiser import Denoiser
from scorekit.model.precond import EDM_SIGMA_MAX, EDM_SIGMA_MIN, edm_coefficients, edm_weight
from scorekit.processes import VPProcess
from scorekit.training.losses import edm_loss

SIGMAS = [0.002, 0.05, 0.3, 0.5, 1.0, 7.0, 80.0]


@pytest.mark.parametrize("sd", [0.5, 0.25])
def test_coefficients_are_the_papers_closed_forms(sd):
    for s in SIGMAS:
        c_skip, c_out, c_in, c_noise = (float(v) for v in edm_coefficients(torch.tensor(s, dtype=torch.float64), sd))
        assert c_skip == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-12)
        assert c_out == pytest.approx(s * sd / math.sqrt(sd**2 + s**2), rel=1e-12)
        assert c_in == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_noise == pytest.approx(math.log(s) / 4, rel=1e-12)
        # their purpose (EDM App. B.6): F's input and F's training target have unit variance when Var x0 = sd^2
        assert c_in**2 * (sd**2 + s**2) == pytest.approx(1.0, rel=1e-12)
        assert ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2 == pytest.approx(1.0, rel=1e-12)
        # and lambda makes the effective weight on F's own error one (Eq. 8)
        assert float(edm_weight(torch.tensor(s, dtype=torch.float64), sd)) * c_out**2 == pytest.approx(1.0, rel=1e-12)


POINTS = torch.tensor([[-0.8, 0.3, 0.5, -0.2], [0.6, -0.5, 0.1, 0.9], [0.2, 0.7, -0.9, 0.0]]).reshape(3, 1, 2, 2)


def exact_D(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma n = x] for x0 uniform on POINTS (a mixture of point masses)."""
    d2 = ((x[:, None] - POINTS[None].to(x)) ** 2).flatten(2).sum(2)
    w = torch.softmax(-d2 / (2 * sigma.to(x)[:, None] ** 2), dim=1)
    return torch.einsum("bk,kchw->bchw", w, POINTS.to(x))


class SolvedF(nn.Module):
    """The network F that makes the preconditioned model exact: F = (D* - c_skip x) / c_out, x = input / c_in."""

    def __init__(self, sd):
        super().__init__()
        self.sd = sd
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_in, c_noise, y=None):
        sigma = torch.exp(4 * c_noise.double())
        c_skip, c_out, c_in, _ = edm_coefficients(sigma, self.sd)
        x = x_in.double() / c_in[:, None, None, None]
        return ((exact_D(x, sigma) - c_skip[:, None, None, None] * x) / c_out[:, None, None, None]).to(x_in.dtype)


def _model(sd=0.5):
    d = Denoiser(SolvedF(sd), VPProcess.from_schedule("linear", 1000), output="x0", image_shape=(1, 2, 2),
                 precond="edm", sigma_data=sd)
    d.config = None
    return d


def test_the_wrapped_exact_denoiser_returns_the_exact_D_in_both_views():
    d = _model()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64) * 2
    for s in SIGMAS:  # sigma-space view, beyond the VP tables' range too (0.002 < 0.01, 80)
        sig = torch.full((5,), s, dtype=torch.float64)
        torch.testing.assert_close(d.denoise(x, s), exact_D(x, sig), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(d.edm(x, sig), exact_D(x, sig), rtol=1e-9, atol=1e-9)
    p = d.process
    for t in [0, 10, 300, 999]:  # discrete view: x0 at level t is D(x_t / a_t; s_t / a_t)
        tt = torch.full((5,), t)
        a, s = p.alpha_s(tt)
        x_t = x * a[0]
        torch.testing.assert_close(d(x_t, tt).x0, exact_D(x_t / a[0], s / a), rtol=1e-9, atol=1e-9)
    assert (d.sigma_min, d.sigma_max) == (EDM_SIGMA_MIN, EDM_SIGMA_MAX)


def test_heun_from_80_to_0_002_on_the_exact_denoiser_lands_on_the_data():
    from scorekit.rng import ImageRNG
    from scorekit.samplers import sample

    d = _model()
    x = sample(d, "heun", (64, 1, 2, 2), ImageRNG(1, 64), steps=18, schedule="karras")
    dist = ((x.double()[:, None] - POINTS[None].double()) ** 2).flatten(2).sum(2).sqrt().min(1).values
    assert float(dist.max()) < 0.02
    nearest = ((x.double()[:, None] - POINTS[None].double()) ** 2).flatten(2).sum(2).argmin(1)
    assert len(set(nearest.tolist())) == 3  # every point is reached


class TinyF(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x, c_noise, y=None):
        return self.conv(x) * (1 + c_noise[:, None, None, None])


def test_the_loss_weights_Fs_own_error_by_one():
    """lambda(sigma) ||D - x0||^2 == ||F - F_target||^2 with F_target = (x0 - c_skip x) / c_out (Eq. 8)."""
    d = Denoiser(TinyF().double(), VPProcess.from_schedule("linear", 1000), output="x0", precond="edm", sigma_data=0.5)
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1
    n = torch.randn(6, 1, 4, 4, generator=g)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(6, generator=g, dtype=torch.float64))
    loss = edm_loss(d, x0.double(), sigma, n.double(), 0.5)
    c_skip, c_out, c_in, c_noise = (v[:, None, None, None] for v in edm_coefficients(sigma, 0.5))
    x = x0.double() + sigma[:, None, None, None] * n.double()
    F = d.net(c_in * x, c_noise[:, 0, 0, 0])
    expected = ((F - (x0.double() - c_skip * x) / c_out) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_training_noise_levels_are_log_normal():
    from scorekit.config import load_config
    from scorekit.training.draws import edm_sigmas

    cfg = load_config("edm-digits", ["training.p_mean=-0.7", "training.p_std=0.9"])
    ln = edm_sigmas(cfg, 200_000, torch.Generator().manual_seed(0), "cpu").log()
    assert float(ln.mean()) == pytest.approx(-0.7, abs=0.01)
    assert float(ln.std()) == pytest.approx(0.9, abs=0.01)


def test_edm_configuration_rules():
    from scorekit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="trains with training.loss=edm or a few-step objective"):
        load_config("ddpm-digits", ["model.precond=edm"])
    with pytest.raises(ConfigError, match="model.output=x0"):
        load_config("edm-digits", ["model.output=eps"])
    with pytest.raises(ConfigError, match="sigma_data"):
        load_config("edm-digits", ["model.sigma_data=0"])
    assert load_config("edm-digits", ["model.arch=ncsnv2", "model.ngf=8"]).model.precond == "edm"  # any network


def test_edm_cifar10_preset_is_edms_table_where_expressible():
    from scorekit.config import load_config

    cfg = load_config("edm-cifar10")
    m, t = cfg.model, cfg.training
    assert (m.precond, m.sigma_data, t.p_mean, t.p_std, t.lr, t.batch_size) == ("edm", 0.5, -1.2, 1.2, 0.001, 512)
    assert t.steps * t.batch_size == pytest.approx(200e6, rel=1e-3)  # 200 Mimg
    assert t.ema_decay == pytest.approx(0.5 ** (512 / 500_000), abs=1e-5)  # half-life 0.5 Mimg
    assert (cfg.data.augment, m.dropout, cfg.sampling.sampler, cfg.sampling.steps) == (0.12, 0.13, "heun", 18)
