"""Toy data with exact answers: Gaussian mixtures whose noised densities, scores and denoisers are known.

A :class:`GaussianMixture` with diagonal covariances stays a mixture under x_t = a x0 + s eps
(means a mu_k, variances a^2 var_k + s^2), so its log-density, score and E[x0 | x_t] are closed form
under any process. :func:`exact_denoiser` wraps that as a :class:`~scorekit.model.denoiser.Denoiser`, usable
anywhere a trained model is: samplers, likelihoods and metrics can be tested against the truth.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .model.denoiser import Denoiser
from .processes.base import DiscreteProcess


class GaussianMixture:
    """sum_k w_k N(mu_k, diag(var_k)) in D dimensions; float64 throughout."""

    def __init__(self, weights, means, variances):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        var = torch.as_tensor(variances, dtype=torch.float64)
        if self.means.ndim != 2 or self.weights.shape != self.means.shape[:1]:
            raise ValueError("weights must be (K,) and means (K, D)")
        self.variances = var.expand_as(self.means).clone() if var.ndim < 2 else var
        if not torch.isclose(self.weights.sum(), torch.tensor(1.0, dtype=torch.float64)):
            raise ValueError("mixture weights must sum to 1")

    @classmethod
    def gaussian(cls, mean, std, dim: int) -> GaussianMixture:
        """A single isotropic N(mean, std^2 I) in ``dim`` dimensions."""
        return cls([1.0], torch.full((1, dim), float(mean)), float(std) ** 2)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        m = self.mean()
        second = torch.einsum("k,kd,ke->de", self.weights, self.means, self.means) + torch.diag(
            self.weights @ self.variances)
        return second - torch.outer(m, m)

    def noised(self, a: float, s: float) -> GaussianMixture:
        """The law of a x0 + s eps."""
        return GaussianMixture(self.weights, a * self.means, a * a * self.variances + s * s)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n points and their component indices."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + self.variances[k].sqrt() * z, k

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, var_k), shape (n, K)."""
        x = x.double().reshape(x.shape[0], 1, -1)
        ll = -0.5 * (((x - self.means) ** 2 / self.variances) + self.variances.log() + math.log(2 * math.pi))
        return ll.sum(-1) + self.weights.log()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x), shape (n, D)."""
        x = x.double().reshape(x.shape[0], -1)
        r = self.responsibilities(x)
        return torch.einsum("nk,nkd->nd", r, (self.means - x[:, None]) / self.variances)

    def posterior_mean(self, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """E[x0 | a x0 + s eps = x_t] for per-row scales a, s (shape (n,)); shape (n, D)."""
        x_t = x_t.double().reshape(x_t.shape[0], 1, -1)
        a, s = a.double().reshape(-1, 1, 1), s.double().reshape(-1, 1, 1)
        var_t = a * a * self.variances + s * s
        ll = -0.5 * (((x_t - a * self.means) ** 2 / var_t) + var_t.log()).sum(-1) + self.weights.log()
        r = torch.softmax(ll, dim=1)
        comp = self.means + a * self.variances / var_t * (x_t - a * self.means)
        return torch.einsum("nk,nkd->nd", r, comp)


class ExactEpsNet(nn.Module):
    """Stands in for a trained eps-network: returns E[eps | x_t] of a mixture exactly; ``velocity=True``: the
    marginal velocity E[eps - x0 | x_t] instead (the flow-matching target's minimiser)."""

    def __init__(self, mixture: GaussianMixture, process: DiscreteProcess, velocity: bool = False):
        super().__init__()
        self.mixture, self.process, self.velocity = mixture, process, velocity

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        t = self.process.t_of_label(label.double())
        a, s = self.process.alpha_s(t)
        x0 = self.mixture.posterior_mean(x, a, s).reshape(x.shape)
        eps = (x.double() - a.reshape(-1, *[1] * (x.ndim - 1)) * x0) / s.reshape(-1, *[1] * (x.ndim - 1))
        return (eps - x0 if self.velocity else eps).to(x.dtype)


def exact_denoiser(mixture: GaussianMixture, process: DiscreteProcess,
                   image_shape: tuple[int, ...] | None = None,
                   data_range: tuple[float, float] = (-1.0, 1.0), output: str = "eps") -> Denoiser:
    """A Denoiser whose eps-prediction (``output="eps"``) or velocity (``output="velocity"``, the straight path's
    E[eps - x0 | x_t]) is exact for ``mixture`` under ``process``."""
    if output not in ("eps", "velocity"):
        raise ValueError(f"the exact denoiser outputs eps or velocity, got {output!r}")
    shape = tuple(image_shape) if image_shape is not None else (mixture.dim,)
    if math.prod(shape) != mixture.dim:
        raise ValueError(f"image shape {shape} does not hold {mixture.dim} dimensions")
    return Denoiser(ExactEpsNet(mixture, process, output == "velocity"), process, output=output, variance="fixedlarge",
                    data_range=data_range, image_shape=shape if len(shape) == 3 else None)


class KDEEpsNet(nn.Module):
    """The multi-scale KDE baseline (NCSNv2 rebuttal): exact E[eps | x_t] when the data distribution is the
    empirical one, i.e. the noised density is a Gaussian kernel density estimate of the training set."""

    def __init__(self, data: torch.Tensor, process: DiscreteProcess, block: int = 4096):
        super().__init__()
        self.data = data.reshape(data.shape[0], -1).double()
        self.sq = (self.data * self.data).sum(1)
        self.process, self.block = process, block

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        t = self.process.t_of_label(label.double())
        a, s = self.process.alpha_s(t)
        xf = x.reshape(x.shape[0], -1).double()
        a, s = a.reshape(-1, 1).to(xf), s.reshape(-1, 1).to(xf)
        # log N(x_t; a x_n, s^2 I) up to a constant, for every training point n
        logits = -(a * a * self.sq[None] - 2 * a * (xf @ self.data.T)) / (2 * s * s)
        x0 = torch.softmax(logits, dim=1) @ self.data
        return ((xf - a * x0) / s).reshape(x.shape).to(x.dtype)


def kde_denoiser(data: torch.Tensor, process: DiscreteProcess, data_range: tuple[float, float] = (0.0, 1.0)
                 ) -> Denoiser:
    """A Denoiser for the Gaussian-smoothed empirical distribution of ``data`` (N, C, H, W)."""
    return Denoiser(KDEEpsNet(data, process), process, output="eps", data_range=data_range,
                    image_shape=tuple(data.shape[1:]))


class ExactClassNet(nn.Module):
    """A class-conditional eps-network that is exact for a mixture whose components are the classes: class k
    gives component k's E[eps | x_t], the "no class" token (index K) the whole mixture's."""

    def __init__(self, mixture: GaussianMixture, process: DiscreteProcess):
        super().__init__()
        self.mixture, self.process, self.num_classes = mixture, process, len(mixture.weights)
        self.components = [GaussianMixture([1.0], mixture.means[k:k + 1], mixture.variances[k:k + 1])
                           for k in range(self.num_classes)]
        self.nets = [ExactEpsNet(m, process) for m in (*self.components, mixture)]

    def forward(self, x: torch.Tensor, label: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.full((x.shape[0],), self.num_classes) if y is None else y.long().cpu()
        out = torch.empty_like(x)
        for k in y.unique().tolist():
            rows = y == k
            out[rows] = self.nets[k](x[rows], label[rows])
        return out


class ExactPosteriorClassifier(nn.Module):
    """The exact noise-conditional classifier of such a mixture: logits log w_k + log N(x_t; a mu_k, a^2 v_k + s^2)."""

    def __init__(self, mixture: GaussianMixture, process: DiscreteProcess):
        super().__init__()
        self.mixture, self.process, self.num_classes = mixture, process, len(mixture.weights)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        t = self.process.t_of_label(label.double())
        a, s = (v.reshape(-1, 1, 1) for v in self.process.alpha_s(t))
        m = self.mixture
        var = a * a * m.variances + s * s
        xf = x.double().reshape(x.shape[0], 1, -1)
        ll = -0.5 * (((xf - a * m.means) ** 2 / var) + var.log() + math.log(2 * math.pi)).sum(-1)
        return (ll + m.weights.log()).to(x.dtype)


def exact_class_models(mixture: GaussianMixture, process: DiscreteProcess, data_range=(-1.0, 1.0)):
    """(class-conditional exact denoiser, exact posterior classifier) of a mixture whose components are classes."""
    model = Denoiser(ExactClassNet(mixture, process), process, output="eps", data_range=data_range)
    classifier = Denoiser(ExactPosteriorClassifier(mixture, process), process, output="eps", data_range=data_range)
    return model, classifier


def two_gaussians() -> GaussianMixture:
    """The NCSN paper's toy: 1/5 N((-5, -5), I) + 4/5 N((5, 5), I)."""
    return GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], 1.0)


def langevin_toy(n: int = 2000, *, seed: int = 0, steps: int = 1000, eps: float = 0.1, num_levels: int = 10,
                 sigma_begin: float = 20.0, sigma_end: float = 1.0, box: float = 8.0, denoise: bool = False) -> dict:
    """NCSN Sec. 3.2: Langevin dynamics with the exact score cannot recover the mixture weights from a
    uniform start in [-box, box]^2, annealed Langevin with the same number of steps can.

    Plain: ``steps`` steps of size ``eps`` with the data score. Annealed: ``num_levels`` geometric levels
    from ``sigma_begin`` to ``sigma_end``, steps / num_levels each, alpha_i = eps sigma_i^2 / sigma_L^2, as
    in the NCSN experiment (no final denoising step: its samples follow the data noised at sigma_L, each
    mode with std sqrt(1 + sigma_L^2)). ``denoise`` also returns the same chains after NCSNv2's final step
    x + sigma_L^2 s(x, sigma_L) (each mode's std then 1 / sqrt(1 + sigma_L^2) in exact arithmetic).
    The weight of a mode is the fraction of samples nearer to it; ``*_std`` is the per-axis std of the
    samples around the mode they are nearer to (the exact samples: 1).
    """
    from .processes import VEProcess
    from .rng import ImageRNG
    from .samplers.langevin import sample_langevin

    mix = two_gaussians()
    rng = ImageRNG(seed, n, per_image=False)
    x = -box + 2 * box * rng.rand(2, dtype=torch.float64)
    for _ in range(steps):
        x = x + eps * mix.score(x) + math.sqrt(2 * eps) * rng.randn(2, dtype=torch.float64)
    plain = x
    process = VEProcess.from_ladder(sigma_begin, sigma_end, num_levels)
    denoiser = exact_denoiser(mix, process, data_range=(-box, box))
    annealed = sample_langevin(denoiser, (n, 2), ImageRNG(seed + 1, n, per_image=False),
                               n_steps_each=steps // num_levels, step_lr=eps, denoise=False)

    def weight(samples: torch.Tensor) -> float:
        return float((samples.sum(1) < 0).double().mean())  # nearer to (-5, -5)

    def spread(samples: torch.Tensor) -> float:
        mode = torch.where((samples.sum(1) < 0)[:, None], mix.means[0], mix.means[1])
        return float((samples.double() - mode).std())

    out = {"plain": plain.float(), "annealed": annealed.float(), "true_weight": 0.2,
           "plain_weight": weight(plain), "annealed_weight": weight(annealed), "annealed_std": spread(annealed),
           "sigma_L": sigma_end}
    if denoise:
        tt = torch.zeros(n, dtype=torch.long)
        denoised = annealed + sigma_end**2 * denoiser.score(annealed, tt)
        out.update(denoised=denoised.float(), denoised_weight=weight(denoised), denoised_std=spread(denoised))
    return out
