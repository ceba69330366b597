import torch

from scorekit.nets.layers import timestep_embedding
from scorekit.nets.unet import UNET_CONFIGS, UNet


def test_paper_parameter_counts():
    assert sum(p.numel() for p in UNet(**UNET_CONFIGS["cifar10"]).parameters()) == 35_746_307
    assert sum(p.numel() for p in UNet(**UNET_CONFIGS["256"]).parameters()) == 113_673_219


def test_zero_initialised_output_layers():
    net = UNet(**UNET_CONFIGS["tiny"], in_ch=1, out_ch=1)
    out = net(torch.randn(2, 1, 8, 8), torch.tensor([3, 900]))
    assert out.shape == (2, 1, 8, 8) and out.abs().max().item() == 0.0
    for block in [net.down[0].block[0], net.mid.block_1]:
        assert block.conv2.weight.abs().max().item() == 0.0
        assert block.conv1.weight.std().item() > 0
    assert net.mid.attn_1.proj_out.weight.abs().max().item() == 0.0


def test_variance_scaling_init_has_the_fan_avg_uniform_bound():
    net = UNet(**UNET_CONFIGS["tiny"], in_ch=1, out_ch=1)
    w = net.down[0].block[0].conv1.weight  # 32 -> 32, 3x3: fan_avg = 288
    assert w.abs().max().item() <= (3 / 288) ** 0.5
    assert abs(w.var().item() - 1 / 288) < 2e-4  # uniform(-b, b) has variance b^2/3 = 1/fan_avg


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 1.0, 10.0])
    emb = timestep_embedding(t, 8)
    k = torch.arange(4)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * k / 3)
    assert torch.allclose(emb[2, :4], torch.sin(10 * freqs)) and torch.allclose(emb[2, 4:], torch.cos(10 * freqs))
    assert torch.equal(emb[0], torch.cat([torch.zeros(4), torch.ones(4)]))


def test_attention_block_equals_explicit_softmax_attention():
    from scorekit.nets.layers import AttnBlock

    blk = AttnBlock(32)
    torch.nn.init.normal_(blk.proj_out.weight)
    x = torch.randn(2, 32, 4, 4)
    h = blk.norm(x)
    q, k, v = blk.qkv(h).chunk(3, dim=1)
    q, k, v = (z.flatten(2) for z in (q, k, v))  # (B, C, HW)
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / 32**0.5, dim=-1)
    ref = x + blk.proj_out(torch.einsum("bij,bcj->bci", w, v).reshape(2, 32, 4, 4))
    assert torch.allclose(blk(x), ref, atol=1e-5)


def test_attention_loads_separate_q_k_v_weights():
    from scorekit.nets.layers import AttnBlock

    blk = AttnBlock(32)
    sd = {k: v for k, v in blk.state_dict().items() if not k.startswith("qkv")}
    q, k, v = blk.qkv.weight.detach().chunk(3)
    sd.update({"q.weight": q, "k.weight": k, "v.weight": v, "q.bias": torch.ones(32), "k.bias": torch.zeros(32),
               "v.bias": torch.zeros(32)})
    fresh = AttnBlock(32)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.qkv.weight, blk.qkv.weight) and fresh.qkv.bias[:32].eq(1).all()


def test_the_time_embedding_survives_group_norm_only_with_several_channels_per_group():
    """A ResnetBlock adds the embedding as a per-channel bias before GroupNorm: with one channel per group (the
    32-or-gcd rule on a 16-channel layer) the norm removes it and the block ignores t; model.norm_groups keeps it."""
    from scorekit.nets.layers import ResnetBlock

    x, e1, e2 = torch.randn(2, 16, 4, 4), torch.randn(2, 64), torch.randn(2, 64)
    for groups, sensitive in ((0, False), (4, True)):
        torch.manual_seed(0)
        block = ResnetBlock(16, 16, 64, 0.0, groups)
        torch.nn.init.normal_(block.conv2.weight, std=0.1)  # undo the zero init so the branch shows
        with torch.no_grad():
            moved = (block(x, e1) - block(x, e2)).abs().max().item()
        assert (moved > 1e-3) == sensitive, (groups, moved)
