"""Time-step schedules, the stochastic samplers' special cases, NFE counts, and the searched schedule saved
with a run."""

import json
import math

import numpy as np
import pytest
import torch

from scorekit.processes import VEProcess, VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import sample
from scorekit.samplers.schedules import level_schedule, sigma_schedule
from scorekit.toy import GaussianMixture, exact_denoiser

MIX = GaussianMixture([0.3, 0.7], [[-0.6, -0.4], [0.5, 0.3]], [[0.04, 0.02], [0.03, 0.05]])


@pytest.fixture(params=["vp", "ve"])
def d(request):
    p = VPProcess.from_schedule("linear", 1000) if request.param == "vp" else VEProcess.from_ladder(20.0, 0.01, 300)
    return exact_denoiser(MIX, p, data_range=(-1, 1))


def test_continuous_schedules(d):
    k = sigma_schedule(d, 10, "karras", rho=7.0)
    assert len(k) == 11 and k[-1] == 0 and k[0] == pytest.approx(d.sigma_max) and k[-2] == pytest.approx(d.sigma_min)
    root = k[:-1] ** (1 / 7)
    assert torch.allclose(root[1:] - root[:-1], (root[1] - root[0]).expand(9), rtol=1e-9)  # even in sigma^(1/rho)
    lin = sigma_schedule(d, 10, "karras", rho=1.0)[:-1]
    assert torch.allclose(lin[1:] - lin[:-1], (lin[1] - lin[0]).expand(9), rtol=1e-9)
    s = sigma_schedule(d, 10, "logsnr")[:-1].log()  # log-SNR = -2 log sigma: evenly spaced
    assert torch.allclose(s[1:] - s[:-1], (s[1] - s[0]).expand(9), rtol=1e-9)


def test_discrete_schedules(d):
    p = d.process
    u = level_schedule(p, 10, "uniform")
    assert u[0] == 0 and u[-1] == p.num_levels - 1 and len(u) == 10
    q = level_schedule(p, 10, "quad")
    assert q[0] == 0 and int(q[-1]) == int(0.8 * p.num_levels) and len(q) == 10
    for kind in ("karras", "logsnr"):
        lv = level_schedule(p, 10, kind)
        assert bool((lv[1:] > lv[:-1]).all()) and lv[-1] == p.num_levels - 1 and 3 <= len(lv) <= 11
    sig = sigma_schedule(d, 10, "uniform")  # the same levels in sigma-space, highest first, then 0
    assert torch.equal(sig[:-1], p.sigmas.cpu()[u.flip(0)]) and sig[-1] == 0


def _x(name, d, n=64, **kw):
    return sample(d, name, (n, 2), ImageRNG(0, n), clip_denoised=False, **kw)


def test_stochastic_samplers_reduce_to_their_deterministic_counterparts(d):
    assert torch.equal(_x("edm_stochastic", d, steps=8, s_churn=0.0), _x("heun", d, steps=8))
    assert torch.allclose(_x("dpm2m_sde", d, steps=8, eta=0.0), _x("dpm2m", d, steps=8), atol=1e-6)
    assert torch.equal(_x("restart", d, steps=8, restart=(3, 0, 0.1, 0.5)), _x("heun", d, steps=8))
    assert not torch.equal(_x("edm_stochastic", d, steps=8, s_churn=40.0, s_tmax=100.0), _x("heun", d, steps=8))


def test_nfe_of_the_new_samplers():
    d = exact_denoiser(MIX, VPProcess.from_schedule("linear", 1000))
    for name, kw, nfe in [("edm_stochastic", {}, 19), ("dpm2m_sde", {}, 10),
                          ("restart", {"restart": (3, 2, 0.06, 0.3)}, 19 + 2 * 2 * 3)]:
        d.nfe = 0
        sample(d, name, (4, 2), ImageRNG(0, 4), steps=10, **kw)
        assert d.nfe == nfe, name


def test_discrete_samplers_take_a_schedule():
    d = exact_denoiser(MIX, VPProcess.from_schedule("linear", 200))
    a = sample(d, "ancestral", (8, 2), ImageRNG(0, 8), steps=10, schedule="quad", clip_denoised=False)
    b = sample(d, "ancestral", (8, 2), ImageRNG(0, 8), timesteps=level_schedule(d.process, 10, "quad").tolist(),
               clip_denoised=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(d, "ancestral", (8, 2), ImageRNG(0, 8), steps=10, clip_denoised=False))


def test_a_searched_schedule_beats_a_poor_start_and_is_used_by_auto():
    """On the exact mixture, the search lowers its criterion (moment errors of 400 samples); saved with the
    model, schedule="auto" uses it, and an explicit schedule name does not."""
    from scorekit.evaluation.schedule_search import search_schedule

    d = exact_denoiser(MIX, VEProcess.from_ladder(20.0, 0.01, 300), data_range=(-1, 1))
    d.config = type("C", (), {"sampling": type("S", (), dict(steps=0, clip_denoised=False, n_steps_each=1,
                                                             step_lr=1e-5, denoise=True, schedule="auto"))()})()

    def criterion(u8):  # the images come back quantised to uint8 on [-1, 1]; compare moments there
        x = u8.double().flatten(1) / 127.5 - 1
        return float((x.mean(0) - MIX.mean()).norm() + (torch.cov(x.T) - MIX.covariance()).norm())

    d.image_shape = (2,)
    res = search_schedule(d, "euler", 4, criterion, n=400, rounds=1, validate_seeds=(5,), say=lambda s: None)
    default_value = res["default_value"]
    assert res["value"] <= default_value and len(res["schedule"]) == 5 and res["schedule"][-1] == 0
    d.schedules = {"euler:4": {"schedule": res["schedule"]}}
    auto = sample(d, "euler", (16, 2), ImageRNG(3, 16), steps=4, clip_denoised=False)
    explicit = sample(d, "euler", (16, 2), ImageRNG(3, 16), sigmas=res["schedule"], clip_denoised=False)
    karras = sample(d, "euler", (16, 2), ImageRNG(3, 16), steps=4, schedule="karras", clip_denoised=False)
    assert torch.equal(auto, explicit) and not torch.equal(auto, karras)


def _tiny_run(run):
    """A two-step ddpm-digits run on 20 levels, for the tune-schedule commands."""
    from scorekit.training import train_run

    train_run("ddpm-digits", run, ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                   "training.batch_size=16", "training.steps=2", "process.num_timesteps=20",
                                   "sampling.steps=0"], device="cpu", progress=False, evaluate=False)
    return run


def test_tune_schedule_command_saves_the_schedule_that_sample_then_uses(tmp_path, capsys):
    from scorekit.cli import main

    run = _tiny_run(tmp_path / "run")
    assert main(["tune-schedule", str(run), "--sampler", "heun", "--steps", "3", "--n", "128", "--rounds", "0",
                 "--no-progress"]) == 0
    assert "heun at 3 steps" in capsys.readouterr().out
    saved = json.loads((run / "schedules.json").read_text())["heun:3"]
    assert saved["criterion"] == "proxy FD of 128 samples" and len(saved["schedule"]) == 4
    assert main(["sample", str(run), "--sampler", "heun", "--steps", "3", "--n", "4", "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 0
    from scorekit.run import load

    d = load(run)
    explicit = sample(d, "heun", (4, 1, 8, 8), ImageRNG(0, range(4)), sigmas=saved["schedule"])
    from scorekit.evaluation.generate import samples_u8

    got = np.load(tmp_path / "a" / "samples.npz")["samples"]
    assert np.array_equal(got, samples_u8(explicit, d).permute(0, 2, 3, 1).numpy())  # on the run's 17 values
    # a searched schedule wins over the run's own sampling.schedule (logsnr here) unless --schedule is given
    table = json.loads((run / "schedules.json").read_text())
    table["heun:3"]["schedule"] = odd = [float(d.process.sigma_max), 5.0, 0.5, 0.0]
    (run / "schedules.json").write_text(json.dumps(table))
    for flags, want in (([], odd), (["--schedule", "logsnr"], None)):
        assert main(["sample", str(run), "--sampler", "heun", "--steps", "3", "--n", "4", "--out", str(tmp_path / "b"),
                     "--no-progress", *flags]) == 0
        got = np.load(tmp_path / "b" / "samples.npz")["samples"]
        x = sample(load(run), "heun", (4, 1, 8, 8), ImageRNG(0, range(4)), clip_denoised=True, **(
            {"sigmas": want} if want else {"schedule": "logsnr", "steps": 3}))  # the run's clip_denoised
        assert np.array_equal(got, samples_u8(x, d).permute(0, 2, 3, 1).numpy()), flags
    assert main(["tune-schedule", str(run), "--sampler", "langevin", "--steps", "3"]) == 2
    assert math.isfinite(saved["value"])


def test_every_judge_weighs_each_judge_by_its_first_value():
    """--criterion all: each judge's FD over its FD on the first images, summed; a schedule that halves one judge's
    FD and doubles the other's scores 2.5, worse than one that lowers both by a tenth (1.8); the first scores 2."""
    from scorekit.evaluation.schedule_search import EveryJudge

    class Meter:
        names = ["proxy FD", "HOG FD"]
        calls = iter([{"proxy FD": 20.0, "HOG FD": 200.0}, {"proxy FD": 10.0, "HOG FD": 400.0},
                      {"proxy FD": 18.0, "HOG FD": 180.0}])

        def all(self, images):
            return next(self.calls)

    crit = EveryJudge(Meter())
    assert [crit(None) for _ in range(3)] == [pytest.approx(2.0), pytest.approx(2.5), pytest.approx(1.8)]
    assert crit.values[1] == {"proxy FD": 10.0, "HOG FD": 400.0} and "proxy FD + HOG FD" in crit.name


def test_tune_schedule_can_search_on_every_judge(tmp_path):
    from scorekit.cli import main

    run = _tiny_run(tmp_path / "run")
    assert main(["tune-schedule", str(run), "--sampler", "heun", "--steps", "3", "--n", "128", "--rounds", "0",
                 "--criterion", "all", "--no-progress"]) == 0
    saved = json.loads((run / "schedules.json").read_text())["heun:3"]
    assert saved["criterion"].startswith("proxy FD + HOG FD") and saved["criterion"].endswith("of 128 samples")
    assert 0 < saved["value"] <= 2.0 + 1e-9  # the best of stage 1, which includes the first candidate at 2
