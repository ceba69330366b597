"""Classifier-free and classifier guidance on the exact class-conditional mixture (each class a component)."""

import pytest
import torch

from scorekit.errors import ScorekitError
from scorekit.model.guidance import GuidedNet, conditional
from scorekit.processes import VEProcess, VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers import sample
from scorekit.toy import GaussianMixture, exact_class_models, exact_denoiser

MIX = GaussianMixture([0.4, 0.6], [[-0.5, -0.3], [0.4, 0.3]], [[0.06, 0.04], [0.05, 0.06]])
PROCESSES = {"vp": VPProcess.from_schedule("linear", 1000), "ve": VEProcess.from_ladder(10.0, 0.01, 100)}


@pytest.mark.parametrize("kind", ["vp", "ve"])
@pytest.mark.parametrize("scale", [0.0, 1.0, 2.5])
def test_guided_estimate_is_the_closed_form_mix_at_every_level(kind, scale):
    p = PROCESSES[kind]
    model, _ = exact_class_models(MIX, p)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    guided = conditional(model, labels, guidance=scale)
    x = torch.randn(6, 2, dtype=torch.float64) * 2
    for t in (0, p.num_levels // 3, p.num_levels - 1):
        tt = torch.full((6,), t)
        a, s = p.alpha_s(tt)
        d_u = MIX.posterior_mean(x, a, s)
        d_c = torch.stack([GaussianMixture([1.0], MIX.means[k:k + 1], MIX.variances[k:k + 1]).posterior_mean(
            x[i:i + 1], a[i:i + 1], s[i:i + 1])[0] for i, k in enumerate(labels.tolist())])
        got = guided(x, tt).x0
        assert torch.allclose(got, scale * d_c + (1 - scale) * d_u, atol=1e-8)


def test_the_doubled_batch_equals_two_separate_evaluations_in_one_call():
    from scorekit.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(resolution=8, in_ch=1, out_ch=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
               dropout=0.0, num_classes=3)
    for w in net.parameters():  # the zero-initialised layers would hide the class embedding
        if w.ndim > 1:
            torch.nn.init.normal_(w, std=0.1)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([3.0, 10.0, 50.0, 99.0]), torch.tensor([0, 2, 1, 0])
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    out = GuidedNet(net, y, 1.7, null=3)(x, t)
    assert len(calls) == 1  # one network evaluation on the doubled batch
    with torch.no_grad():
        c, u = net(x, t, y), net(x, t, torch.full_like(y, 3))
    assert torch.allclose(out, u + 1.7 * (c - u), atol=1e-5) and not torch.allclose(c, u)


def _sample(d, n=2000, seed=0):
    return sample(d, "heun", (n, 2), ImageRNG(seed, n, per_image=False), steps=30, clip_denoised=False)


def test_conditional_sampling_follows_the_component_and_guidance_sharpens_it():
    p = PROCESSES["vp"]
    model, _ = exact_class_models(MIX, p)
    comp0 = GaussianMixture([1.0], MIX.means[:1], MIX.variances[:1])
    x = _sample(conditional(model, torch.zeros(2000), guidance=1.0)).double()
    assert torch.allclose(x.mean(0), comp0.mean(), atol=0.03)
    assert torch.allclose(torch.cov(x.T), comp0.covariance(), atol=0.012)
    outside = []  # mass nearer to the other class's mean falls as the scale grows
    for scale in (0.0, 1.0, 2.0, 4.0):
        x = _sample(conditional(model, torch.zeros(2000), guidance=scale))
        d = ((x[:, None].double() - MIX.means[None]) ** 2).sum(-1)
        outside.append(float((d[:, 1] < d[:, 0]).double().mean()))
    assert outside[0] > 0.45 and outside == sorted(outside, reverse=True) and outside[-1] < 0.5 * outside[1]


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_classifier_guidance_with_the_exact_posterior_is_the_conditional_model(kind):
    """Bayes: grad log p_t(x | c) = grad log p_t(x) + grad log p_t(c | x); at K = 1 the guided unconditional
    model's eps equals the conditional model's."""
    p = PROCESSES[kind]
    model, classifier = exact_class_models(MIX, p)
    uncond = exact_denoiser(MIX, p)
    labels = torch.tensor([0, 1, 0, 1])
    guided = conditional(uncond, labels, classifier=classifier, classifier_scale=1.0)
    cond = conditional(model, labels, guidance=1.0)
    x = torch.randn(4, 2, dtype=torch.float64)
    for t in (1, p.num_levels // 2, p.num_levels - 1):
        tt = torch.full((4,), t)
        assert torch.allclose(guided(x, tt).eps, cond(x, tt).eps, atol=1e-6)


def test_bad_guidance_requests_are_refused():
    model, classifier = exact_class_models(MIX, PROCESSES["vp"])
    with pytest.raises(ScorekitError, match="labels must be in 0..1"):
        conditional(model, [0, 2])
    with pytest.raises(ScorekitError, match=">= 0"):
        conditional(model, [0], guidance=-1.0)
    with pytest.raises(ScorekitError, match="unconditional"):
        conditional(exact_denoiser(MIX, PROCESSES["vp"]), [0])
