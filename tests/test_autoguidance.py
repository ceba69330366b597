"""Autoguidance and guidance intervals (issue 39), on closed forms: the exact Gaussian-mixture denoiser guided by a
deliberately blurred copy of it (the exact denoiser of the same mixture with wider components), the formula
D_w = D_guide + w (D_main - D_guide) at every level, w = 1 the main model exactly, the interval an identity
outside it, guides of another kind refused; classifier-free guidance's interval on a class-conditional toy net."""

import pytest
import torch
from torch import nn

from scorekit.errors import ScorekitError
from scorekit.model.autoguidance import autoguided
from scorekit.model.denoiser import Denoiser
from scorekit.model.guidance import conditional
from scorekit.processes import VEProcess, VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import sample
from scorekit.toy import GaussianMixture, exact_denoiser

P = VPProcess.from_schedule("linear", 1000)
MIX = GaussianMixture([0.3, 0.7], [[-0.6, -0.4], [0.5, 0.3]], [[0.04, 0.02], [0.03, 0.05]])
BLUR = GaussianMixture(MIX.weights, MIX.means, MIX.variances + 0.05)  # the same data seen less sharply
X = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
T = torch.tensor([3, 50, 200, 400, 700, 999])


def test_the_guided_denoiser_is_the_formula_and_w1_is_the_main_model():
    main, guide = exact_denoiser(MIX, P), exact_denoiser(BLUR, P)
    for w in (0.0, 1.0, 2.5):
        got = autoguided(main, guide, w)(X, T)
        want_x0 = guide(X, T).x0 + w * (main(X, T).x0 - guide(X, T).x0)
        assert torch.allclose(got.x0, want_x0, atol=1e-9), w
    assert torch.equal(autoguided(main, guide, 1.0)(X, T).eps, main(X, T).eps)
    # in sigma-space too (the sigma-space samplers' view)
    sig = torch.tensor([0.05, 0.3, 1.0, 2.0, 10.0, 50.0], dtype=torch.float64)
    d = autoguided(main, guide, 2.0).denoise(X, sig)
    assert torch.allclose(d, guide.denoise(X, sig) + 2.0 * (main.denoise(X, sig) - guide.denoise(X, sig)), atol=1e-6)


def test_the_guidance_interval_is_the_main_model_outside_it():
    main, guide = exact_denoiser(MIX, P), exact_denoiser(BLUR, P)
    sigmas = P.sigma(T.double())
    lo, hi = float(sigmas[1]), float(sigmas[4])  # guided at levels 200, 400, 700 only
    got = autoguided(main, guide, 3.0, interval=(lo, hi))(X, T).x0
    full = autoguided(main, guide, 3.0)(X, T).x0
    plain = main(X, T).x0
    inside = (sigmas > lo) & (sigmas <= hi)
    assert inside.tolist() == [False, False, True, True, True, False]
    assert torch.equal(got[~inside], plain[~inside]) and torch.allclose(got[inside], full[inside])


def test_autoguidance_sharpens_the_components():
    """Guided away from a blurrier copy, the samples' components come out narrower than the main model's (the guide's
    error points to wider components; w > 1 corrects past it) while their weights and means stay."""
    main, guide = exact_denoiser(MIX, P), exact_denoiser(BLUR, P)
    n = 4000
    plain = sample(main, "heun", (n, 2), ImageRNG(1, n, per_image=False), steps=30)
    sharp = sample(autoguided(main, guide, 2.0), "heun", (n, 2), ImageRNG(1, n, per_image=False), steps=30)
    for x in (plain, sharp):
        assert abs(float((x[:, 0] < 0).double().mean()) - 0.3) < 0.03
    right = lambda x: x[x[:, 0] > 0]  # noqa: E731 - the larger component
    assert float(right(sharp).var(0).sum()) < 0.8 * float(right(plain).var(0).sum())
    assert torch.allclose(right(sharp).mean(0), right(plain).mean(0), atol=0.03)


def test_a_guide_of_another_kind_is_refused():
    main = exact_denoiser(MIX, P)
    with pytest.raises(ScorekitError, match="--guide: the guide's process"):
        autoguided(main, exact_denoiser(MIX, VEProcess.from_ladder(20.0, 0.01, 300)), 2.0)
    with pytest.raises(ScorekitError, match="--guide: the guide's output"):
        autoguided(main, exact_denoiser(MIX, P, output="velocity"), 2.0)
    with pytest.raises(ScorekitError, match="--guidance-interval"):
        autoguided(main, exact_denoiser(BLUR, P), 2.0, interval=(1.0, 0.5))
    with pytest.raises(ScorekitError, match="--guidance"):
        autoguided(main, exact_denoiser(BLUR, P), -1.0)


class _ClassNet(nn.Module):
    """A class-conditional toy network: eps = x * (1 + y) (y = 2 is "no class")."""

    num_classes = 2

    def forward(self, x, label, y=None):
        return x * (1 + y.to(x.dtype)).view(-1, 1)


def test_classifier_free_guidance_interval_is_the_conditional_model_outside_it():
    d = Denoiser(_ClassNet(), P, output="eps")
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    sigmas = P.sigma(T.double())
    lo, hi = float(sigmas[2]), float(sigmas[5])
    got = conditional(d, labels, guidance=3.0, interval=(lo, hi)).raw(X, T)
    cond, uncond = X * (1 + labels.double()).view(-1, 1), X * 3
    inside = ((sigmas > lo) & (sigmas <= hi)).view(-1, 1)
    assert torch.allclose(got, torch.where(inside, uncond + 3.0 * (cond - uncond), cond))


def test_sample_autoguides_a_run_from_the_command_line(tmp_path, capsys):
    """`scorekit sample RUN --guide G --guidance W [--guidance-interval LO,HI]` on two tiny runs of the main job's
    preset; a guide of another process, --guide without --guidance and --guidance-interval alone are refused in one
    line."""
    import json

    from scorekit.cli import main
    from scorekit.training import train_run

    tiny = ["model.ch=8", "model.ch_mult=[1,2]", "model.norm_groups=2", "training.batch_size=8",
            "training.checkpoint_every=100", "training.test_every=0", "sampling.num_samples=2", "eval.bpd_images=0",
            "eval.proxy_samples=0"]
    for name, preset, steps in (("main", "ddpm-digits", 4), ("guide", "ddpm-digits", 2), ("flow", "fm-digits", 2)):
        train_run(preset, tmp_path / name, [*tiny, f"training.steps={steps}", "training.snapshot_every=0"],
                  device="cpu", progress=False, evaluate=False)
    run, out = str(tmp_path / "main"), tmp_path / "s"
    assert main(["sample", run, "--guide", str(tmp_path / "guide"), "--guidance", "2", "--guidance-interval",
                 "0.1,20", "--n", "4", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["guidance"] == 2 and summary["guidance_interval"] == [0.1, 20] and summary["guide"].endswith("guide")
    capsys.readouterr()
    for argv, match in [(["--guide", str(tmp_path / "flow"), "--guidance", "2"], "--guide: the guide's"),
                        (["--guide", str(tmp_path / "guide")], "--guide: give the autoguidance weight"),
                        (["--guidance-interval", "0.1,20"], "--guidance-interval: needs --class")]:
        assert main(["sample", run, "--n", "2", "--no-progress", "--out", str(tmp_path / "x"), *argv]) != 0
        assert match in capsys.readouterr().err
