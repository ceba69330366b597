"""The flow family (issue 38): the straight path x = (1 - t) x0 + t eps as a process, the velocity output, the
conditional flow-matching loss and its time samplers, checked against closed forms on Gaussian data; the
configurations a flow refuses. (Every sampler and the ODE likelihood on the flow's exact mixture velocity:
tests/test_samplers.py; exact resume of a flow run: tests/test_train.py.)"""

import math

import pytest
import torch

from scorekit.config import ConfigError, load_config
from scorekit.model.denoiser import Denoiser
from scorekit.processes import FlowProcess
from scorekit.processes.flow import logit_normal_density, logit_normal_tau, mode_tau
from scorekit.toy import GaussianMixture, exact_denoiser
from scorekit.training.draws import flow_levels
from scorekit.training.losses import fm_loss

P = FlowProcess.from_levels(1000)
M, V, D = 0.3, 0.2, 16  # Gaussian data N(M, V I) in D dimensions
GAUSS = GaussianMixture.gaussian(M, V**0.5, D)


def test_the_path_and_its_levels():
    assert torch.allclose(P.taus, torch.arange(1, 1001, dtype=torch.float64) / 1001)
    assert torch.allclose(P.a, 1 - P.taus) and torch.allclose(P.s, P.taus)
    t = torch.tensor([0.0, 0.5, 17.25, 998.75, 999.0], dtype=torch.float64)
    tau = (t + 1) / 1001  # fractional levels are exact points of the continuous path
    assert torch.allclose(P.tau(t), tau)
    a, s = P.alpha_s(t)
    assert torch.allclose(a, 1 - tau) and torch.allclose(s, tau)
    assert torch.allclose(P.sigma(t), tau / (1 - tau))
    assert torch.allclose(P.t_of_sigma(P.sigma(t)), t) and torch.allclose(P.t_of_tau(tau), t)
    assert torch.allclose(P.net_label(t), 1000 * tau) and torch.allclose(P.t_of_label(1000 * tau), t)
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(P.q_sample(x0, t, eps), (1 - tau)[:, None] * x0 + tau[:, None] * eps)
    # the Markov chain between levels has the path's marginals: a_t = alpha a_{t-1}, s_t^2 = alpha^2 s_{t-1}^2 + step
    alpha = P.a[1:] / P.a[:-1]
    assert torch.allclose(P.s[1:] ** 2, alpha**2 * P.s[:-1] ** 2 + P.step_variance[1:])
    sub = P.subset(torch.tensor([0, 500, 999]))
    assert torch.equal(sub.taus, P.taus[[0, 500, 999]])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        FlowProcess(torch.tensor([0.5, 1.0]))


def test_the_velocity_output_converts_like_eps():
    """A network giving the marginal velocity E[eps - x0 | x_t] and one giving E[eps | x_t] are the same model."""
    mix = GaussianMixture([0.4, 0.6], [[-0.5] * 4, [0.4] * 4], 0.05)
    dv, de = exact_denoiser(mix, P, output="velocity"), exact_denoiser(mix, P, output="eps")
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor([0.3, 10.5, 200.0, 500.25, 900.0, 998.5], dtype=torch.float64)
    pv, pe = dv(x, t), de(x, t)
    # (the network's label 1000 t is float32: near t = 1 the eps network's x0 = (x - t eps) / (1 - t) amplifies it)
    assert torch.allclose(pv.x0, pe.x0, atol=1e-3) and torch.allclose(pv.eps, pe.eps, atol=1e-3)
    assert torch.allclose(pv.x0[:4], pe.x0[:4], atol=1e-6) and torch.allclose(pv.eps[:4], pe.eps[:4], atol=1e-6)
    tau = P.tau(t)[:, None]
    assert torch.allclose(pv.x0, x - tau * pv.out, atol=1e-12)  # x0 = x_t - t v (spec, beyond.md)
    assert torch.allclose(pv.eps, x + (1 - tau) * pv.out, atol=1e-9)  # eps = x_t + (1 - t) v


def _gaussian_velocity(x_t, tau):
    """E[eps - x0 | x_t] for x0 ~ N(M, V): E[x0 | x_t] = M + a V (x_t - a M) / (a^2 V + t^2), a = 1 - t."""
    a = 1 - tau
    x0 = M + a * V * (x_t - a * M) / (a * a * V + tau * tau)
    return (x_t - a * x0) / tau - x0


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_the_loss_minimiser_is_the_marginal_velocity(tau):
    """Monte Carlo: least squares of the conditional target eps - x0 on x_t (the minimiser of the conditional
    flow-matching loss over all functions of x_t is linear for Gaussian data) against the closed form."""
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = M + V**0.5 * torch.randn(n, dtype=torch.float64, generator=g)
    eps = torch.randn(n, dtype=torch.float64, generator=g)
    x_t = (1 - tau) * x0 + tau * eps
    design = torch.stack([x_t, torch.ones_like(x_t)], 1)
    target = eps - x0
    coef = torch.linalg.lstsq(design, target[:, None]).solution.flatten()
    probe = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    fitted = coef[0] * probe + coef[1]
    # the standard error of the fitted line at the probes: residual variance times [p 1] (X^T X)^-1 [p 1]^T
    resid = (target - design @ coef).var()
    at = torch.stack([probe, torch.ones_like(probe)], 1)
    se = (resid * (at @ torch.linalg.inv(design.T @ design) * at).sum(1)).sqrt()
    assert float(se.max()) < 0.01
    truth = _gaussian_velocity(probe, tau)
    assert bool(((fitted - truth).abs() < 4 * se).all()), (fitted, truth)


def test_fm_loss_of_the_exact_velocity_is_the_conditional_variance():
    """E ||v*(x_t) - (eps - x0)||^2 per dimension = Var(eps - x0 | x_t) = V / ((1 - t)^2 V + t^2); a network off by
    a constant c pays c^2 more; an eps network's loss is taken in v-space too."""
    g = torch.Generator().manual_seed(1)
    n, tau = 20_000, 0.4
    t = P.t_of_tau(torch.full((n,), tau, dtype=torch.float64))
    x0 = M + V**0.5 * torch.randn(n, D, dtype=torch.float64, generator=g)
    eps = torch.randn(n, D, dtype=torch.float64, generator=g)
    expected = V / ((1 - tau) ** 2 * V + tau**2)
    for output in ("velocity", "eps"):
        loss = fm_loss(exact_denoiser(GAUSS, P, output=output), x0, t, eps)
        assert abs(loss.mean().item() - expected) < 4 * loss.std().item() / math.sqrt(n), output

    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.exact = exact_denoiser(GAUSS, P, output="velocity").net

        def forward(self, x, label):
            return self.exact(x, label) + 0.3

    loss = fm_loss(Denoiser(Shifted(), P, output="velocity"), x0, t, eps)
    assert abs(loss.mean().item() - expected - 0.09) < 4 * loss.std().item() / math.sqrt(n)


def test_logit_normal_draws_follow_their_density():
    g = torch.Generator().manual_seed(2)
    m, s = 0.5, 0.8
    tau = logit_normal_tau(50_000, g, "cpu", m, s)
    grid = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    cdf = 0.5 * (1 + torch.erf((torch.log(grid / (1 - grid)) - m) / (s * math.sqrt(2))))  # Phi((logit t - m) / s)
    empirical = (tau[None, :] <= grid[:, None]).double().mean(1)
    assert (empirical - cdf).abs().max() < 0.01  # Kolmogorov-Smirnov at n = 50,000: 0.006 at the 95% level
    fine = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    assert abs(torch.trapezoid(logit_normal_density(fine, m, s), fine).item() - 1) < 1e-4
    # the density against a histogram
    hist = torch.histc(tau, bins=20, min=0, max=1) / (len(tau) * 0.05)
    centres = (torch.arange(20, dtype=torch.float64) + 0.5) / 20
    assert torch.allclose(hist.double(), logit_normal_density(centres, m, s), rtol=0.08, atol=0.02)


def test_mode_sampling_is_sd3s_map_of_uniform_draws():
    """P(tau <= f(u)) = 1 - u for SD3's decreasing f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u); s > 0 puts more
    mass in the middle than uniform t."""
    g = torch.Generator().manual_seed(3)
    s = 1.29
    tau = mode_tau(50_000, g, "cpu", s)
    assert float(tau.min()) >= 0 and float(tau.max()) <= 1
    u = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    q = 1 - u - s * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    empirical = (tau[None, :] <= q[:, None]).double().mean(1)
    assert (empirical - (1 - u)).abs().max() < 0.01
    assert ((tau > 0.25) & (tau < 0.75)).double().mean() > 0.6


def test_u_shaped_draws_follow_their_density():
    """2-rectified flow++'s times: the empirical CDF against (sinh(a (t - 1/2)) + sinh(a / 2)) / (2 sinh(a / 2)), and
    the density integrates to 1 and matches a histogram."""
    from scorekit.processes.flow import u_shaped_density, u_shaped_tau

    tau = u_shaped_tau(50_000, torch.Generator().manual_seed(5), "cpu")
    grid = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    cdf = (torch.sinh(4 * (grid - 0.5)) + math.sinh(2)) / (2 * math.sinh(2))
    assert ((tau[None, :] <= grid[:, None]).double().mean(1) - cdf).abs().max() < 0.01
    fine = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    assert abs(torch.trapezoid(u_shaped_density(fine), fine).item() - 1) < 1e-6
    hist = torch.histc(tau, bins=20, min=0, max=1) / (len(tau) * 0.05)
    centres = (torch.arange(20, dtype=torch.float64) + 0.5) / 20
    assert torch.allclose(hist.double(), u_shaped_density(centres), rtol=0.08)


def test_training_times_for_each_sampling():
    g = torch.Generator().manual_seed(4)
    for kind, check in [("uniform", lambda tau: abs(tau.mean() - 0.5) < 0.01 and abs(tau.var() - 1 / 12) < 0.003),
                        ("logit_normal", lambda tau: abs(torch.logit(tau).mean()) < 0.02
                         and abs(torch.logit(tau).std() - 1) < 0.02),
                        ("mode", lambda tau: ((tau > 0.25) & (tau < 0.75)).double().mean() > 0.6)]:
        cfg = load_config("fm-digits", [f"training.t_sampling={kind}"])
        t = flow_levels(cfg, P, 20_000, g, "cpu")
        assert t.dtype == torch.float64 and float(t.min()) >= 0 and float(t.max()) <= 999
        assert check(P.tau(t)), kind


@pytest.mark.parametrize("overrides,match", [
    (["training.loss=kl", "training.t_sampling=uniform"], "training.loss: kl is a loss of the discrete chain"),
    (["family=ddpm"], "family: flow and process.kind=flow go together"),
    (["model.variance=learned_range", "training.loss=fm"], "training.loss: a learned variance|model.variance"),
    (["model.arch=ncsnv2", "model.ngf=8"], "model.arch: a flow's network reads the continuous time"),
    (["model.output=mean"], "model.output: a flow's network predicts velocity"),
    (["training.mode_scale=2.0", "training.t_sampling=mode"], "training.mode_scale"),
    (["fewstep.reflow_distance=pseudo_huber"], "fewstep.reflow_distance: pseudo_huber is a setting of a reflow"),
    (["fewstep.init=scratch"], "fewstep.init: scratch is a setting of a reflow student"),
    (["fewstep.init=teachers"], "fewstep.init"),
    (["fewstep.pair_sampler=dpm2m 5"], "fewstep.pair_sampler: dpm2m 5 is a setting of a reflow student"),
])
def test_a_flow_refuses_what_it_cannot_do(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("fm-digits", overrides)


def test_flow_options_outside_a_flow_are_refused():
    with pytest.raises(ConfigError, match="training.loss: fm is the flow-matching loss"):
        load_config("ddpm-digits", ["training.loss=fm"])
    with pytest.raises(ConfigError, match="training.t_sampling: logit_normal draws the flow's time"):
        load_config("ddpm-digits", ["training.t_sampling=logit_normal"])


def test_the_pseudo_huber_flow_loss_is_over_the_whole_velocity():
    """2-rectified flow++'s distance on the velocity: a network off by a constant e in every one of D dimensions
    pays sqrt(D e^2 + c^2) - c whatever the pair (the exact velocity of a pair is eps - x0, which an x0-free net
    cannot know, so the test uses a net that reads the pair's target from a closure)."""
    g = torch.Generator().manual_seed(3)
    n = 6
    x0, eps = torch.randn(n, D, dtype=torch.float64, generator=g), torch.randn(n, D, dtype=torch.float64, generator=g)
    t = P.t_of_tau(torch.full((n,), 0.3, dtype=torch.float64))

    class Oracle(torch.nn.Module):
        def forward(self, x, label):
            return eps - x0 + 0.25

    net = Denoiser(Oracle(), P, output="velocity")
    for c in (1e-3, 0.5, 10.0):
        expected = math.sqrt(D * 0.25**2 + c * c) - c
        assert torch.allclose(fm_loss(net, x0, t, eps, huber_c=c), torch.full((n,), expected, dtype=torch.float64))
    assert torch.allclose(fm_loss(net, x0, t, eps), torch.full((n,), 0.25**2, dtype=torch.float64))


# ----- reflow -----------------------------------------------------------------------------------------------

def test_reflow_pairs_are_the_teachers_ode_endpoints():
    """The exact mixture teacher (VP): the pairs' endpoints from Heun's method are the probability-flow ODE's
    endpoints from the same noise, solved by adaptive RK45 at a tight tolerance."""
    from scorekit.processes import VPProcess
    from scorekit.rng import ImageRNG
    from scorekit.samplers.common import prior_std_hat
    from scorekit.samplers.ode import sample_rk45
    from scorekit.training.reflow import draw_pairs

    mix = GaussianMixture([0.3, 0.7], [[-0.6, -0.4], [0.5, 0.3]], [[0.04, 0.02], [0.03, 0.05]])
    teacher = exact_denoiser(mix, VPProcess.from_schedule("linear", 1000))
    z, x = draw_pairs(teacher, range(64), 3, ("heun", 80, "karras"), shape=(2,))
    assert torch.equal(z, ImageRNG(3, range(64)).randn(2))  # pair i's noise is its own generator's
    ref = sample_rk45(teacher, (64, 2), ImageRNG(4, 64), x_T=z.double() * prior_std_hat(teacher, teacher.sigma_max),
                      rtol=1e-7, atol=1e-7)
    assert (x.double() - ref).abs().max() < 5e-3  # Heun's 80 steps and RK45 to 1e-7 both end at sigma_min


def test_a_student_of_exact_pairs_samples_the_mixture_in_one_step():
    """A small velocity network trained with the flow-matching loss on 4,000 exact pairs of a 2-D mixture (its
    teacher the exact flow) generates it in one Euler step: component weight within 0.05, each component's mean
    within 0.1 (the 1-rectified flow's one step gives the mixture's mean instead)."""
    from scorekit.training.reflow import draw_pairs

    mix = GaussianMixture([0.4, 0.6], [[-0.7, -0.5], [0.6, 0.5]], 0.01)
    teacher = exact_denoiser(mix, P, output="velocity")
    z, x = draw_pairs(teacher, range(4000), 0, ("heun", 40, "karras"), shape=(2,))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                         torch.nn.SiLU(), torch.nn.Linear(64, 2))

        def forward(self, x, label):
            return self.f(torch.cat([x, label[:, None].to(x.dtype) / 1000], 1))

    torch.manual_seed(0)
    student = Denoiser(Net(), FlowProcess.from_levels(1000), output="velocity")
    opt = torch.optim.Adam(student.net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(600):
        idx = torch.randint(len(z), (256,), generator=g)
        t = torch.rand(256, generator=g, dtype=torch.float64) * 999
        loss = fm_loss(student, x[idx], t, z[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        noise = torch.randn(4000, 2, generator=g)
        top = torch.full((4000,), 999.0, dtype=torch.float64)
        one = noise - student.process.tau(top)[0].float() * student.raw(noise, top)  # x0 = x_1 - t v, one step
        plain = noise - student.process.tau(top)[0].float() * teacher.raw(noise, top)  # the exact 1-RF, one step
    assert ((plain - mix.mean().float()).norm(dim=1) < 0.1).float().mean() > 0.95  # lands on the mean
    left = one[:, 0] < 0
    assert abs(left.float().mean().item() - 0.4) < 0.05
    assert (one[left].mean(0) - torch.tensor([-0.7, -0.5])).norm() < 0.1
    assert (one[~left].mean(0) - torch.tensor([0.6, 0.5])).norm() < 0.1


def test_a_reflow_run_resumes_bit_for_bit_on_the_same_pairs(tmp_path):
    from safetensors.torch import load_file

    from scorekit.checkpoint import load_checkpoint
    from scorekit.run import RunDir
    from scorekit.training import train_run
    from scorekit.training.distill import prepare

    tiny = ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=8",
            "training.snapshot_every=0", "sampling.steps=2", "training.log_every=1"]
    train_run("fm-digits", tmp_path / "t", [*tiny, "training.steps=2"], device="cpu", progress=False, evaluate=False)
    runs = {}
    for name, cut in (("a", None), ("b", 3)):
        run = prepare(tmp_path / "t", tmp_path / name, "reflow", 6, ["fewstep.pairs=24"])
        if cut:
            train_run(run.path, None, [f"training.steps={cut}"], device="cpu", progress=False, evaluate=False)
        train_run(run.path, None, ["training.steps=6"], device="cpu", progress=False, evaluate=False)
        runs[name] = load_checkpoint(RunDir(run.path).latest())
    a, b = runs["a"], runs["b"]
    assert a.step == b.step == 6 and all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    pa, pb = (load_file(tmp_path / n / "pairs" / "chunk_00000000.safetensors") for n in "ab")
    assert torch.equal(pa["x"], pb["x"]) and pa["x"].shape == (24, 1, 8, 8)
    cfg = RunDir(tmp_path / "a").read_config()
    assert (cfg.process.kind, cfg.model.output, cfg.training.loss) == ("flow", "velocity", "reflow")
    assert "euler:1" in (tmp_path / "a" / "schedules.json").read_text()


def test_a_reflow_student_starts_from_its_teacher_only_where_fewstep_init_says(tmp_path):
    """fewstep.init: auto starts from a flow teacher's weights (data in [-1, 1], like the student's) and not from a
    VE teacher's (data in [0, 1]); teacher / scratch as told; a teacher of another shape is refused in one line."""
    from scorekit.errors import ScorekitError
    from scorekit.model.factory import build_net
    from scorekit.run import load
    from scorekit.training import train_run
    from scorekit.training.distill import prepare, student_config
    from scorekit.training.reflow import starts_from_teacher

    tiny = ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=4",
            "training.steps=1"]
    for preset, auto in (("fm-digits", True), ("ncsnv2-unet-digits", False)):
        train_run(preset, tmp_path / preset, tiny, device="cpu", progress=False, evaluate=False)
        teacher = load(tmp_path / preset)
        for init, expected in (("auto", auto), ("teacher", True), ("scratch", False)):
            cfg = student_config(teacher.config, "reflow", 2, [f"fewstep.init={init}"])
            assert starts_from_teacher(cfg, teacher, build_net(cfg)) is expected, (preset, init)
        wide = student_config(teacher.config, "reflow", 2, ["fewstep.init=teacher", "model.ch=16"])
        with pytest.raises(ScorekitError, match="fewstep.init=teacher: the student's network differs in shape"):
            starts_from_teacher(wide, teacher, build_net(wide))
        assert not starts_from_teacher(student_config(teacher.config, "reflow", 2, ["model.ch=16"]), teacher,
                                       build_net(wide))  # auto: its own initialisation, as before
    with pytest.raises(ScorekitError, match="fewstep.init=teacher: the student's network differs in shape"):
        prepare(tmp_path / "fm-digits", tmp_path / "s", "reflow", 2, ["fewstep.init=teacher", "model.ch=16"])
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_fewstep_pair_sampler_draws_the_pairs_with_the_sampler_it_names(tmp_path):
    """fewstep.pair_sampler "dpm2m 2": pairs.json records it and the kept endpoints are that sampler's from the pairs'
    noise (draw_pairs with it); a malformed value is refused in one line naming the key."""
    import json

    from safetensors.torch import load_file

    from scorekit.run import load
    from scorekit.training import train_run
    from scorekit.training.distill import prepare
    from scorekit.training.reflow import draw_pairs

    tiny = ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=4"]
    train_run("ncsnv2-unet-digits", tmp_path / "t", [*tiny, "training.steps=1"], device="cpu", progress=False,
              evaluate=False)
    run = prepare(tmp_path / "t", tmp_path / "s", "reflow", 1, ["fewstep.pairs=6", "fewstep.pair_sampler=dpm2m 2"])
    train_run(run.path, None, [], device="cpu", progress=False, evaluate=False)
    assert json.loads((run.path / "pairs" / "pairs.json").read_text())["sampler"] == ["dpm2m", 2, "karras"]
    kept = load_file(run.path / "pairs" / "chunk_00000000.safetensors")
    z, x = draw_pairs(load(tmp_path / "t"), range(6), 7, ("dpm2m", 2, "karras"))
    assert torch.equal(kept["z"], z) and torch.allclose(kept["x"], x, atol=1e-6)
    for bad, match in (("dpm2m_sde 5", "expected 'NAME STEPS"), ("heun x", "expected 'NAME STEPS"),
                       ("heun 4 cosine", "the schedule is karras or logsnr")):
        with pytest.raises(ConfigError, match=f"fewstep.pair_sampler: .*{match}"):
            load_config("fm-digits", ["training.loss=reflow", "fewstep.teacher=t.safetensors",
                                      f"fewstep.pair_sampler={bad}"])


def test_reflow_refuses_what_it_cannot_draw(tmp_path):
    from scorekit.errors import ScorekitError
    from scorekit.training import train_run
    from scorekit.training.distill import prepare

    train_run("ncsnv2-digits", tmp_path / "t", ["model.ngf=8", "training.steps=1", "training.batch_size=4"],
              device="cpu", progress=False, evaluate=False)
    with pytest.raises(ScorekitError, match="--method reflow: the flow student is a U-Net"):
        prepare(tmp_path / "t", tmp_path / "s", "reflow")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="training.loss=reflow: learns a teacher's pairs"):
        load_config("fm-digits", ["training.loss=reflow"])


def test_the_discrete_bound_and_the_codec_refuse_a_flow_run(tmp_path, capsys):
    """A flow run's likelihood is its ODE's (--method ode); the chain's bound and the codec built on it refuse in
    one line, exit code 2, nothing written."""
    from scorekit.cli import main
    from scorekit.training import train_run

    train_run("fm-digits", tmp_path / "f", ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                            "training.batch_size=4", "training.steps=1"],
              device="cpu", progress=False, evaluate=False)
    for argv, match in ((["bpd", str(tmp_path / "f"), "--n", "2"], "computed for VP and sub-VP runs, this is a flow"),
                        (["compress", str(tmp_path / "f"), "digits:test", "--out", str(tmp_path / "c.skc")], "flow")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "c.skc").exists()
