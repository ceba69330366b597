"""Every fast path computes what the plain path computes: channels-last, torch.compile, bf16 autocast,
and training with the fast path switched on and off."""

import json

import torch

from scorekit.nets.refinenet import RefineNet
from scorekit.nets.unet import UNet
from scorekit.training import train_run


def _unet():
    torch.manual_seed(0)
    m = UNet(resolution=8, in_ch=1, out_ch=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
             dropout=0.0)
    for p in m.parameters():  # no zero-initialised layers: every layer must matter
        torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def test_channels_last_networks_equal_the_plain_ones():
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 40.0, 900.0])
    for net, args in [(_unet(), (x, t)), (RefineNet("ncsn", 1, 8, 5, 8).eval(), (x.sigmoid(), torch.tensor([0, 2, 4]))),
                      (RefineNet("ncsnv2", 1, 8, None, 8).eval(), (x.sigmoid(),))]:
        with torch.no_grad():
            plain = net(*args)
            net.to(memory_format=torch.channels_last)
            fast = net(args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        assert torch.allclose(plain, fast, atol=1e-5)


def test_bf16_autocast_stays_close():
    net, x, t = _unet(), torch.randn(3, 1, 8, 8), torch.tensor([1.0, 40.0, 900.0])
    with torch.no_grad():
        plain = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, t).float()
    assert (low - plain).abs().max() < 0.05 * plain.abs().max()


def test_compiled_network_and_compiled_sampling_equal_the_plain_ones(tmp_path):
    """torch.compile (inductor) on the CPU; generate() pads the last batch so the compiled shapes stay
    static and still returns exactly the n images the plain path returns."""
    from scorekit.config import load_config
    from scorekit.evaluation.generate import generate
    from scorekit.model.factory import build_denoiser

    cfg = load_config("ddpm-digits", ["model.ch=16", "model.ch_mult=[1,2]", "model.num_res_blocks=1",
                                      "model.attn_resolutions=[4]", "process.num_timesteps=10", "sampling.steps=0"])
    d = build_denoiser(cfg).eval()
    d.net.load_state_dict(_unet().state_dict())
    plain = generate(d, 5, batch_size=4)
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    fast = generate(d, 5, batch_size=4, compile=True)  # one compilation: every batch has 4 images
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert fast.shape == plain.shape == (5, 1, 8, 8)
    assert (fast.int() - plain.int()).abs().max() <= 1


def test_training_follows_the_same_loss_curve_with_the_fast_path_on_and_off(tmp_path):
    common = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "training.batch_size=16",
              "training.steps=5", "training.log_every=1", "training.warmup=2"]
    curves = {}
    for name, extra in [("plain", ["training.channels_last=false", "training.precision=fp32"]),
                        ("channels_last", ["training.channels_last=true", "training.precision=fp32"]),
                        ("bf16", ["training.channels_last=true", "training.precision=bf16"])]:
        train_run("ddpm-digits", tmp_path / name, common + extra, device="cpu", progress=False, evaluate=False)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        curves[name] = torch.tensor([row["loss"] for row in map(json.loads, lines) if "loss" in row])
    assert torch.allclose(curves["plain"], curves["channels_last"], rtol=1e-4)
    assert torch.allclose(curves["plain"], curves["bf16"], rtol=0.05)
