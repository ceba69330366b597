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


TINY_RUN = ["model.ch=8", "model.ch_mult=[1,2]", "model.norm_groups=2", "training.batch_size=8",
            "training.checkpoint_every=100", "training.test_every=0", "sampling.num_samples=2", "eval.bpd_images=0",
            "eval.proxy_samples=0", "training.snapshot_every=0"]


def _samples(main, argv, out):
    import numpy as np

    assert main(["sample", *argv, "--n", "3", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    return np.load(out / "samples.npz")["samples"]


def test_a_run_keeps_its_guide_and_samples_with_guide_self(tmp_path, capsys):
    """training.guide_at keeps the EMA weights at that fraction of the steps (equal to the final EMA of a run that
    stops there, and the same after an interrupted, resumed run); `--guide self --guidance 1` samples exactly what
    the unguided run samples, `--guide self` is `--guide RUN/checkpoints/guide.safetensors`, `--guide none` is no
    guide; a run that keeps no guide is refused in one line."""
    import numpy as np

    from scorekit.checkpoint import load_checkpoint
    from scorekit.cli import main
    from scorekit.run import RunDir
    from scorekit.training import train_run

    keep = [*TINY_RUN, "training.guide_at=0.5"]
    for name, steps, cut in (("main", 4, None), ("cut", 4, 1), ("short", 2, None)):
        if cut:  # interrupted at step 1, then resumed to the end
            train_run("ddpm-digits", tmp_path / name, [*keep, f"training.steps={cut}"], device="cpu", progress=False,
                      evaluate=False)
        train_run(tmp_path / name if cut else "ddpm-digits", None if cut else tmp_path / name,
                  [f"training.steps={steps}"] if cut else [*keep, f"training.steps={steps}"],
                  device="cpu", progress=False, evaluate=False)
    kept = load_checkpoint(RunDir(tmp_path / "main").guide_path)
    short = load_checkpoint(RunDir(tmp_path / "short").latest())
    resumed = load_checkpoint(RunDir(tmp_path / "cut").guide_path)
    assert kept.step == 2 and all(torch.equal(kept.model[k], short.ema[k]) for k in short.ema)
    assert all(torch.equal(kept.model[k], resumed.model[k]) for k in kept.model)
    final = load_checkpoint(RunDir(tmp_path / "main").latest())
    assert not all(torch.equal(kept.model[k], final.ema[k]) for k in kept.model)  # a weaker, earlier model

    run = str(tmp_path / "main")
    plain = _samples(main, [run], tmp_path / "plain")
    assert np.array_equal(_samples(main, [run, "--guide", "self", "--guidance", "1"], tmp_path / "w1"), plain)
    assert np.array_equal(_samples(main, [run, "--guide", "none"], tmp_path / "none"), plain)
    capsys.readouterr()  # no --guidance and no recorded choice: refused; a recorded weight is what --guidance gives
    assert main(["sample", run, "--guide", "self", "--n", "2", "--no-progress", "--out", str(tmp_path / "x")]) == 2
    assert "guide.json" in capsys.readouterr().err
    RunDir(run).guide_choice_path.write_text('{"guidance": 1.0, "guidance_interval": null}')
    assert np.array_equal(_samples(main, [run, "--guide", "self"], tmp_path / "rec"), plain)
    w3 = _samples(main, [run, "--guide", "self", "--guidance", "30", "--raw"], tmp_path / "w3")
    assert not np.array_equal(w3, _samples(main, [run, "--raw"], tmp_path / "raw"))
    assert np.array_equal(_samples(main, [run, "--guide", str(RunDir(run).guide_path), "--guidance", "30", "--raw"],
                                   tmp_path / "file"), w3)
    RunDir(run).guide_choice_path.write_text('{"guidance": 30, "guidance_interval": null}')
    assert np.array_equal(_samples(main, [run, "--guide", "self", "--raw"], tmp_path / "rec30"), w3)
    train_run("ddpm-digits", tmp_path / "bare", [*TINY_RUN, "training.steps=1", "training.guide_at=0"], device="cpu",
              progress=False, evaluate=False)
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "bare"), "--guide", "self", "--guidance", "2", "--n", "2",
                 "--no-progress", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--guide self" in err and "keeps no guide" in err and len(err.splitlines()) == 1


def test_autoguidance_of_class_draws_guides_the_conditional_model(tmp_path):
    """A class-conditional run autoguided by its kept guide (EDM2): both networks see the drawn classes, the
    classifier-free mix is off, D = D_G(x | c) + w (D(x | c) - D_G(x | c)); w = 1 draws what --class draws at
    classifier-free scale 1."""
    import numpy as np

    from scorekit.cli import main
    from scorekit.run import RunDir, load
    from scorekit.training import train_run

    train_run("ddpm-digits-cond", tmp_path / "c", [*TINY_RUN, "training.guide_at=0.5", "training.steps=4"],
              device="cpu", progress=False, evaluate=False)
    run = str(tmp_path / "c")
    cond = _samples(main, [run, "--class", "3", "--guidance", "1"], tmp_path / "cond")
    assert np.array_equal(_samples(main, [run, "--class", "3", "--guide", "self", "--guidance", "1"],
                                   tmp_path / "w1"), cond)
    d, g = load(run), load(RunDir(run).guide_path)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # four steps leave the zero-initialised output layer near zero: give both nets weights
        for p in (*d.net.parameters(), *g.net.parameters()):
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    x = torch.randn(3, 1, 8, 8, generator=gen)
    t, labels = torch.tensor([10, 400, 900]), torch.tensor([3, 3, 3])
    got = conditional(autoguided(d, g, 2.5), labels)(x, t).eps
    want_main, want_guide = conditional(d, labels)(x, t).eps, conditional(g, labels)(x, t).eps
    assert float((want_main - want_guide).abs().max()) > 0.1
    assert torch.allclose(got, want_guide + 2.5 * (want_main - want_guide), rtol=1e-5, atol=1e-5)
    assert float((want_main - d(x, t, y=torch.full((3,), 10)).eps).abs().max()) > 0.1  # the classes reach the nets
