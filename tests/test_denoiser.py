import pytest
import torch

from scorekit.model.denoiser import Denoiser, Output
from scorekit.processes import VEProcess, VPProcess
from scorekit.toy import GaussianMixture, exact_denoiser

PROCESSES = {"vp": VPProcess.from_schedule("linear", 1000), "ve": VEProcess.from_ladder(20.0, 0.01, 50)}


@pytest.mark.parametrize("kind", ["vp", "ve"])
@pytest.mark.parametrize("output", ["eps", "x0", "score", "sigma_score"])
def test_every_output_type_gives_the_same_prediction(kind, output):
    """A net that outputs the truth in each parameterization (written out here from x_t = a x0 + s eps)
    leads the denoiser to the same x0, eps and score."""
    p = PROCESSES[kind]
    x0 = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 17, p.num_levels - 1])
    a = p.a[t].reshape(-1, 1, 1, 1)
    s = p.s[t].reshape(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    truth = {"eps": eps, "x0": x0, "score": -eps / s, "sigma_score": -eps}[output]
    d = Denoiser(lambda x, label: truth, p, output=output)  # type: ignore[arg-type]
    d.net = type("N", (torch.nn.Module,), {"forward": lambda self, x, label: truth})()
    pred = d(x_t, t)
    assert torch.allclose(pred.x0, x0, atol=1e-8)
    assert torch.allclose(pred.eps, eps, atol=1e-8)
    assert torch.allclose(d.score(x_t, t), -eps / s, rtol=1e-8)


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_sigma_space_denoiser_is_the_closed_form_posterior_mean(kind):
    """D(x_hat; sigma) for N(m, v) data is m + v/(v + sigma^2) (x_hat - m), at any sigma between levels."""
    p = PROCESSES[kind]
    m, v = 0.2, 0.3**2
    d = exact_denoiser(GaussianMixture.gaussian(m, v**0.5, 4), p, (1, 2, 2))
    x_hat = torch.randn(5, 1, 2, 2, dtype=torch.float64) * 3
    for sigma in [p.sigma_min, 0.37, 1.5, p.sigma_max * 0.9]:
        got = d.denoise(x_hat, sigma)
        assert torch.allclose(got, m + v / (v + sigma**2) * (x_hat - m), atol=1e-9)


def test_net_receives_integer_timesteps_for_ddpm_and_authors_index_for_ncsn():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, label):
            seen.append(label.clone())
            return torch.zeros_like(x)

    Denoiser(Spy(), PROCESSES["vp"])(torch.zeros(2, 1, 1, 1), torch.tensor([0, 999]))
    Denoiser(Spy(), PROCESSES["ve"], output="sigma_score")(torch.zeros(2, 1, 1, 1), torch.tensor([0, 49]))
    assert seen[0].tolist() == [0.0, 999.0]
    assert seen[1].tolist() == [49.0, 0.0]  # t = 0 (sigma_L) is the authors' label L - 1


def test_respaced_denoiser_calls_the_net_at_the_original_timesteps():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, label):
            seen.append(label.tolist())
            return torch.zeros_like(x)

    d = Denoiser(Spy(), PROCESSES["vp"]).respaced(torch.tensor([0, 499, 999]))
    assert d.process.num_levels == 3
    d(torch.zeros(3, 1, 1, 1), torch.tensor([0, 1, 2]))
    assert seen[-1] == [0.0, 499.0, 999.0]
    assert torch.allclose(d.process.alphas_cumprod, PROCESSES["vp"].alphas_cumprod[[0, 499, 999]])


def test_clip_keeps_x0_in_the_data_range():
    p = PROCESSES["vp"]
    d = Denoiser(type("N", (torch.nn.Module,), {"forward": lambda self, x, l: torch.full_like(x, 5.0)})(), p,
                 output=Output.X0)
    pred = d(torch.zeros(1, 1, 1, 1), torch.tensor([10]), clip=True)
    assert pred.x0.item() == 1.0


def test_mean_prediction_keeps_its_mean_when_x0_is_clipped():
    """The authors' 'xprev' parameterization (diffusion_utils_2.p_mean_variance): the reverse mean is the network
    output itself; clipping changes only the reported x0 (recomputing the mean from a clipped x0 was a bug)."""
    from scorekit.model.denoiser import Denoiser
    from scorekit.processes import VPProcess

    class Net(torch.nn.Module):
        def forward(self, x, label):
            return 3.0 * torch.ones_like(x)  # a mean whose implied x0 lies far outside [-1, 1]

    d = Denoiser(Net(), VPProcess.from_schedule("linear", 50), output="mean")
    x = torch.zeros(2, 1, 2, 2)
    t = torch.tensor([1, 30])
    mean, _, x0 = d.p_mean_variance(x, t, clip=True)
    assert torch.equal(mean, torch.full_like(x, 3.0))
    assert float(x0.abs().max()) <= 1.0
