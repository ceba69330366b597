"""Any sampler on any model: convergence to the truth with exact denoisers, order of accuracy, DDIM's
properties, the ODE likelihood, NFE counts, per-image seeds, and trained digits models of both families."""

import math

import pytest
import torch

from scorekit.evaluation.likelihood import ode_log_likelihood
from scorekit.processes import FlowProcess, VEProcess, VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import SAMPLERS, sample
from scorekit.samplers.ancestral import sample_ancestral
from scorekit.samplers.ode import ddim_encode, ddim_timesteps, sample_ddim, sample_euler, sample_heun
from scorekit.toy import GaussianMixture, exact_denoiser

MIX = GaussianMixture([0.3, 0.7], [[-0.6, -0.4], [0.5, 0.3]], [[0.04, 0.02], [0.03, 0.05]])
PROCESSES = {"vp": VPProcess.from_schedule("linear", 1000), "ve": VEProcess.from_ladder(20.0, 0.01, 300),
             "flow": FlowProcess.from_levels(1000)}
OUTPUT = {"vp": "eps", "ve": "eps", "flow": "velocity"}  # the flow's exact network gives E[eps - x0 | x_t]
# (few steps, many steps) per sampler; langevin counts Langevin steps per level via n_steps_each
STEPS = {"ancestral": (5, 300), "ddim": (5, 100), "euler": (4, 100), "heun": (3, 40), "rk45": (None, None),
         "dpm2m": (3, 40), "pc": (10, 300), "euler_ancestral": (5, 200), "langevin": (1, 3),
         "edm_stochastic": (3, 40), "dpm2m_sde": (4, 100), "restart": (3, 30), "ipndm": (3, 40), "unipc": (3, 40),
         "dpm3m_sde": (4, 100)}


def _errors(x: torch.Tensor) -> torch.Tensor:
    """|weight error|, |mean error|, Frobenius covariance error against the mixture."""
    f = x.reshape(len(x), -1).double()
    w = (f[:, 0] < 0).double().mean()
    return torch.stack([(w - 0.3).abs(), (f.mean(0) - MIX.mean()).norm(), (torch.cov(f.T) - MIX.covariance()).norm()])


def _run(name, d, steps, n=3000):
    opts = dict(clip_denoised=False, denoise=True)
    if name == "langevin":
        # alpha_i = step_lr (sigma_i / sigma_min)^2 must stay below sigma_i^2: the flow's sigma_min is 0.001
        opts.update(n_steps_each=steps, step_lr={"ve": 2e-5, "vp": 1e-5, "flow": 1e-7}[d.process.kind])
        steps = None
    if name == "rk45":
        opts.update(rtol=1e-4, atol=1e-4)
    return sample(d, name, (n, 2), ImageRNG(1, n, per_image=False), steps=steps, **opts)


# multistep consistency sampling needs a consistency function (tests/test_fewstep.py checks it with the exact one);
# through the view of a plain denoiser it jumps to posterior means, which is not a solver of the ODE; MeanFlow's
# sampler needs a MeanFlow network (tests/test_meanflow.py checks it on the exact average velocity)
@pytest.mark.parametrize("kind", ["vp", "ve", "flow"])
@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"consistency", "meanflow"}))
def test_every_sampler_approaches_the_mixture_as_steps_grow(kind, name):
    """3000 samples: the weight's standard error is 0.008, the mean's ~0.01, the covariance's ~0.01. The flow's
    exact network is its marginal velocity (the straight path's closed form), converted by the denoiser."""
    d = exact_denoiser(MIX, PROCESSES[kind], data_range=(-1, 1), output=OUTPUT[kind])
    few, many = STEPS[name]
    good = _errors(_run(name, d, many))
    assert good[0] < 0.03 and good[1] < 0.05 and good[2] < 0.04, f"{name}: {good.tolist()}"
    if few is not None:
        bad = _errors(_run(name, d, few))
        assert bad.sum() > good.sum(), f"{name}: {bad.tolist()} vs {good.tolist()}"


def _gaussian_ode_solution(x_start, m, v, s0, s1):
    """The probability-flow ODE for N(m, v): x(s1) = m + sqrt((v + s1^2)/(v + s0^2)) (x(s0) - m)."""
    return m + math.sqrt((v + s1**2) / (v + s0**2)) * (x_start - m)


@pytest.mark.parametrize("method,order", [(sample_heun, 2), (sample_euler, 1)])
def test_order_of_accuracy_on_a_gaussian(method, order):
    m, v = 0.3, 0.04
    d = exact_denoiser(GaussianMixture.gaussian(m, v**0.5, 8), PROCESSES["ve"], data_range=(-1, 1))
    x0 = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    exact = _gaussian_ode_solution(x0, m, v, 10.0, 0.5)
    errs = []
    for n in (8, 16, 32):
        sig = torch.cat([torch.logspace(math.log10(10.0), math.log10(0.5), n + 1, dtype=torch.float64)])
        x = method(d, (16, 8), ImageRNG(0, 16), sigmas=sig, x_T=x0)
        errs.append((x - exact).abs().max().item())
    for a, b in zip(errs, errs[1:]):
        assert 2 ** order * 0.7 < a / b < 2 ** order * 1.3, errs


def test_ddim_eta0_is_deterministic_and_invertible():
    d = exact_denoiser(GaussianMixture.gaussian(0.1, 0.3, 16), PROCESSES["vp"], (1, 4, 4))
    x0 = (0.1 + 0.3 * torch.randn(8, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    errors = []
    for steps in (100, 500):
        latent = ddim_encode(d, x0, steps=steps)
        a = sample_ddim(d, x0.shape, ImageRNG(0, 8), steps=steps, x_T=latent)
        b = sample_ddim(d, x0.shape, ImageRNG(99, 8), steps=steps, x_T=latent)
        assert torch.equal(a, b)
        errors.append((a - x0).abs().max().item())
    assert errors[1] < 0.03 and errors[1] < errors[0] / 3  # first order in the step: the round trip converges
    assert latent.std().item() == pytest.approx(1.0, abs=0.25)  # the latent looks like the N(0, I) prior


def test_ddim_eta1_on_all_levels_is_the_ancestral_sampler_with_fixedsmall():
    p = VPProcess.from_schedule("linear", 200)
    d = exact_denoiser(MIX, p, data_range=(-1, 1))
    x_ddim = sample_ddim(d, (64, 2), ImageRNG(5, 64), steps=200, eta=1.0)
    x_anc = sample_ancestral(d, (64, 2), ImageRNG(5, 64), variance="fixedsmall", clip_denoised=False)
    assert torch.allclose(x_ddim, x_anc, atol=1e-6)


def test_ddim_timesteps_as_in_the_ddim_code():
    assert ddim_timesteps(1000, 50)[:3] == [0, 20, 40] and len(ddim_timesteps(1000, 50)) == 50
    quad = ddim_timesteps(1000, 10, "quad")
    assert quad[0] == 0 and quad[-1] == 800 and len(quad) == 10


@pytest.mark.parametrize("kind", ["vp", "ve", "flow"])
def test_ode_likelihood_equals_the_analytic_log_density(kind):
    d = exact_denoiser(MIX, PROCESSES[kind], output=OUTPUT[kind])
    x = torch.tensor([[0.0, 0.0], [0.5, 0.3], [-0.6, -0.3], [0.9, -0.5]], dtype=torch.float64)
    truth = MIX.noised(1.0, d.sigma_min).log_prob(x)
    got = ode_log_likelihood(d, x, ImageRNG(0, 4), trace="exact")["logp"]
    assert torch.allclose(got, truth, rtol=0.01, atol=0.01)


def test_hutchinson_agrees_with_the_exact_trace_in_expectation():
    d = exact_denoiser(MIX, PROCESSES["ve"])
    x = torch.tensor([[0.1, -0.2]], dtype=torch.float64)
    exact = ode_log_likelihood(d, x, ImageRNG(0, 1), trace="exact")["logp"].item()
    for probe in ("rademacher", "gaussian"):
        h = ode_log_likelihood(d, x.expand(300, 2), ImageRNG(1, 300, per_image=False), probe=probe)["logp"]
        assert abs(h.mean().item() - exact) < 3.5 * h.std().item() / math.sqrt(300)
    again = ode_log_likelihood(d, x.expand(3, 2), ImageRNG(1, 3))["logp"]
    assert torch.equal(again, ode_log_likelihood(d, x.expand(3, 2), ImageRNG(1, 3))["logp"])  # seeded


def test_nfe_counts():
    d = exact_denoiser(MIX, PROCESSES["vp"])
    expected = {"ancestral": 10, "ddim": 10, "euler": 10, "heun": 19, "dpm2m": 10, "euler_ancestral": 10, "pc": 20}
    for name, nfe in expected.items():
        d.nfe = 0
        sample(d, name, (4, 2), ImageRNG(0, 4), steps=10)
        assert d.nfe == nfe, name


@pytest.mark.parametrize("budget", [3, 5, 8, 10, 20, 40])
def test_a_budget_plan_spends_at_most_its_budget(budget):
    """scorekit.samplers.budget.plan: the evaluations a sampler makes (counted on the exact mixture denoiser) are at
    most the budget and, where the sampler can spend it, within 1 of it (restart: within its restart cost's
    granularity, 2 N_restart K + 1)."""
    from scorekit.samplers.budget import options_for, plan

    d = exact_denoiser(MIX, PROCESSES["vp"])
    names = ["ancestral", "ddim", "euler", "heun", "dpm2m", "pc", "euler_ancestral", "edm_stochastic", "dpm2m_sde",
             "restart", "ipndm", "unipc", "dpm3m_sde"]
    for name in names:
        opts = plan(name, budget, d.process.num_levels)
        if opts is None:
            assert name in ("heun", "edm_stochastic", "pc", "restart") and budget < 15, name
            continue
        d.nfe = 0
        sample(d, name, (4, 2), ImageRNG(0, 4), **options_for(d, opts))
        slack = 1 if name != "restart" else 2 * opts["restart_nk"][0] * opts["restart_nk"][1] + 1
        assert budget - slack <= d.nfe <= budget, (name, opts, d.nfe)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from scorekit.run import load
    from scorekit.training import train_run

    runs = {}
    for preset, extra in [("ddpm-digits", ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]"]),
                          ("ncsnv2-digits", ["model.ngf=8"])]:
        path = tmp_path_factory.mktemp(preset) / "run"
        train_run(preset, path, extra + ["training.steps=2", "training.batch_size=8"], device="cpu",
                  progress=False, evaluate=False)
        runs[preset] = load(path)
    return runs


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"meanflow"}))
@pytest.mark.parametrize("preset", ["ddpm-digits", "ncsnv2-digits"])
def test_trained_digits_models_of_both_families_sample_with_every_sampler(trained, preset, name):
    """Every sampler runs on a model of each family and costs what its algorithm says for 6 steps (network
    evaluations counted): one per step, 2S - 1 for Heun's (the last step is Euler's), a predictor and a corrector
    per level for pc, DDIM's range(0, T, T // S) as in its code, a Langevin step per level and the final
    denoising step; Restart adds its restart intervals to Heun's, rk45 its adaptive steps."""
    d = trained[preset]
    steps = {"langevin": None, "rk45": None}.get(name, 6)
    d.nfe = 0
    x = sample(d, name, (3, 1, 8, 8), ImageRNG(0, 3), steps=steps, n_steps_each=1, rtol=1e-2, atol=1e-2)
    assert x.shape == (3, 1, 8, 8) and bool(torch.isfinite(x).all())
    T = d.process.num_levels
    want = {"heun": 11, "edm_stochastic": 11, "pc": 12, "ddim": len(range(0, T, T // 6)), "langevin": T + 1}
    if name in ("restart", "rk45"):
        assert d.nfe > 11, d.nfe
    else:
        assert d.nfe == want.get(name, 6), d.nfe


@pytest.mark.parametrize("name", ["euler_ancestral", "pc", "ddim", "dpm2m"])
def test_per_image_seeds_for_every_sampler(trained, name):
    d = trained["ddpm-digits"]
    opts = dict(steps=5, eta=0.5, norms="image")  # pc's batch-averaged norms would couple the images
    full = sample(d, name, (4, 1, 8, 8), ImageRNG(2, range(4)), **opts)
    parts = torch.cat([sample(d, name, (2, 1, 8, 8), ImageRNG(2, ix), **opts) for ix in ([0, 1], [2, 3])])
    assert torch.allclose(full, parts, atol=1e-4)


@pytest.mark.parametrize("name,kw", [("ipndm", {}), ("unipc", {}), ("dpm3m_sde", {"eta": 0.0})])
def test_multistep_solvers_converge_at_least_at_second_order(name, kw):
    """iPNDM, UniPC-bh2 and DPM-Solver++(3M) on the mixture's exact probability-flow ODE, steps uniform in log sigma
    from 10 to 0.5, against Heun's method with 4,000 steps: the error falls at least 2^1.8-fold per doubling (their
    first steps run at lower order, which bounds the global order on a grid this short), and iPNDM and 3M reach 2.5x
    below DPM-Solver++(2M) at 32 steps."""
    d = exact_denoiser(MIX, PROCESSES["ve"], data_range=(-1, 1))
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10

    def run(solver, n, **opts):
        sig = torch.logspace(1, math.log10(0.5), n + 1, dtype=torch.float64)
        return sample(d, solver, (64, 2), ImageRNG(0, 64), sigmas=sig, x_T=x0, **opts)

    ref = run("heun", 4000)
    errs = [(run(name, n, **kw) - ref).abs().max().item() for n in (8, 16, 32, 64)]
    assert all(a / b > 2**1.8 for a, b in zip(errs, errs[1:])), errs
    if name != "unipc":
        assert errs[2] < (run("dpm2m", 32) - ref).abs().max().item() / 2.5, errs


@pytest.mark.parametrize("name,steps,kw", [("unipc", 6, {}), ("unipc", 16, {}), ("dpm3m_sde", 16, {"eta": 0.0})])
def test_unipc_and_dpm3m_step_as_diffusers_schedulers_do(name, steps, kw):
    """The same exact mixture model (VP, data prediction) over diffusers' own Karras levels from the same noise:
    UniPCMultistepScheduler (bh2, order 3) and DPMSolverMultistepScheduler (dpmsolver++, order 3; 16 steps, where it
    does not lower the order before the last step as it does below 15) land where scorekit's unipc and dpm3m_sde
    (eta = 0) do."""
    diffusers = pytest.importorskip("diffusers")
    d = exact_denoiser(MIX, PROCESSES["vp"], data_range=(-1, 1))
    kwargs = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  prediction_type="sample", use_karras_sigmas=True, solver_order=3)
    sched = (diffusers.UniPCMultistepScheduler(solver_type="bh2", **kwargs) if name == "unipc"
             else diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **kwargs))
    sched.set_timesteps(steps)
    sig = torch.as_tensor(sched.sigmas.numpy(), dtype=torch.float64)
    z = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = z * sig[0] / (sig[0] ** 2 + 1).sqrt()  # diffusers' x = alpha x_hat
    for i, t in enumerate(sched.timesteps):
        alpha = 1 / (sig[i] ** 2 + 1).sqrt()
        x = sched.step(d.denoise(x / alpha, sig[i]), t, x).prev_sample
    ours = sample(d, name, (8, 2), ImageRNG(0, 8), sigmas=sig, x_T=z * sig[0], **kw)
    assert torch.allclose(ours, x, atol=1e-6), (ours - x).abs().max()
