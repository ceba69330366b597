"""Export to diffusers for every DDPM preset: the network diffusers builds from the folder equals ours, its
pipeline runs, convert(export(run)) gives the run back, a learned variance steps as diffusers steps it, and
what diffusers cannot express is refused before anything is written."""

import json

import pytest
import torch

from scorekit.cli import main
from scorekit.config import load_config, preset_names
from scorekit.interop.common import write_run
from scorekit.model.factory import build_denoiser
from scorekit.run import load

diffusers = pytest.importorskip("diffusers")

DDPM = [p for p in preset_names() if p.startswith("ddpm-")]


def _reduced(preset: str) -> list[str]:
    """Paper presets at reduced width (and 32x32 for the 256x256 ones) to stay fast; digits presets as they are."""
    cfg = load_config(preset)
    if cfg.data.dataset == "digits":
        return []
    return ["model.ch=32", "data.resolution=32", "model.dropout=0.0"]


def _run(tmp_path, preset, extra=()):
    cfg = load_config(preset, [*_reduced(preset), *extra])
    d = build_denoiser(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in d.net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    sd = d.net.state_dict()
    return write_run(tmp_path / f"run-{preset}", cfg, sd, sd, 10, {"test": preset}), cfg


@pytest.mark.parametrize("preset", DDPM)
def test_every_ddpm_preset_exports_or_is_refused_with_a_reason(preset, tmp_path, capsys):
    run, cfg = _run(tmp_path, preset)
    out = tmp_path / "exported"
    if cfg.model.num_classes:  # the one kind of DDPM preset diffusers' DDPMPipeline cannot sample
        assert main(["export", "diffusers", str(run), "--out", str(out)]) == 2
        assert "model.num_classes=10: DDPMPipeline samples unconditional models only" in capsys.readouterr().err
        assert not out.exists()
        return
    assert main(["export", "diffusers", str(run), "--out", str(out)]) == 0
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    d = load(run)
    c, r = cfg.data.channels, cfg.data.resolution
    x = torch.randn(2, c, r, r, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([5, 700])
    with torch.no_grad():
        ours, theirs = d.net(x, t.float()), pipe.unet(x, t).sample
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-5
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (1, r, r, c)
    # and back: convert(export(run)) is the same network and the same configuration
    assert main(["convert", "diffusers", str(out), "--out", str(tmp_path / "back")]) == 0
    back = load(tmp_path / "back")
    for k, v in d.net.state_dict().items():
        assert torch.equal(v, back.net.state_dict()[k]), k
    for section in ("model", "process"):
        assert getattr(back.config, section) == getattr(cfg, section), section
    assert back.config.sampling.clip_denoised == cfg.sampling.clip_denoised


def test_a_learned_range_run_steps_as_diffusers_steps_it(tmp_path):
    run, cfg = _run(tmp_path, "ddpm-cifar10", ["model.variance=learned_range", "training.loss=hybrid"])
    assert main(["export", "diffusers", str(run), "--out", str(tmp_path / "e")]) == 0
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "e")
    assert pipe.scheduler.config.variance_type == "learned_range" and pipe.unet.config.out_channels == 6
    d = load(run)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for t in (999, 400, 1):
        with torch.no_grad():
            out = pipe.unet(x, torch.tensor([t, t])).sample
            theirs = pipe.scheduler.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
            mean, log_var, _ = d.p_mean_variance(x, torch.tensor([t, t]), clip=cfg.sampling.clip_denoised)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
        ours = mean + torch.exp(0.5 * log_var) * noise
        assert torch.allclose(ours, theirs, atol=1e-4), (t, (ours - theirs).abs().max())


@pytest.mark.parametrize("extra,message", [
    (["model.norm_groups=0", "model.ch=16", "model.ch_mult=[1,2,4]"],
     "model.norm_groups=0 gives [16, 32] groups in different layers"),
    (["model.variance=learned", "training.loss=kl"], "model.variance=learned"),
    (["model.output=mean"], "model.output=mean: DDPMScheduler predicts epsilon or the sample"),
    (["model.arch=ncsnv2", "model.ngf=8", "model.output=eps"], "model.arch=ncsnv2"),
])
def test_what_diffusers_cannot_express_is_refused_before_anything_is_written(extra, message, tmp_path, capsys):
    run, _ = _run(tmp_path, "ddpm-digits", extra)
    assert main(["export", "diffusers", str(run), "--out", str(tmp_path / "e")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_diffusers_pipeline_and_the_ancestral_sampler_draw_the_same_law(tmp_path):
    """A small trained digits model exported: DDPMPipeline and scorekit's Algorithm 2 over the same 20 levels give
    samples with the same pixel means and spread (400 each; 4 standard errors)."""
    from scorekit.training import train_run

    run = tmp_path / "r"
    train_run("ddpm-digits", run, ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                   "model.norm_groups=4", "training.batch_size=32", "training.steps=150",
                                   "process.num_timesteps=20", "sampling.steps=0"], device="cpu", progress=False,
              evaluate=False)
    assert main(["export", "diffusers", str(run), "--out", str(tmp_path / "e")]) == 0
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "e")
    pipe.set_progress_bar_config(disable=True)
    n = 400
    theirs = torch.from_numpy(pipe(batch_size=n, num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                                   output_type="np").images).permute(0, 3, 1, 2) * 2 - 1
    from scorekit.rng import ImageRNG
    from scorekit.samplers import sample_ancestral

    d = load(run)
    ours = sample_ancestral(d, (n, 1, 8, 8), ImageRNG(5, n), clip_denoised=True).clamp(-1, 1)
    se = (theirs.std(0) ** 2 / n + ours.std(0) ** 2 / n).sqrt()
    assert ((theirs.mean(0) - ours.mean(0)).abs() < 4 * se + 0.02).float().mean() > 0.95
    assert abs(theirs.std().item() - ours.std().item()) < 0.05
    assert json.loads((tmp_path / "e" / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"] == 20


def test_a_flow_run_steps_in_diffusers_flow_matching_scheduler_as_scorekit_does(tmp_path):
    """An exported flow run: diffusers' UNet2DModel + FlowMatchEulerDiscreteScheduler over the same times from the
    same noise land where scorekit's Euler sampler (the flow's Euler in sigma-space) does."""
    from scorekit.rng import ImageRNG
    from scorekit.samplers.ode import sample_euler
    from scorekit.training import train_run

    run = tmp_path / "r"
    train_run("fm-digits", run, ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                 "training.batch_size=16", "training.steps=3", "training.snapshot_every=0"],
              device="cpu", progress=False, evaluate=False)
    assert main(["export", "diffusers", str(run), "--out", str(tmp_path / "e")]) == 0
    assert not (tmp_path / "e" / "model_index.json").exists()
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "e" / "unet").double().eval()
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path / "e" / "scheduler")
    taus = [0.99, 0.8, 0.55, 0.3, 0.1, 0.02]
    sched.set_timesteps(sigmas=taus)
    z = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = z.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    d = load(run)
    d.net.double()
    tau = torch.tensor(taus + [0.0], dtype=torch.float64)
    ours = sample_euler(d, (4, 1, 8, 8), ImageRNG(0, 4), sigmas=tau / (1 - tau), x_T=z / (1 - taus[0]))
    assert torch.allclose(ours, x, atol=1e-5), (ours - x).abs().max()
