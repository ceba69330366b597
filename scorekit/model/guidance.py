"""Conditioning is a property of the denoiser: a guided denoiser wraps a model and looks to every sampler like
any other denoiser (DESIGN.md).

* Classifier-free guidance (Ho & Salimans 2022): one class-conditional network, evaluated once per step on a
  doubled batch (the labels and the "no class" token), mixed as D = D_uncond + S (D_cond - D_uncond); S = 1
  is the plain conditional model and S = 0 the unconditional one (diffusers' convention, S = 1 + w of the
  paper). Every output a network can give (eps, x0, the score, sigma x score, the posterior mean) is affine
  in D at fixed x_t and t, so the outputs are mixed directly; a learned variance is the conditional one.
* Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021, Sec. 5): the gradient of a noise-conditional
  classifier's log p(y | x_t, t), scaled by K, is added to the score: eps <- eps - s_t K grad log p(y | x_t).
  With the exact posterior and K = 1 this is the conditional score (Bayes' rule).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ScorekitError
from ..processes.base import expand_like
from .autoguidance import guided_mix, in_interval, sigma_of_label
from .denoiser import Denoiser


class GuidedNet(nn.Module):
    """``net(x, label)`` of a class-conditional network for fixed per-image class ``labels``, with classifier-free
    guidance scale ``scale``: one evaluation on [x; x] with [labels; no class] when scale is not 0 or 1."""

    def __init__(self, net: nn.Module, labels: torch.Tensor, scale: float, null: int, learned_variance: bool = False,
                 interval: tuple[float, float] | None = None, to_sigma=None):
        super().__init__()
        self.net, self.scale, self.null, self.learned_variance = net, float(scale), null, learned_variance
        self.interval, self.to_sigma = interval, to_sigma  # guidance only for sigma in (lo, hi] (None: everywhere)
        self.register_buffer("labels", labels.long(), persistent=False)

    def forward(self, x: torch.Tensor, label: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.labels.to(x.device)
        if len(labels) != len(x):
            raise ValueError(f"{len(labels)} class labels for a batch of {len(x)}")
        if self.scale == 1.0:
            return self.net(x, label, labels)
        none = torch.full_like(labels, self.null)
        if self.scale == 0.0:
            return self.net(x, label, none)
        out = self.net(torch.cat([x, x]), torch.cat([label, label]), torch.cat([labels, none]))
        cond, uncond = out.chunk(2)
        inside = in_interval(self.to_sigma(label), self.interval) if self.interval is not None else None
        return guided_mix(uncond, cond, self.scale, self.learned_variance, inside)  # variance channels: conditional


def classifier_guide(classifier: Denoiser, labels: torch.Tensor, scale: float):
    """The ``Denoiser.guide`` hook of classifier guidance: eps - s_t K grad_x log p(y | x_t, t), the classifier
    seeing the same network label (level) as the model (it was trained on the same process)."""
    net = classifier.net

    def guide(denoiser: Denoiser, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        y = labels.to(x_t.device).long()
        with torch.enable_grad():
            x = x_t.detach().float().requires_grad_(True)
            logp = F.log_softmax(net(x, denoiser.net_label(t).to(x.device)).float(), dim=1)
            (grad,) = torch.autograd.grad(logp.gather(1, y[:, None]).sum(), x)
        _, s = denoiser.process.alpha_s(t)
        return eps - expand_like(s, eps) * scale * grad.to(eps.dtype)

    return guide


def conditional(denoiser: Denoiser, labels: torch.Tensor | list[int], *, guidance: float = 1.0,
                classifier: Denoiser | None = None, classifier_scale: float = 0.0,
                interval: tuple[float, float] | None = None) -> Denoiser:
    """The denoiser for a batch whose image i has class ``labels[i]``: classifier-free guidance ``guidance`` (a
    class-conditional model; only for sigma in ``interval`` = (sigma_lo, sigma_hi] if given, Kynkaanniemi et al.
    2024), and / or classifier guidance with ``classifier`` at ``classifier_scale``."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    n_classes = _classes(denoiser)
    if guidance < 0 or classifier_scale < 0:
        raise ScorekitError(f"guidance scales must be >= 0, got {guidance} and {classifier_scale}")
    if not n_classes and classifier is None:
        raise ScorekitError("this model is unconditional: give it a classifier (classifier guidance) to ask for a "
                            "class, or train one with model.num_classes")
    limit = n_classes or _classes(classifier)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= limit):
        raise ScorekitError(f"class labels must be in 0..{limit - 1}, got {labels.tolist()[:8]}")
    d = denoiser
    if n_classes:
        d = d.with_net(GuidedNet(d.net, labels, guidance, n_classes, d.variance.is_learned, interval,
                                 sigma_of_label(d) if interval is not None else None))
    if classifier is not None and classifier_scale > 0:
        check_classifier(denoiser, classifier)
        d = d.with_net(d.net)
        d.guide = classifier_guide(classifier, labels, classifier_scale)
    return d


def _classes(model: Denoiser) -> int:
    cfg = getattr(model, "config", None)
    return cfg.model.num_classes if cfg is not None else getattr(model.net, "num_classes", 0)


def check_classifier(denoiser: Denoiser, classifier: Denoiser) -> None:
    """A classifier guides a model trained on the same process (it reads the same network labels)."""
    a, b = getattr(denoiser, "config", None), getattr(classifier, "config", None)
    if a is not None and b is not None and a.process != b.process:
        raise ScorekitError("the classifier was trained on another noise process than the model "
                            f"({b.process} against {a.process}); train one with `scorekit classifier RUN`")


def labels_for(spec: str | list[int], n: int, num_classes: int) -> torch.Tensor:
    """Class labels of n images: ``"all"`` gives an equal share of every class (image i: class i mod K); a list
    is repeated (image i: list[i mod len])."""
    classes = list(range(num_classes)) if spec == "all" else list(spec)
    if not classes:
        raise ScorekitError("no class given")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ScorekitError(f"--class {bad[0]}: out of range; this model has classes 0..{num_classes - 1}")
    return torch.tensor([classes[i % len(classes)] for i in range(n)])


@torch.no_grad()
def classify(classifier: Denoiser, images_u8: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """A noise-conditional classifier's logits on clean images (level 0), as a judge of class agreement."""
    from ..images import from_uint8

    out = []
    for i in range(0, len(images_u8), batch_size):
        level = torch.zeros(len(images_u8[i:i + batch_size]), dtype=torch.long, device=classifier.device)
        logits = classifier.raw(from_uint8(images_u8[i:i + batch_size], classifier.data_range).to(level.device), level)
        out.append(logits.double().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def classifier_accuracy(classifier: Denoiser, images_u8: torch.Tensor, labels: torch.Tensor,
                        levels: list[int], seed: int = 0) -> dict[int, float]:
    """Accuracy of a noise-conditional classifier on images noised to each level (the same noise each time)."""
    from ..images import from_uint8

    x0 = from_uint8(images_u8, classifier.data_range).to(classifier.device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device)
    out = {}
    for t in levels:
        tt = torch.full((len(x0),), t, dtype=torch.long, device=x0.device)
        logits = classifier.raw(classifier.process.q_sample(x0, tt, noise), tt)
        out[t] = float((logits.argmax(1).cpu() == labels.cpu()).double().mean())
    return out
