"""The NCSN / NCSNv2 family: networks, score matching, annealed Langevin, techniques, presets."""

import pytest
import torch

from scorekit.config import load_config
from scorekit.model.denoiser import Denoiser
from scorekit.nets.refine_layers import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus, embedding_at
from scorekit.nets.refinenet import RefineNet
from scorekit.processes import VEProcess
from scorekit.processes.techniques import (
    gamma_for,
    max_pairwise_distance,
    step_size_for,
    technique2_value,
    technique4_value,
)
from scorekit.rng import ImageRNG
from scorekit.samplers.langevin import sample_langevin, sample_langevin_inpaint, sample_langevin_interpolation
from scorekit.toy import GaussianMixture, exact_denoiser, kde_denoiser, langevin_toy
from scorekit.training.losses import dsm_loss


@pytest.mark.parametrize("preset,count", [("ncsn-cifar10", 30_117_635), ("ncsn-celeba", 30_117_635),
                                          ("ncsnv2-cifar10", 29_694_083),
                                          ("ncsnv2-lsun-church", 83_445_379), ("ncsnv2-ffhq", 94_132_611)])
def test_parameter_counts_at_the_preset_settings(preset, count):
    from scorekit.model.factory import build_net

    assert sum(p.numel() for p in build_net(load_config(preset)).parameters()) == count


def test_instance_norm_plus_formula():
    norm = InstanceNorm2dPlus(4)
    x = torch.randn(2, 4, 5, 5) * 3 + 1
    mu = x.mean(dim=(2, 3))
    inorm = (x - mu[..., None, None]) / torch.sqrt(x.var(dim=(2, 3), unbiased=False)[..., None, None] + 1e-5)
    z = (mu - mu.mean(1, keepdim=True)) / torch.sqrt(mu.var(1, keepdim=True) + 1e-5)
    gamma, alpha, beta = (p[:, None, None] for p in (norm.gamma, norm.alpha, norm.beta))
    ref = gamma * (inorm + z[..., None, None] * alpha) + beta
    assert torch.allclose(norm(x), ref, atol=1e-5)


def test_conditional_norm_interpolates_the_embedding_between_levels():
    norm = ConditionalInstanceNorm2dPlus(3, num_classes=5)
    torch.nn.init.normal_(norm.embed.weight)
    x = torch.randn(1, 3, 4, 4)
    a, b = norm(x, torch.tensor([2])), norm(x, torch.tensor([3]))
    assert torch.allclose(norm(x, torch.tensor([2.0])), a)
    w = norm.embed.weight
    assert torch.allclose(embedding_at(w, torch.tensor([2.5, 0.25])), torch.stack([(w[2] + w[3]) / 2,
                                                                                     0.75 * w[0] + 0.25 * w[1]]))
    mid = norm(x, torch.tensor([2.5]))
    assert not torch.allclose(mid, a) and not torch.allclose(mid, b)


def test_networks_map_inputs_to_2x_minus_1_and_v1_uses_its_label():
    v1 = RefineNet("ncsn", 1, 8, 4, 8)
    torch.nn.init.normal_(v1.normalizer.embed.weight)
    x = torch.rand(2, 1, 8, 8)
    assert not torch.allclose(v1(x, torch.tensor([0, 0])), v1(x, torch.tensor([3, 3])))
    v2 = RefineNet("ncsnv2", 1, 8, None, 8)
    assert torch.equal(v2(x, torch.tensor([0, 0])), v2(x, torch.tensor([3, 3])))  # unconditional


def test_dsm_minimiser_is_the_true_noised_score():
    """For Gaussian data the exact score has the lowest DSM loss, and the loss's gradient along a
    perturbation vanishes there (up to Monte Carlo error) while it does not away from it."""
    process = VEProcess.from_ladder(5.0, 0.05, 10)
    exact = exact_denoiser(GaussianMixture.gaussian(0.5, 0.2, 16), process, (1, 4, 4), data_range=(0, 1))

    class Scaled(torch.nn.Module):  # eps_theta = (1 + theta) E[eps | x_t]
        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

        def forward(self, x, label):
            return (1 + self.theta) * exact.net(x, label)

    net = Scaled()
    d = Denoiser(net, process, output="eps", data_range=(0, 1))
    g = torch.Generator().manual_seed(0)
    x0 = (0.5 + 0.2 * torch.randn(20000, 1, 4, 4, generator=g, dtype=torch.float64))
    t = torch.randint(0, 10, (20000,), generator=g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)

    def loss_and_grad(theta):
        net.theta.data.fill_(theta)
        net.zero_grad()
        loss = dsm_loss(d, x0, t, z).mean()
        loss.backward()
        return loss.item(), net.theta.grad.item()

    l0, g0 = loss_and_grad(0.0)
    for theta in (-0.3, 0.3):
        lt, gt = loss_and_grad(theta)
        assert lt > l0
        assert abs(g0) < 0.05 * abs(gt)


def test_annealed_langevin_recovers_the_mixture_weights_and_plain_does_not():
    res = langevin_toy(2000, seed=0, denoise=True)
    assert abs(res["annealed_weight"] - 0.2) < 0.03
    assert abs(res["plain_weight"] - 0.2) > 0.15
    # As in the NCSN experiment there is no final denoising step: the annealed samples follow the data noised
    # at sigma_L = 1, each mode N(mu, (1 + 1) I), std sqrt(2) (ULA's step of 0.1 adds ~1.3%), not shrunk below 1.
    assert res["annealed_std"] == pytest.approx(2 ** 0.5, rel=0.05)
    # NCSNv2's denoising step maps a mode N(mu, 2 I) to E[x0 | x] = mu + (x - mu) / 2: std 1 / sqrt(2)
    assert res["denoised_std"] == pytest.approx(2 ** -0.5, rel=0.05)


def test_langevin_with_the_exact_score_samples_a_gaussian():
    process = VEProcess.from_ladder(3.0, 0.01, 30)
    d = exact_denoiser(GaussianMixture.gaussian(0.4, 0.15, 64), process, (1, 8, 8), data_range=(0, 1))
    x = sample_langevin(d, (200, 1, 8, 8), ImageRNG(0, 200, per_image=False), n_steps_each=20, step_lr=2e-5)
    assert abs(x.mean().item() - 0.4) < 0.01
    assert x.std().item() == pytest.approx(0.15, rel=0.08)


def test_kde_baseline_with_annealed_langevin_returns_training_points():
    """The exact score of the Gaussian-smoothed training set leads annealed Langevin to memorise it."""
    g = torch.Generator().manual_seed(0)
    data = torch.rand(40, 1, 4, 4, generator=g)
    process = VEProcess.from_ladder(2.0, 0.01, 20)
    x = sample_langevin(kde_denoiser(data, process), (30, 1, 4, 4), ImageRNG(1, 30, per_image=False),
                        n_steps_each=10, step_lr=2e-5)
    d = torch.cdist(x.reshape(30, -1).double(), data.reshape(40, -1).double())
    spacing = torch.pdist(data.reshape(40, -1).double()).min()
    assert d.min(1).values.max().item() < 0.05 * spacing.item()


def test_inpainting_keeps_known_pixels_and_interpolation_shapes():
    process = VEProcess.from_ladder(2.0, 0.01, 10)
    d = exact_denoiser(GaussianMixture.gaussian(0.5, 0.2, 16), process, (1, 4, 4), data_range=(0, 1))
    ref = torch.rand(3, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    out = sample_langevin_inpaint(d, ref, mask, ImageRNG(0, 3), n_steps_each=3, step_lr=1e-5)
    assert torch.equal(out[..., :2], ref[..., :2]) and not torch.allclose(out[..., 2:], ref[..., 2:])
    inter = sample_langevin_interpolation(d, 2, 5, ImageRNG(0, 2), n_steps_each=3, step_lr=1e-5)
    assert inter.shape == (10, 1, 4, 4)
    assert (inter[0] - inter[4]).abs().max() > 1e-3  # the two ends use different noise


SPEC = {  # sigma_1, L, D, step_lr, T, technique-4 value (spec/ncsn.md)
    "cifar10": (50, 232, 3 * 32 * 32, 6.2e-6, 5, 1.0555), "celeba": (90, 500, 3 * 64 * 64, 3.3e-6, 5, 1.0314),
    "church": (140, 788, 3 * 64 * 64, 4.9e-6, 4, 1.0247), "bedroom": (190, 1086, 3 * 128 * 128, 1.8e-6, 3, 1.0174),
    "ffhq": (348, 2311, 3 * 256 * 256, 9e-7, 3, 1.0089)}


@pytest.mark.parametrize("name", SPEC)
def test_technique_values_reproduce_the_spec_table(name):
    s1, L, D, eps, T, value = SPEC[name]
    gamma = (s1 / 0.01) ** (1 / (L - 1))
    assert technique4_value(eps, T, gamma, 0.01) == pytest.approx(value, abs=5e-5)
    if name != "church":  # the configs' step sizes are the minimisers of the expression
        assert step_size_for(T, gamma, 0.01) == pytest.approx(eps, rel=0.04)


def test_technique2_on_cifar10():
    gamma = (50 / 0.01) ** (1 / 231)
    assert gamma == pytest.approx(1.03756, abs=1e-5)
    assert technique2_value(gamma, 3072) == pytest.approx(0.57, abs=0.005)
    g = gamma_for(3072)
    assert technique2_value(g, 3072) == pytest.approx(0.5, abs=1e-9) and g > gamma


def test_max_pairwise_distance_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(333, 20, generator=g)
    x[17] = 5.0  # an outlier far from everything
    brute = torch.pdist(x.double()).max().item()
    assert max_pairwise_distance(x, block=64) == pytest.approx(brute, rel=1e-12)


def test_plan_noise_command_on_the_digits(capsys):
    import json

    from scorekit.cli import main
    from scorekit.data import digits

    assert main(["plan-noise", "digits", "--steps-per-level", "10", "--sigma-end", "0.05", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    x = digits("train").images.reshape(1497, -1).double() / 255
    assert plan["sigma_begin"] == pytest.approx(torch.pdist(x).max().item(), rel=1e-12)
    preset = load_config("ncsnv2-digits")
    assert (plan["num_levels"], round(plan["sigma_begin"], 4)) == (preset.process.num_levels,
                                                                    preset.process.sigma_begin)
    assert plan["step_lr"] == pytest.approx(preset.sampling.step_lr, rel=0.01)


def test_ncsnv2_presets_have_the_configs_values():
    c = load_config("ncsnv2-cifar10")
    assert (c.process.sigma_begin, c.process.sigma_end, c.process.num_levels) == (50, 0.01, 232)
    assert (c.training.lr, c.training.batch_size, c.training.steps, c.training.ema_decay) == (1e-4, 128, 300000, 0.999)
    assert (c.sampling.step_lr, c.sampling.n_steps_each, c.sampling.denoise) == (6.2e-6, 5, True)
    assert (c.model.arch, c.data.random_flip, c.data.dequantize) == ("ncsnv2", True, "none")
    v1 = load_config("ncsn-cifar10")
    assert (v1.process.sigma_begin, v1.process.num_levels, v1.training.lr, v1.training.ema_decay) == (1, 10, 1e-3, 0)
    assert (v1.sampling.n_steps_each, v1.sampling.step_lr, v1.sampling.denoise, v1.data.dequantize) == (
        100, 2e-5, False, "uniform")
    f = load_config("ncsnv2-ffhq")
    assert (f.training.batch_size, f.training.adam_eps, f.model.arch, f.process.num_levels) == (
        32, 1e-3, "ncsnv2_deepest", 2311)
    assert load_config("ncsnv2-celeba").data.centre_crop == 140
    # NCSN v1 on CelebA: ermongroup/ncsn's anneal.yml (32x32 after a 140 crop, 200k steps, flips, dequantized)
    cv1 = load_config("ncsn-celeba")
    assert (cv1.data.resolution, cv1.data.centre_crop, cv1.data.random_flip, cv1.data.dequantize) == (
        32, 140, True, "uniform")
    assert (cv1.model.arch, cv1.model.ngf, cv1.process.sigma_begin, cv1.process.num_levels) == ("ncsn", 128, 1, 10)
    assert (cv1.training.lr, cv1.training.steps, cv1.training.ema_decay) == (1e-3, 200000, 0)
    assert (cv1.sampling.n_steps_each, cv1.sampling.step_lr, cv1.sampling.denoise) == (100, 2e-5, False)


@pytest.mark.parametrize("preset,extra", [("ncsnv2-digits", []),
                                          ("ncsnv2-digits", ["model.arch=ncsn", "model.output=score",
                                                             "data.dequantize=uniform", "sampling.denoise=false"])])
def test_train_then_sample_through_the_cli(tmp_path, capsys, preset, extra):
    from scorekit.cli import main

    run = tmp_path / "run"
    assert main(["train", preset, "--out", str(run), "--no-progress", "model.ngf=8", "training.steps=3",
                 "training.batch_size=16", "process.num_levels=5", "sampling.n_steps_each=2",
                 "sampling.num_samples=4", "eval.proxy_samples=0", *extra]) == 0
    assert "sample grid" in capsys.readouterr().out
    assert main(["sample", str(run), "--n", "3", "--no-progress", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "grid.png").is_file()
    assert main(["train", preset, "--out", str(run), "--no-progress", "--no-eval", "training.steps=4"]) == 0
    from scorekit.run import RunDir

    assert RunDir(run).checkpoints()[-1][0] == 4
