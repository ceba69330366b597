"""VDM (Kingma et al. 2021): the learned monotone schedule, the continuous- and discrete-time diffusion terms against
their closed forms on Gaussian data, the variance gradient of the schedule's shape, DDPM's chain and bound recovered
from gamma, and a learned-schedule run trained, measured and coded."""

import math

import pytest
import torch

from scorekit.evaluation.likelihood import vlb_bpd
from scorekit.nets.vdm import FourierInput, MonotoneGamma
from scorekit.processes import VPProcess
from scorekit.processes.vdm import TableGamma, gamma_of_process, vp_from_gamma
from scorekit.rng import ImageRNG
from scorekit.toy import GaussianMixture, exact_denoiser
from scorekit.training.vdm import diffusion_nats, low_discrepancy, prior_nats, vdm_loss

M, S, D = 0.2, 0.5, 4


def _closed_form_diffusion(g0: float, g1: float) -> float:
    """0.5 D int_{g0}^{g1} v / (v + e^g) dg for x ~ N(M, v): E||eps - E[eps | z]||^2 = D v / (v + e^gamma)."""
    v = S * S
    f = lambda g: g - math.log(v + math.exp(g))  # noqa: E731
    return 0.5 * D * (f(g1) - f(g0))


def _exact(T: int = 200):
    process = VPProcess.from_schedule("linear", T, 1e-4, 0.05)
    return exact_denoiser(GaussianMixture.gaussian(M, S, D), process), process


def test_monotone_gamma_has_its_endpoints_and_its_written_slope():
    g = MonotoneGamma(-10.0, 4.0, features=64)
    t = torch.linspace(0, 1, 201, requires_grad=True)
    value, slope, _ = g.value_and_slope(t)
    assert value[0].item() == pytest.approx(-10.0, abs=1e-5) and value[-1].item() == pytest.approx(4.0, abs=1e-5)
    assert bool(torch.all(value[1:] > value[:-1])) and bool(torch.all(slope > 0))
    (autograd,) = torch.autograd.grad(value.sum(), t)
    assert torch.allclose(slope, autograd, rtol=1e-4, atol=1e-4)


def test_ddpm_chain_and_bound_come_back_from_its_gamma():
    """gamma_i = log((1 - abar_i) / abar_i) of DDPM's linear schedule gives back its betas, and the discrete-T bound
    of the chain built from gamma (fixed to that schedule) is today's variational bound, term by term."""
    d, process = _exact(100)
    back = vp_from_gamma(gamma_of_process(process))
    assert torch.allclose(back.betas, process.betas, rtol=1e-9, atol=1e-15)
    table = TableGamma(process)
    t = torch.linspace(0, 1, 100, dtype=torch.float64)
    assert torch.allclose(table(t), gamma_of_process(process), atol=1e-9)
    x = M + S * torch.randn(16, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x.clamp(-1, 1)
    from scorekit.model.denoiser import Denoiser

    via_gamma = Denoiser(d.net, vp_from_gamma(table(t)), output="eps", variance="fixedlarge")
    today, vdm = vlb_bpd(d, x, ImageRNG(3, 16)), vlb_bpd(via_gamma, x, ImageRNG(3, 16))
    assert torch.allclose(today["terms"], vdm["terms"], rtol=1e-7, atol=1e-9)
    assert torch.allclose(today["total"], vdm["total"], rtol=1e-8)


@pytest.mark.parametrize("steps", [0, 20])
def test_diffusion_term_on_gaussian_data_is_its_closed_form(steps):
    """The exact denoiser of N(M, S^2) data under DDPM's linear schedule read as gamma(t): the diffusion term averaged
    over 262144 low-discrepancy times and fresh noise equals 0.5 D int v / (v + e^gamma) dgamma in continuous time and
    T'/2 sum_i (e^(g_i - g_(i-1)) - 1) D v / (v + e^g_i) / T' on T' = 20 steps, within 4 standard errors of the
    estimate (which is itself under 2% of the value)."""
    d, process = _exact(200)
    g = torch.Generator().manual_seed(1)
    n = 262144
    x = M + S * torch.randn(n, D, generator=g, dtype=torch.float64)
    eps = torch.randn(n, D, generator=g, dtype=torch.float64)
    t = low_discrepancy(torch.rand((), generator=g, dtype=torch.float64), n)
    nats, shape = diffusion_nats(d, x, t, eps, steps)
    gam = gamma_of_process(process)
    if steps:
        table = TableGamma(process)
        gi = table(torch.arange(steps + 1, dtype=torch.float64) / steps)
        v = S * S
        want = 0.5 * sum(float(torch.expm1(gi[i] - gi[i - 1])) * D * v / (v + math.exp(float(gi[i])))
                         for i in range(1, steps + 1))
    else:
        want = _closed_form_diffusion(float(gam[0]), float(gam[-1]))
    se = nats.std().item() / math.sqrt(n)
    assert shape == () and abs(nats.mean().item() - want) < 4 * se and se < 0.02 * want, (nats.mean().item(), want, se)


def test_prior_term_is_the_gaussian_kl():
    x = torch.randn(3, 5, dtype=torch.float64)
    g1 = torch.tensor(2.5, dtype=torch.float64)
    a2, s2 = torch.sigmoid(-g1), torch.sigmoid(g1)
    kl = 0.5 * (s2 + a2 * x**2 - 1 - torch.log(s2)).sum(1)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(a2.sqrt() * x, s2.sqrt()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(prior_nats(x, g1), ref) and torch.allclose(kl, ref)


def _tiny_vdm(tmp_path=None, steps: int = 0, fourier=(3,)):
    from scorekit.config import load_config
    from scorekit.model.factory import build_denoiser

    cfg = load_config("vdm-digits", ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[]",
                                     "process.num_timesteps=20", f"training.vdm_steps={steps}",
                                     f"model.fourier={list(fourier)}"])
    return cfg, build_denoiser(cfg)


@pytest.mark.parametrize("steps", [0, 5], ids=["continuous", "discrete"])
def test_the_schedule_shape_learns_the_bound_variance_and_its_endpoints_the_bound(steps):
    """With the variance gradient, the shape's parameters receive d mean(L^2) and the endpoints and the network
    d mean(L) (VDM Appendix I.2), compared with autograd on the two objectives separately; in discrete time both
    ends of a step, gamma(t_i) and gamma(t_i - 1/T'), carry the shape (before the fix only the first was hooked)."""
    from scorekit.data import digits
    from scorekit.data.pipeline import preprocess

    _, d = _tiny_vdm(steps=steps)
    d.train()
    x = preprocess(digits("train").images[:8], d.data_range)
    g = torch.Generator().manual_seed(0)
    eps, t = torch.randn(x.shape, generator=g), torch.rand(8, generator=g, dtype=torch.float64)
    gamma = d.net.gamma
    shape_params = [gamma.w1, gamma.l2.weight, gamma.l2.bias, gamma.w3]
    ends = [gamma.gamma_0, gamma.gamma_1]
    some_net = next(d.net.net.parameters())
    loss = vdm_loss(d, x, t, eps, steps)
    grads = torch.autograd.grad(loss.mean(), shape_params + ends + [some_net])
    plain = vdm_loss(d, x, t, eps, steps, variance_gradient=False)
    want_shape = torch.autograd.grad((plain**2).mean(), shape_params, retain_graph=True)
    want_rest = torch.autograd.grad(plain.mean(), ends + [some_net])
    for got, want in zip(grads, [*want_shape, *want_rest]):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max())), (got - want).abs().max()


def test_fourier_features_are_sines_and_cosines_of_the_input():
    x = torch.tensor([[[[0.25]]]])
    out = FourierInput([1, 2])(x)
    want = [0.25, math.sin(2 * math.pi * 0.25), math.sin(4 * math.pi * 0.25), math.cos(2 * math.pi * 0.25),
            math.cos(4 * math.pi * 0.25)]
    assert torch.allclose(out.flatten(), torch.tensor(want), atol=1e-6)


def test_a_learned_schedule_run_trains_resumes_measures_and_codes(tmp_path):
    """vdm-digits (tiny): the learned gamma moves and is saved with the weights; the loaded run's chain is its
    gamma on T levels; a resumed run continues bit for bit; the bound is finite; the codec's round trip is exact."""
    from scorekit.codec import compress, decompress
    from scorekit.data import digits
    from scorekit.processes.vdm import learned_process
    from scorekit.run import load
    from scorekit.training.loop import train_run

    over = ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[]", "process.num_timesteps=12",
            "training.steps=6", "training.batch_size=16", "training.checkpoint_every=3", "training.test_every=3",
            "training.test_batch=16", "sampling.steps=4", "sampling.num_samples=4", "eval.bpd_images=4",
            "eval.proxy_samples=0"]
    train_run("vdm-digits", tmp_path / "a", over, device="cpu", progress=False)
    d = load(tmp_path / "a")
    g = d.net.gamma
    assert float(g.gamma_0.detach()) != pytest.approx(-13.3, abs=1e-6)
    assert torch.allclose(d.process.alphas_cumprod, learned_process(g, 12).alphas_cumprod)
    train_run("vdm-digits", tmp_path / "b", [*over[:4], "training.steps=3", *over[5:]], device="cpu", progress=False)
    train_run(tmp_path / "b", None, ["training.steps=6"], device="cpu", progress=False)
    b = load(tmp_path / "b")
    for (name, p), q in zip(d.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    pytest.importorskip("constriction")
    x = digits("test").images[:6]
    data, rates = compress(d, x)
    assert torch.equal(decompress(d, data), x) and math.isfinite(rates["bits_per_dim"])


def test_vdm_settings_are_checked():
    from scorekit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="process.schedule: learned"):
        load_config("ddpm-digits", ["process.schedule=learned"])
    with pytest.raises(ConfigError, match="training.loss: vdm"):
        load_config("vdm-digits", ["model.variance=learned_range"])
    with pytest.raises(ConfigError, match="model.fourier"):
        load_config("vdm-digits", ["model.fourier=[20]"])
    with pytest.raises(ConfigError, match="process.gamma_min"):
        load_config("vdm-digits", ["process.gamma_min=6"])
    for output in ("x0", "v", "score"):  # converted with the start-up tables, not the learned gamma
        with pytest.raises(ConfigError, match="model.output"):
            load_config("vdm-digits", [f"model.output={output}"])


def test_export_refuses_a_learned_schedule_naming_it():
    from scorekit.config import load_config
    from scorekit.interop.diffusers import export_refusal

    assert "process.schedule=learned" in export_refusal(load_config("vdm-digits"))
    assert "model.fourier" in export_refusal(load_config("ddpm-digits", ["model.fourier=[3]"]))


def test_vdm_is_refused_on_sixteen_bit_data():
    from scorekit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="up to 8 bits"):
        load_config("vdm-digits", ["data.detect_values=false", "data.bits=16", "data.dataset=folder", "data.path=x"])
