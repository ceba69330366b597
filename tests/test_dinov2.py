"""FD_DINOv2: the DINOv2 graph against an independent implementation (Hugging Face transformers' Dinov2Model) on
the same random weights and inputs, EDM2's preprocessing against dgm-eval's PIL resize, local weights that load
without executing code, and `scorekit eval --metrics fd_dinov2` end to end with a small random backbone."""

import json

import numpy as np
import pytest
import torch

from scorekit.metrics.dinov2 import DINOv2, architecture, load_dinov2, preprocess

SMALL = {"dim": 128, "depth": 2, "heads": 2, "hidden": 512, "patch": 14, "grid": 5}


def _random_backbone(registers: int = 0, seed: int = 0) -> DINOv2:
    torch.manual_seed(seed)
    net = DINOv2(**SMALL, registers=registers)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)  # LayerScale far from the identity, so a missing one shows
            else:
                p.normal_(0, 0.05 if p.ndim > 1 else 0.2)
    return net.eval()


def _hf_twin(net: DINOv2, positions: torch.Tensor):
    """transformers' Dinov2Model with ``net``'s weights (the official names mapped to Hugging Face's, qkv split)
    and ``positions`` as its position embeddings (so that it need not resize them)."""
    transformers = pytest.importorskip("transformers")
    dim, grid = SMALL["dim"], positions.shape[1] - 1
    cfg = transformers.Dinov2Config(hidden_size=dim, num_hidden_layers=SMALL["depth"],
                                    num_attention_heads=SMALL["heads"], intermediate_size=SMALL["hidden"],
                                    patch_size=SMALL["patch"],
                                    image_size=SMALL["patch"] * int(grid**0.5), layer_norm_eps=1e-6, hidden_act="gelu",
                                    qkv_bias=True, layerscale_value=1.0)
    hf = transformers.Dinov2Model(cfg).eval()
    ours = net.state_dict()
    theirs = {"embeddings.cls_token": ours["cls_token"], "embeddings.mask_token": ours["mask_token"],
              "embeddings.position_embeddings": positions,
              "embeddings.patch_embeddings.projection.weight": ours["patch_embed.proj.weight"],
              "embeddings.patch_embeddings.projection.bias": ours["patch_embed.proj.bias"],
              "layernorm.weight": ours["norm.weight"], "layernorm.bias": ours["norm.bias"]}
    keys = hf.state_dict().keys()
    split = ("q_proj", "k_proj", "v_proj", "o_proj") if "encoder.layer.0.attention.q_proj.weight" in keys else (
        "attention.query", "attention.key", "attention.value", "output.dense")
    for i in range(SMALL["depth"]):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            for kind in ("weight", "bias"):
                theirs[f"{h}{part}.{kind}"] = ours[f"{b}{part}.{kind}"]
        theirs[f"{h}layer_scale1.lambda1"], theirs[f"{h}layer_scale2.lambda1"] = ours[f"{b}ls1.gamma"], ours[
            f"{b}ls2.gamma"]
        for kind in ("weight", "bias"):
            q, k, v = ours[f"{b}attn.qkv.{kind}"].chunk(3)
            for name, value in zip(split[:3], (q, k, v)):
                theirs[f"{h}attention.{name}.{kind}"] = value
            theirs[f"{h}attention.{split[3]}.{kind}"] = ours[f"{b}attn.proj.{kind}"]
    hf.load_state_dict(theirs, strict=True)
    return hf


def test_the_graph_is_dinov2s_at_the_native_grid_and_at_a_resized_one():
    """On the same random weights and images our class token equals transformers' pooler output: at the grid the
    position embeddings were made for (5x5 patches, 70 px), and at 3x3 patches (42 px) with the embeddings
    resized as the official code does (transformers is given the resized ones, so both see the same)."""
    net = _random_backbone()
    g = torch.Generator().manual_seed(1)
    for side in (70, 42):
        x = torch.randn(3, 3, side, side, generator=g)
        positions = net.position_embedding(side // 14, side // 14).detach()
        hf = _hf_twin(net, positions)
        with torch.no_grad():
            want = hf(pixel_values=x).pooler_output
            got = net(x)
        assert got.shape == (3, SMALL["dim"]) and torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
    assert not torch.equal(net.position_embedding(3, 3)[:, 1:], net.pos_embed[:, 1:10])  # it did resize


def test_register_tokens_sit_between_the_class_token_and_the_patches():
    """With registers (the "_reg" backbones) the class token attends to them: the output changes with them, and
    the architecture read from a file finds them."""
    plain = _random_backbone()
    reg = DINOv2(**SMALL, registers=4)
    reg.load_state_dict({**plain.state_dict(), "register_tokens": torch.randn(1, 4, SMALL["dim"])})
    x = torch.randn(2, 3, 70, 70, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(reg(x), plain(x), atol=1e-4)
    assert architecture(reg.state_dict())["registers"] == 4


def test_preprocessing_is_edm2s_and_close_to_dgm_evals_pil_resize():
    """EDM2's torch resize (bicubic, antialiased) against dgm-eval's PIL bicubic resize to 224 of the same uint8
    images: within a grey level on average (EDM2: "almost the same results"); then /255 and ImageNet's mean / std."""
    from PIL import Image

    g = torch.Generator().manual_seed(3)
    u8 = (torch.rand(4, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    ours = preprocess(u8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    grey = (ours * std + mean) * 255
    pil = np.stack([np.asarray(Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB").resize((224, 224),
                                                                                          Image.Resampling.BICUBIC))
                    for img in u8])
    diff = (grey - torch.from_numpy(pil).permute(0, 3, 1, 2).float()).abs()
    assert ours.shape == (4, 3, 224, 224) and float(diff.mean()) < 1.0, float(diff.mean())
    assert torch.equal(preprocess(u8[:, :1]), preprocess(u8[:, :1].expand(-1, 3, -1, -1)))  # grey -> RGB


def test_local_weights_load_and_bad_files_are_refused(tmp_path, monkeypatch):
    from scorekit.errors import ScorekitError

    net = _random_backbone()
    path = tmp_path / "dinov2_small.pth"
    torch.save(net.state_dict(), path)
    loaded, info = load_dinov2(path)
    assert info["dim"] == 128 and info["depth"] == 2 and info["grid"] == 5 and len(info["weights_sha256"]) == 64
    x = torch.randn(1, 3, 70, 70)
    assert torch.equal(loaded(x), net(x))
    monkeypatch.delenv("SCOREKIT_DINOV2_WEIGHTS", raising=False)
    with pytest.raises(ScorekitError, match="nothing is downloaded"):
        load_dinov2(None)
    giant = tmp_path / "giant.pth"
    torch.save({"blocks.0.mlp.w12.weight": torch.zeros(2, 2)}, giant)
    with pytest.raises(ScorekitError, match="ViT-g/14"):
        load_dinov2(giant)

    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Boom()}, evil)
    with pytest.raises(Exception, match="refused|corrupted|weights_only|Unsupported"):
        load_dinov2(evil)


def test_eval_reports_fd_dinov2_from_a_local_file(tmp_path, capsys):
    """`scorekit eval RUN --metrics fd_dinov2 --dinov2-weights FILE` on a digits run with a small random backbone:
    the JSON holds fd_dinov2 and the backbone's protocol; it needs no Inception weights; beside fid it is one
    more judge. A statistics file of another extractor as the only reference is refused in one line."""
    from scorekit.cli import main
    from scorekit.config import load_config
    from scorekit.interop.common import write_run
    from scorekit.model.factory import build_denoiser

    weights = tmp_path / "dinov2_small.pth"
    torch.save(_random_backbone().state_dict(), weights)
    cfg = load_config("ddpm-digits", ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[]",
                                      "process.num_timesteps=10", "sampling.steps=3"])
    write_run(tmp_path / "run", cfg, build_denoiser(cfg).net.state_dict(), None, 1, {"test": "random"})
    out = tmp_path / "e.json"
    assert main(["eval", str(tmp_path / "run"), "--n", "24", "--metrics", "fd_dinov2,fid", "--dinov2-weights",
                 str(weights), "--no-progress", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    judges = {j["extractor"]["name"]: j for j in res["protocol"]["judges"]}
    assert "dinov2" in judges and judges["dinov2"]["extractor"]["dim"] == 128 and "hog_fd" in res["metrics"]
    value = res["metrics"]["fd_dinov2"] if res["metrics"]["fd_dinov2"] is not None else res["metrics"][
        "values_below_min_n"]["fd_dinov2"]
    assert value > 0
    assert main(["fid-ref", "digits", "--out", str(tmp_path / "stats.npz"), "--extractor", "digits-proxy"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--n", "4", "--metrics", "fd_dinov2", "--dinov2-weights",
                 str(weights), "--ref", str(tmp_path / "stats.npz"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--dinov2-ref" in err and len(err.splitlines()) == 1
