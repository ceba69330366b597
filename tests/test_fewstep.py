"""Few-step generation: the consistency view of every denoiser, multistep consistency sampling, the consistency
and progressive-distillation objectives against closed forms and the exact Gaussian-mixture teacher, and
`scorekit distill` on teachers of both families."""

import json
import math

import pytest
import torch
from torch import nn

from scorekit.config import load_config
from scorekit.model.denoiser import Denoiser
from scorekit.model.factory import build_denoiser
from scorekit.model.precond import consistency_coefficients, edm_coefficients
from scorekit.processes import VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import sample
from scorekit.samplers.consistency import consistency_sigmas, sample_consistency
from scorekit.samplers.rk45 import dopri5
from scorekit.toy import GaussianMixture, exact_denoiser
from scorekit.training.fewstep import (
    FewStep,
    ddim_step,
    ect_r,
    ict_levels,
    karras_grid,
    lognormal_index_weights,
    pd_target,
)
from scorekit.training.losses import pseudo_huber

PROCESS = VPProcess.from_schedule("linear", 1000)
TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "model.num_res_blocks=1"]


# ----- the consistency view: the boundary condition -------------------------------------------------------------

@pytest.mark.parametrize("preset,extra", [
    ("edm-digits", ["training.loss=cd", "fewstep.teacher=t"]),               # EDM preconditioning: Song et al.'s
    ("ddpm-digits", ["training.loss=ect"]),                                   # eps-network, VP
    ("ddpm-digits", ["training.loss=ict", "model.output=x0"]),               # x0-network, VP
    ("ncsnv2-unet-digits", ["training.loss=ect"]),                            # sigma*score network, VE
    ("ddpm-digits", ["training.loss=ect", "process.kind=subvp"]),            # sub-VP
    ("ddpm-digits", ["training.loss=ict", "fewstep.sigma_min=0.05"]),        # a boundary of one's own
], ids=["edm", "eps-vp", "x0-vp", "ve-ncsn", "subvp", "own-boundary"])
def test_the_boundary_condition_holds_exactly_for_every_preconditioning(preset, extra):
    cfg = load_config(preset, [*TINY, "model.consistency=true", *extra])
    torch.manual_seed(0)
    d = build_denoiser(cfg).eval()
    for p in d.net.parameters():  # a network far from the identity
        nn.init.normal_(p, std=0.3)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float32)
    with torch.no_grad():
        at_boundary = d.consistency_fn(x, d.sigma_min)
        away = d.consistency_fn(x, 1.0)
    assert torch.equal(at_boundary, x)
    assert not torch.allclose(away, x, atol=1e-3)  # the network does act away from the boundary
    assert d.sigma_min == (cfg.fewstep.sigma_min or (0.002 if cfg.model.precond == "edm" else d.process.sigma_min))


def test_consistency_coefficients_are_song_et_als_and_c_in_keeps_the_square_root():
    """c_skip(sigma_min) = 1, c_out(sigma_min) = 0, both tend to EDM's at large sigma; c_in = 1 / sqrt(sigma^2 +
    sigma_d^2), so the network's input has unit variance when the data's std is sigma_d (the missing square root is
    a reported cause of consistency training that does not converge)."""
    s_min, s_d = 0.002, 0.5
    sigma = torch.tensor([s_min, 0.1, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out = consistency_coefficients(sigma, s_d, s_min)
    assert c_skip[0] == 1 and c_out[0] == 0
    e_skip, e_out, c_in, _ = edm_coefficients(sigma, s_d)
    assert torch.allclose(c_skip[-1], e_skip[-1], rtol=1e-3) and torch.allclose(c_out[-1], e_out[-1], rtol=1e-4)
    g = torch.Generator().manual_seed(0)
    for s in (0.1, 1.0, 80.0):
        x = s_d * torch.randn(200_000, generator=g, dtype=torch.float64) + s * torch.randn(
            200_000, generator=g, dtype=torch.float64)
        c = edm_coefficients(torch.tensor(s), s_d)[2]
        assert (c * x).var().item() == pytest.approx(1.0, rel=0.02)


def test_pseudo_huber_is_over_the_whole_image_not_per_element():
    x = torch.zeros(2, 1, 8, 8)
    y = torch.full((2, 1, 8, 8), 0.1)
    c = 0.00054 * math.sqrt(64)
    expected = math.sqrt(64 * 0.01 + c * c) - c
    assert torch.allclose(pseudo_huber(x, y, c), torch.full((2,), expected), rtol=1e-6)
    per_element = (math.sqrt(0.01 + c * c) - c) * 64  # what a per-element metric would give: 8x larger here
    assert abs(expected - per_element) > 1.0
    big = torch.full((1, 3, 32, 32), 300.0, dtype=torch.bfloat16)  # bf16 inputs: computed in fp32, finite
    assert torch.isfinite(pseudo_huber(big, -big, c)).all()


# ----- the schedules of the objectives -----------------------------------------------------------------------------

def test_ict_curriculum_and_its_lognormal_levels():
    cfg = load_config("ddpm-digits", ["training.steps=400000"])
    assert [ict_levels(cfg, k) for k in (0, 49_999, 50_000, 100_000, 350_000, 399_999)] == [11, 11, 21, 41, 1281,
                                                                                            1281]
    grid = karras_grid(1281, 0.002, 80.0)
    p = lognormal_index_weights(grid, -1.1, 2.0)
    assert p.sum().item() == pytest.approx(1.0) and (p >= 0).all()
    median = grid[int(torch.searchsorted(p.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))]
    assert median.item() == pytest.approx(math.exp(-1.1), rel=0.05)  # the lognormal's median e^P_mean (no sign slip)


def test_ect_halves_t_minus_r_at_every_stage_and_starts_from_denoising():
    t = torch.tensor([0.05, 0.5, 1.9, 20.0], dtype=torch.float64)
    r0 = ect_r(t, 0, 2.0)  # stage 0: r = 0 (a plain denoising loss) wherever 1 + 8 sigmoid(-t) >= q, t <= ln 7
    assert torch.equal(r0[:3], torch.zeros(3, dtype=torch.float64)) and 0 < r0[3] < t[3]
    gaps = [t - ect_r(t, s, 2.0) for s in range(3, 7)]
    for a, b in zip(gaps, gaps[1:]):
        assert torch.allclose(b / a, torch.full((4,), 0.5, dtype=torch.float64))
    assert (ect_r(t, 10, 2.0) > 0).all() and (ect_r(t, 10, 2.0) < t).all()


def test_progressive_distillations_target_is_the_teachers_two_steps_in_one():
    """With the exact Gaussian-mixture denoiser as teacher: one DDIM step with x0 = the target lands where the
    teacher's two DDIM steps land, also when the second step ends at sigma = 0."""
    mix = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], 0.05)
    teacher = exact_denoiser(mix, PROCESS)
    D = lambda x, s: teacher.denoise(x, s)  # noqa: E731
    x = torch.randn(6, 2, dtype=torch.float64) * 3
    for s, mid, end in ((3.0, 1.0, 0.2), (0.8, 0.3, 0.0)):
        S, M, E = (torch.full((6,), v, dtype=torch.float64) for v in (s, mid, end))
        target = pd_target(D, x, S, M, E)
        two = ddim_step(D, ddim_step(D, x, S, M), M, E) if end > 0 else D(ddim_step(D, x, S, M), M)
        one = target + (end / s) * (x - target)
        assert torch.allclose(one, two, atol=1e-10)


def test_progressive_distillations_rounds_nest_on_one_grid(monkeypatch):
    """Every round's teacher steps between levels its student was trained on (the previous round's jumps), the
    final schedule is the last round's jumps, and the student starts where it was trained (sigma 20, not 157).
    Before the fix each round drew a fresh grid: the main job's teacher of round 2 ran on [20, 3.49, 0.34, ...]
    while its student had learnt [20, 4.61, 0.72, ...]."""
    import scorekit.training.fewstep as fewstep

    over = [*TINY, "training.loss=pd", "fewstep.teacher=t", "fewstep.pd_steps=16", "fewstep.pd_final=2",
            "training.steps=6", "training.batch_size=256"]
    cfg = load_config("ddpm-digits", over)
    torch.manual_seed(0)
    student = build_denoiser(cfg)
    teacher = build_denoiser(load_config("ddpm-digits", TINY))
    seen: dict[int, list] = {}
    fs = FewStep(cfg, student, teacher)

    def record(D, x, s, s_mid, s_end):
        seen.setdefault(fs.round, []).append((s, s_mid, s_end))
        return torch.zeros_like(x)

    monkeypatch.setattr(fewstep, "pd_target", record)
    x0 = torch.zeros(256, 1, 8, 8)
    for step in range(cfg.training.steps):
        with torch.no_grad():
            fs.loss(student, x0, torch.randn_like(x0), None, step, slice(None))
        fs.after_step(student.net, step + 1)
    assert sorted(seen) == [0, 1, 2]

    def levels(triples, which):
        return torch.cat([t[i] for t in triples for i in which]).unique()

    def within(a, b):  # every level of a is one of b
        return bool(torch.isclose(a[:, None], b[None, :], rtol=1e-9, atol=0).any(1).all())

    for r in (0, 1):
        taught = levels(seen[r], (0, 2))  # the student of round r jumps s -> s_end
        assert within(levels(seen[r + 1], (0, 1, 2)), taught), r
    final = fewstep.pd_schedule(cfg, fs.sigma_min, fs.sigma_max)
    assert len(final) == 3 and within(final, levels(seen[2], (0, 2)))
    assert student.sigma_max == 20.0  # the student samples from the top it was trained at
    assert float(final[0]) == pytest.approx(student.sigma_max)
    assert levels(seen[0], (0, 1, 2)).numel() == 17  # round 0: the 16-step grid and its final 0


# ----- multistep consistency sampling ------------------------------------------------------------------------------

class _ExactGaussianConsistency(Denoiser):
    """The exact consistency function of N(mu, s^2 I) data: the probability-flow ODE is linear, so
    f(x, sigma) = mu + (x - mu) sqrt((s^2 + sigma_min^2) / (s^2 + sigma^2))."""

    def __init__(self, mu: float, s: float):
        super().__init__(nn.Identity(), PROCESS, consistency=True)
        self.mu, self.s = mu, s

    def consistency_fn(self, x, sigma, y=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, *[1] * (x.ndim - 1))
        scale = ((self.s**2 + self.sigma_min**2) / (self.s**2 + sigma**2)).sqrt()
        return (self.mu + (x.double() - self.mu) * scale).to(x.dtype)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_multistep_consistency_sampling_with_the_exact_function_draws_the_data(steps):
    mu, s = 0.3, 0.5
    d = _ExactGaussianConsistency(mu, s)
    x = sample_consistency(d, (4000, 2), ImageRNG(0, 4000), steps=steps)
    assert x.mean().item() == pytest.approx(mu, abs=4 * s / math.sqrt(8000))
    assert x.double().std().item() == pytest.approx(math.sqrt(s**2 + d.sigma_min**2), rel=0.03)
    sig = consistency_sigmas(d, steps)
    assert len(sig) == steps + 1 and sig[-1] == 0 and (sig[1:-1] > d.sigma_min).all()
    assert sig[0].item() == pytest.approx(d.sigma_max, rel=1e-12)


def test_the_consistency_sampler_runs_on_any_model_through_the_view():
    """On a model that is not a consistency model, two steps are Algorithm 1 written out with the view
    f = x + (1 - sigma_min / sigma)(D - x) of its denoiser, the same draws in the same order."""
    cfg = load_config("ddpm-digits", [*TINY, "process.num_timesteps=20"])
    torch.manual_seed(0)
    d = build_denoiser(cfg).eval()
    for p in d.net.parameters():  # a network that does something
        nn.init.normal_(p, std=0.05)
    x = sample(d, "consistency", (3, 1, 8, 8), ImageRNG(0, 3), steps=2)
    levels = consistency_sigmas(d, 2)
    s_max, tau, s_min = float(levels[0]), float(levels[1]), d.sigma_min
    rng = ImageRNG(0, 3)

    def f(z, s):
        return z + (1 - s_min / s) * (d.denoise(z, s) - z)

    with torch.no_grad():
        z = rng.randn(1, 8, 8) * (s_max**2 + d.process.prior_data_variance) ** 0.5
        want = f(f(z, s_max) + math.sqrt(tau**2 - s_min**2) * rng.randn_like(z), tau)
    assert torch.allclose(x, want, atol=1e-5) and not torch.allclose(x, f(z, s_max), atol=1e-2)


def test_the_consistency_sampler_honours_or_refuses_every_option():
    """steps=0 is refused, not turned into 2 (None is the default, 2); a logsnr schedule gives its own levels,
    uniform in log sigma between sigma_max and sigma_min; a schedule of the discrete levels is refused."""
    from scorekit.samplers import unhonoured

    cfg = load_config("ddpm-digits", [*TINY, "process.num_timesteps=20"])
    d = build_denoiser(cfg).eval()
    for call in (lambda: sample(d, "consistency", (2, 1, 8, 8), ImageRNG(0, 2), steps=0),
                 lambda: sample_consistency(d, (2, 1, 8, 8), ImageRNG(0, 2), steps=0)):
        with pytest.raises(ValueError, match="at least"):
            call()
    assert torch.equal(consistency_sigmas(d, 2), consistency_sigmas(d, 2, schedule="karras"))
    lo, hi = d.sigma_min, d.sigma_max
    want = torch.tensor([hi, math.sqrt(hi * lo), 0.0], dtype=torch.float64)  # 3 levels uniform in log sigma, last 0
    assert torch.allclose(consistency_sigmas(d, 2, schedule="logsnr"), want)
    assert unhonoured(d, "consistency", schedule="uniform") and unhonoured(d, "consistency", schedule="quad")
    assert unhonoured(d, "consistency", schedule="logsnr") is None and unhonoured(d, "consistency", steps=3) is None
    assert unhonoured(d, "rk45", steps=5)[0] == "steps" and "rk45" in unhonoured(d, "rk45", steps=5)[1]
    assert unhonoured(d, "rk45") is None
    assert unhonoured(d, "langevin", schedule="karras") == ("schedule", "the langevin sampler takes no time-step "
                                                                        "schedule")


# ----- consistency distillation of the exact mixture teacher --------------------------------------------------------

class _MLP(nn.Module):
    """F(c_in x; c_noise) for 2-D points: the student of the mixture tests."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2 + 8, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                  nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, label):
        f = label.float()[:, None] * torch.arange(1, 5, dtype=torch.float32)[None]
        return self.body(torch.cat([x, f.sin(), f.cos()], dim=1))


MIX = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], 0.04)


@pytest.fixture(scope="module")
def distilled():
    """A small student distilled from the exact mixture teacher with consistency distillation (CD: the teacher's
    Heun step between adjacent levels of an 18-level grid, pseudo-Huber, an EMA target)."""
    steps, batch = 2500, 512
    cfg = load_config("edm-digits", ["training.loss=cd", "model.consistency=true", "fewstep.teacher=exact",
                                     f"training.batch_size={batch}", f"training.steps={steps}", "fewstep.sigma_max=40"])
    torch.manual_seed(0)
    student = Denoiser(_MLP(), PROCESS, output="x0", precond="edm", consistency=True, image_shape=(2,))
    fs = FewStep(cfg, student, exact_denoiser(MIX, PROCESS))
    opt = torch.optim.Adam(student.net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for k in range(steps):
        x0 = MIX.sample(batch, g)[0].float()
        loss = fs.loss(student, x0, torch.randn(batch, 2, generator=g), None, k, slice(None)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        fs.after_step(student.net, k + 1)
    return student.eval(), fs


def test_a_distilled_student_maps_noise_to_the_ode_endpoints(distilled):
    """The consistency function of the teacher's probability-flow ODE, from the RK45 solution of that ODE
    (dx/du = x - D(x; e^u), u = ln sigma) from sigma down to sigma_min: the student's f is within 0.1 of it
    (the mixture's modes are 2 apart) at every level tried."""
    student, fs = distilled
    teacher = exact_denoiser(MIX, PROCESS)
    g = torch.Generator().manual_seed(2)
    for sigma in (0.3, 1.0, 5.0, 30.0):
        x = MIX.sample(512, g)[0] + sigma * torch.randn(512, 2, generator=g, dtype=torch.float64)
        end, _ = dopri5(lambda y, u: y - teacher.denoise(y, u.exp()), x, math.log(sigma), math.log(fs.sigma_min),
                        rtol=1e-6, atol=1e-6)
        with torch.no_grad():
            f = student.consistency_fn(x.float(), sigma).double()
        assert (f - end).norm(dim=1).mean().item() < 0.1, sigma


@pytest.mark.parametrize("steps", [1, 2])
def test_the_distilled_students_samples_match_the_mixtures_moments(distilled, steps):
    student, fs = distilled
    with torch.no_grad():
        x = sample_consistency(student, (4000, 2), ImageRNG(3, 4000), sigmas=[fs.sigma_max, *([0.8] if steps == 2
                                                                                            else []), 0.0]).double()
    assert torch.allclose(x.mean(0), MIX.mean(), atol=0.08)
    assert torch.allclose(x.T.cov(), MIX.covariance(), atol=0.08)
    right = (x[:, 0] > 0).double().mean().item()
    assert right == pytest.approx(0.5, abs=0.05)  # the two modes, equally weighted


# ----- `scorekit distill` on teachers of both families ---------------------------------------------------------------

TRAIN = [*TINY, "training.batch_size=16", "training.warmup=2", "training.ema_decay=0.9", "training.steps=3",
         "training.checkpoint_every=2", "sampling.num_samples=4", "eval.bpd_images=0", "eval.proxy_samples=0"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    from scorekit.training import train_run

    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for name, preset, extra in (("ddpm", "ddpm-digits", []), ("ncsn", "ncsnv2-unet-digits", []),
                                ("edm", "edm-digits", ["training.snapshot_every=0"]),
                                ("cond", "ddpm-digits-cond", []), ("x0", "ddpm-digits", ["model.output=x0"])):
        train_run(preset, root / name, [*TRAIN, *extra], device="cpu", progress=False, evaluate=False)
        out[name] = root / name
    return out


@pytest.mark.parametrize("teacher,method", [("ddpm", "ect"), ("ddpm", "cd"), ("ddpm", "pd"), ("ncsn", "ect"),
                                            ("ncsn", "cd"), ("ncsn", "pd"), ("edm", "cd"), ("edm", "ect"),
                                            ("cond", "cd"), ("x0", "pd")])
def test_teachers_of_both_families_distil_and_sample(teachers, teacher, method, tmp_path, capsys):
    """Every teacher family distils through the command line and its student samples at 1, 2, 4 network evaluations
    (counted). Trained with lr 1e-30, the student is its teacher's EMA weights read through the student's view: near
    the boundary (sigma 0.05) its D matches the teacher's consistency view (the v reading of an eps network, EDM's
    and Song et al.'s coefficients and the x0 / score outputs all agree there, to O(sigma^2))."""
    from scorekit.checkpoint import load_checkpoint
    from scorekit.cli import main
    from scorekit.run import load

    out = tmp_path / "student"
    assert main(["distill", str(teachers[teacher]), "--method", method, "--out", str(out), "--steps", "2",
                 "--no-progress", "--no-eval", "--device", "cpu", "training.lr=1e-30"]) == 0
    cfg = load_config(str(out / "config.yaml"))
    assert cfg.training.loss == method and cfg.model.consistency == (method != "pd")
    student, mentor = load(out).eval(), load(teachers[teacher]).eval()
    teacher_ema = load_checkpoint(out / "teacher.safetensors").model
    for k, v in student.net.state_dict().items():  # (a step of 1e-30 moves only weights that are exactly 0)
        assert torch.allclose(v, teacher_ema[k], rtol=0, atol=1e-25), k
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    s, s_min = 0.05, student.sigma_min
    y = torch.full((4,), 3) if teacher == "cond" else None
    with torch.no_grad():
        x_hat = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        sig = torch.full((4,), s, dtype=torch.float64)
        d_t = mentor._plain_denoise(x_hat, sig, y)
        want = x_hat + (1 - s_min / s) * (d_t - x_hat) if student.consistency else d_t
        got = student.consistency_fn(x_hat, sig, y) if student.consistency else student._plain_denoise(x_hat, sig, y)
    assert (got - want).abs().max() < 0.01, (got - want).abs().max()
    for k in (1, 2, 4) if method != "pd" else (2,):
        assert main(["sample", str(out), "--steps", str(k), "--n", "3", "--out", str(tmp_path / f"s{k}"),
                     "--no-progress", *(["--class", "3"] if teacher == "cond" else [])]) == 0
        said = json.loads((tmp_path / f"s{k}" / "summary.json").read_text())
        assert said["nfe_per_image"] == k, said
    capsys.readouterr()


def test_distillation_resumes_bit_exactly(teachers, tmp_path):
    """A run stopped after its step-2 checkpoint and resumed ends where the uninterrupted run ends: weights, the
    target network (cd) and the round's teacher (pd) alike (dropout on, so the shared dropout draw matters)."""
    import shutil

    from scorekit.checkpoint import load_checkpoint
    from scorekit.run import RunDir
    from scorekit.training import train_run
    from scorekit.training.distill import prepare

    for method in ("cd", "pd", "ect"):
        full, part = tmp_path / f"{method}-a", tmp_path / f"{method}-b"
        extra = ["model.dropout=0.1", "training.checkpoint_every=2", "training.keep_checkpoints=2",
                 "fewstep.pd_steps=8", "fewstep.pd_final=2", "fewstep.stages=4"]
        prepare(teachers["ddpm"], full, method, 4, extra)
        train_run(full, None, [], device="cpu", progress=False, evaluate=False)
        shutil.copytree(full, part)
        RunDir(part).latest().unlink()  # as if killed after the checkpoint of step 2
        train_run(part, None, [], device="cpu", progress=False, evaluate=False)
        a, b = (load_checkpoint(RunDir(r).latest()) for r in (full, part))
        assert a.step == b.step == 4 and set(a.extra) == set(b.extra)
        assert method == "ect" or a.extra  # the target network (cd), the round's teacher (pd)
        for group in ("model", "ema", *a.extra):
            sa, sb = {"model": (a.model, b.model), "ema": (a.ema or {}, b.ema or {})}.get(
                group, (a.extra.get(group), b.extra.get(group)))
            for k, v in sa.items():
                assert torch.equal(v, sb[k]), (method, group, k)


@pytest.mark.parametrize("make,args,message", [
    (lambda p: None, [], "not a run directory"),
    (lambda p: p.mkdir(), [], "not a run directory"),
    ("truncate", [], "truncated or corrupted"),
    ("unfinished", [], "unfinished"),
    ("student", [], "already a few-step model"),
    ("ddpm", ["--steps", "-3"], "--steps"),
    ("ddpm", ["--method", "magic"], "--method"),
    ("ddpm", ["training.lr=-1"], "training.lr"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(teachers, tmp_path, capsys, make, args, message):
    import shutil

    from scorekit.cli import main
    from scorekit.run import RunDir

    teacher = tmp_path / "teacher"
    if make == "ddpm":
        teacher = teachers["ddpm"]
    elif make in ("truncate", "unfinished", "student"):
        shutil.copytree(teachers["ddpm"], teacher)
        latest = RunDir(teacher).latest()
        if make == "truncate":
            latest.write_bytes(latest.read_bytes()[:1000])
            for _, older in RunDir(teacher).checkpoints()[:-1]:
                older.unlink()
        elif make == "unfinished":
            cfg = (teacher / "config.yaml").read_text().replace("steps: 3", "steps: 30")
            (teacher / "config.yaml").write_text(cfg)
            from scorekit.checkpoint import load_checkpoint, save_checkpoint

            ck = load_checkpoint(latest)
            ck.config["training"]["steps"] = 30
            save_checkpoint(latest, config=ck.config, step=ck.step, model=ck.model, ema=ck.ema)
        else:
            assert main(["distill", str(teachers["ddpm"]), "--out", str(teacher / "s"), "--steps", "1",
                         "--no-progress", "--no-eval", "--device", "cpu"]) == 0
            teacher = teacher / "s"
    else:
        make(teacher)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["distill", str(teacher), "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_commands_on_a_distilled_run(teachers, tmp_path, capsys):
    from scorekit.cli import main

    out = tmp_path / "student"
    assert main(["distill", str(teachers["ddpm"]), "--out", str(out), "--steps", "1", "--no-progress",
                 "--device", "cpu", "eval.proxy_samples=128"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"] == "consistency" and summary["proxy"]["proxy_fd"] is not None and "bpd" not in summary
    capsys.readouterr()
    assert main(["bpd", str(out)]) == 2
    assert "consistency model" in capsys.readouterr().err
    assert main(["export", "diffusers", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "model.consistency=true" in capsys.readouterr().err
    assert main(["hype", "create", str(out), "--data", "digits", "--out", str(tmp_path / "study"), "--n-fake", "4",
                 "--per-rater", "2", "--tutorial", "2", "--raters", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # what a sampler cannot honour is refused in one line; what --steps 0 (the default) gives is said
    refused = [(["--schedule", "uniform"], "--schedule uniform"), (["--sampler", "rk45", "--steps", "3"], "--steps"),
               (["--sampler", "ancestral"], "above the 20 this model was trained up to"),
               (["--sampler", "ddim", "--steps", "4"], "sigma-space sampler")]
    for extra, message in refused:
        assert main(["sample", str(out), "--n", "2", "--out", str(tmp_path / "r"), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (extra, err)
        assert not (tmp_path / "r").exists()
    for steps, schedule in ((0, None), (3, "logsnr")):
        args = ["sample", str(out), "--n", "2", "--steps", str(steps), "--out", str(tmp_path / f"s{steps}"),
                "--no-progress", *(["--schedule", schedule] if schedule else [])]
        assert main(args) == 0
        said = json.loads((tmp_path / f"s{steps}" / "summary.json").read_text())
        assert said["steps"] == (steps or 2) and said["nfe_per_image"] == (steps or 2), said
        assert said["schedule"] == (schedule or "auto")
        assert f"{steps or 2} network evaluations per image" in capsys.readouterr().out
