"""Conversions: diffusers folders both ways, the authors' DDPM (pytorch_diffusion) and NCSNv2 checkpoints."""

import json

import pytest
import torch

from scorekit.cli import main
from scorekit.config import load_config
from scorekit.errors import CheckpointError
from scorekit.interop.authors import import_ncsnv2, import_pytorch_diffusion
from scorekit.interop.diffusers import import_diffusers
from scorekit.interop.diffusers_config import unet2d_kwargs
from scorekit.model.factory import build_net
from scorekit.run import load

diffusers = pytest.importorskip("diffusers")

CONFIGS = {  # our U-Net kwargs: the paper's CIFAR-10 model and a small one
    "cifar10": dict(resolution=32, in_ch=3, out_ch=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                    attn_resolutions=(16,), dropout=0.1),
    "small": dict(resolution=16, in_ch=1, out_ch=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                  attn_resolutions=(8,), dropout=0.0),
}


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def _diffusers_folder(tmp_path, name, **sched):
    unet = _randomise(diffusers.UNet2DModel(**unet2d_kwargs(**CONFIGS[name])).eval())
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                        variance_type="fixed_large", **sched)
    folder = tmp_path / f"ddpm-{name}"
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return unet, scheduler, folder


def _inputs(name, n=2):
    c = CONFIGS[name]
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, c["in_ch"], c["resolution"], c["resolution"], generator=g), torch.tensor([3, 777])[:n]


@pytest.mark.parametrize("name", ["small", "cifar10"])
def test_diffusers_folder_converts_to_the_same_network_and_schedule(tmp_path, name, capsys):
    unet, scheduler, folder = _diffusers_folder(tmp_path, name)
    assert main(["convert", "diffusers", str(folder), "--out", str(tmp_path / "run")]) == 0
    d = load(tmp_path / "run")
    x, t = _inputs(name)
    with torch.no_grad():
        ref = unet(x, t).sample
        ours = d.net(x, t.float())
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4), (ours - ref).abs().max()
    assert torch.allclose(d.process.alphas_cumprod.float(), scheduler.alphas_cumprod, atol=1e-6)
    assert d.variance.value == "fixedlarge" and d.config.sampling.clip_denoised
    assert sum(p.numel() for p in d.net.parameters()) == sum(p.numel() for p in unet.parameters())


def test_export_then_from_pretrained_round_trips(tmp_path):
    from scorekit.training import train_run

    run = tmp_path / "run"
    train_run("ddpm-digits", run, ["model.ch=32", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                   "training.steps=2", "training.batch_size=8", "process.schedule=cosine",
                                   "process.num_timesteps=100", "sampling.steps=0"],
              device="cpu", progress=False, evaluate=False)
    d = load(run)
    _randomise(d.net, 3)  # make every layer matter (the zero-initialised ones too)
    from scorekit.interop.diffusers import export_diffusers

    out = export_diffusers(d, tmp_path / "exported")
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 60])
    with torch.no_grad():
        assert torch.allclose(pipe.unet(x, t).sample, d.net(x, t.float()), atol=1e-5)
    assert torch.allclose(pipe.scheduler.alphas_cumprod, d.process.alphas_cumprod.float(), atol=1e-6)
    back = import_diffusers(out, tmp_path / "back")
    d2 = load(back)
    assert all(torch.equal(a, b) for a, b in zip(d.net.state_dict().values(), d2.net.state_dict().values()))


def test_old_diffusers_attention_names_and_mismatches(tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, folder = _diffusers_folder(tmp_path, "small")
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    old = {k.replace(".to_q.", ".query.").replace(".to_out.0.", ".proj_attn."): v for k, v in state.items()}
    save_file(old, str(path))
    import_diffusers(folder, tmp_path / "old")  # pre-0.15 names load too
    broken = dict(state)
    del broken["down_blocks.0.resnets.0.conv1.weight"]
    broken["extra.weight"] = torch.zeros(1)
    broken["conv_in.bias"] = torch.zeros(7)
    save_file(broken, str(path))
    with pytest.raises(CheckpointError) as e:
        import_diffusers(folder, tmp_path / "broken")
    msg = str(e.value)
    assert "missing: down.0.block.0.conv1.weight" in msg and "unexpected: extra.weight" in msg
    assert "conv_in.bias (7,) (expected (32,))" in msg
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    cfg["attention_head_dim"] = 8
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="one attention head"):
        import_diffusers(folder, tmp_path / "heads")


# Keys and shapes read from pesser/pytorch_diffusion's Model for the CIFAR-10 configuration.
PYTORCH_DIFFUSION_KEYS = {
    "temb.dense.0.weight": (512, 128), "temb.dense.1.bias": (512,), "conv_in.weight": (128, 3, 3, 3),
    "down.0.block.1.conv2.weight": (128, 128, 3, 3), "down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "down.1.attn.1.q.weight": (256, 256, 1, 1), "down.1.attn.0.proj_out.bias": (256,),
    "down.2.downsample.conv.weight": (256, 256, 3, 3), "mid.attn_1.k.weight": (256, 256, 1, 1),
    "mid.block_2.temb_proj.weight": (256, 512), "up.1.attn.2.v.weight": (256, 256, 1, 1),
    "up.0.block.2.nin_shortcut.weight": (128, 256, 1, 1), "up.3.upsample.conv.weight": (256, 256, 3, 3),
    "up.0.block.0.conv1.weight": (128, 384, 3, 3), "norm_out.weight": (128,), "conv_out.weight": (3, 128, 3, 3),
}


def _split_qkv(state):
    out = {}
    for k, v in state.items():
        if ".qkv." in k:
            for part, n in zip(v.chunk(3), "qkv"):
                out[k.replace(".qkv.", f".{n}.")] = part.clone()
        else:
            out[k] = v
    return out


def test_pytorch_diffusion_checkpoint(tmp_path):
    net = _randomise(build_net(load_config("ddpm-cifar10")), 4)
    state = _split_qkv(net.state_dict())
    for key, shape in PYTORCH_DIFFUSION_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("down.0.block.0.nin_shortcut") for k in state)
    torch.save(state, tmp_path / "diffusion_cifar10_model.ckpt")
    run = import_pytorch_diffusion(tmp_path / "diffusion_cifar10_model.ckpt", "ddpm-cifar10", tmp_path / "run")
    d = load(run)
    x, t = _inputs("cifar10")
    with torch.no_grad():
        assert torch.allclose(d.net(x, t.float()), net.eval()(x, t.float()), atol=1e-5)
    del state["mid.attn_1.k.weight"]
    state["mid.attn_1.q.weight"] = torch.zeros(256, 256, 3, 3)
    torch.save(state, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"missing: mid.attn_1.k.weight.*wrong shape: mid.attn_1.q.weight"):
        import_pytorch_diffusion(tmp_path / "bad.ckpt", "ddpm-cifar10", tmp_path / "bad")


# Keys read from ermongroup/ncsnv2's models (NCSNv2 on CIFAR-10, saved from DataParallel).
NCSNV2_KEYS = {
    "module.begin_conv.weight": (128, 3, 3, 3), "module.normalizer.alpha": (128,),
    "module.res2.0.conv2.conv.weight": (256, 128, 3, 3), "module.res2.0.shortcut.conv.weight": (256, 128, 1, 1),
    "module.res3.0.shortcut.weight": (256, 256, 3, 3), "module.res4.1.normalize2.gamma": (256,),
    "module.refine1.adapt_convs.0.2_2_conv.weight": (256, 256, 3, 3), "module.refine2.msf.convs.1.bias": (256,),
    "module.refine4.output_convs.3_2_conv.weight": (128, 128, 3, 3), "module.refine3.crp.convs.1.weight":
        (128, 128, 3, 3), "module.end_conv.weight": (3, 128, 3, 3), "module.sigmas": (232,),
}


def test_ncsnv2_checkpoint_with_ema(tmp_path, capsys):
    cfg = load_config("ncsnv2-cifar10")
    net = _randomise(build_net(cfg), 5)
    ema = _randomise(build_net(cfg), 6)
    from scorekit.model.factory import build_process

    model = {f"module.{k}": v for k, v in net.state_dict().items()}
    model["module.sigmas"] = build_process(cfg).sigmas_desc.float()
    for key, shape in NCSNV2_KEYS.items():
        assert tuple(model[key].shape) == shape, key
    states = [model, {"state": {}, "param_groups": []}, 12, 3000, dict(ema.named_parameters())]
    torch.save(states, tmp_path / "checkpoint.pth")
    assert main(["convert", "ncsnv2", str(tmp_path / "checkpoint.pth"), "--preset", "ncsnv2-cifar10",
                 "--out", str(tmp_path / "run")]) == 0
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(load(tmp_path / "run").net(x), ema.eval()(x), atol=1e-5)  # EMA by default
        assert torch.allclose(load(tmp_path / "run", ema=False).net(x), net.eval()(x), atol=1e-5)
    assert load(tmp_path / "run").checkpoint_step == 3000
    with pytest.raises(CheckpointError, match="noise levels"):
        import_ncsnv2(tmp_path / "checkpoint.pth", "ncsnv2-celeba", tmp_path / "wrong")
    assert main(["convert", "ncsnv2", str(tmp_path / "checkpoint.pth"), "--out", str(tmp_path / "x")]) == 2
    assert "needs --preset" in capsys.readouterr().err


def test_ncsn_v1_keys_are_the_authors(tmp_path):
    state = build_net(load_config("ncsn-cifar10")).state_dict()
    for key, shape in {"refine1.crp.norms.0.embed.weight": (10, 768), "res1.0.normalize1.embed.weight": (10, 384),
                       "refine4.adapt_convs.0.1_2_norm.embed.weight": (10, 384),
                       "refine2.msf.norms.1.embed.weight": (10, 768)}.items():
        assert tuple(state[key].shape) == shape, key
