"""A network plus its noise process: the one place that converts between eps, x0, score and mean.

Every sampler, likelihood and metric talks to a :class:`Denoiser`, never to a raw network, so any
sampler runs on any model (DESIGN.md). Two views are offered:

* discrete: ``denoiser(x_t, t)`` at integer or fractional levels t = 0..N-1 (0 = least noise);
* sigma-space (EDM): ``denoiser.denoise(x_hat, sigma)`` with x_hat = x_t / a_t = x0 + sigma * eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from ..processes.base import DiscreteProcess, expand_like
from .precond import EDM_SIGMA_MAX, EDM_SIGMA_MIN, consistency_coefficients, edm_coefficients


class Output(str, Enum):
    """What the network outputs."""

    EPS = "eps"  # DDPM's choice (Eq. 11)
    X0 = "x0"  # DDPM code's 'xstart'
    MEAN = "mean"  # the posterior mean mu(x_t, t), DDPM code's 'xprev'
    SCORE = "score"  # NCSN v1: s_theta(x, sigma) directly
    SIGMA_SCORE = "sigma_score"  # NCSNv2 technique 3: the net gives sigma * score = -eps, divided by sigma
    V = "v"  # Salimans & Ho 2022: v = a eps - s x0 (VP); x0 = x/(1 + sigma^2) - sigma/sqrt(1 + sigma^2) v
    VELOCITY = "velocity"  # flow matching: u = eps - x0, the straight path's dx/dt; x0 = (x_t - s u) / (a + s)


class Variance(str, Enum):
    """Variance of the reverse step p(x_{t-1} | x_t)."""

    FIXEDLARGE = "fixedlarge"  # sigma_t^2 = beta_t (the step variance)
    FIXEDSMALL = "fixedsmall"  # sigma_t^2 = beta~_t (the posterior variance)
    LEARNED_RANGE = "learned_range"  # improved DDPM: log-space interpolation between the two
    LEARNED = "learned"  # DDPM's Table 2 "learned diagonal": the network outputs the log-variance itself

    @property
    def is_learned(self) -> bool:
        """The network outputs the variance in extra channels (2C outputs)."""
        return self in (Variance.LEARNED_RANGE, Variance.LEARNED)


@dataclass
class Prediction:
    x0: torch.Tensor
    eps: torch.Tensor
    out: torch.Tensor  # the network's output (variance channels split off)
    v: torch.Tensor | None = None  # the variance channels: learned_range's v in [-1, 1], or learned's log-variance


class Denoiser(nn.Module):
    """``net`` + ``process`` + what the net outputs + the reverse variance + the data range.

    ``precond="edm"``: the network is EDM's F inside D = c_skip x + c_out F(c_in x; ln(sigma)/4)
    (:mod:`scorekit.model.precond`); the model's x0 estimate is D at sigma_t = s_t / a_t, and the sigma-space
    view evaluates D at any sigma directly (EDM's range 0.002..80)."""

    def __init__(self, net: nn.Module, process: DiscreteProcess, *, output: Output | str = Output.EPS,
                 variance: Variance | str = Variance.FIXEDLARGE, data_range: tuple[float, float] = (-1.0, 1.0),
                 image_shape: tuple[int, int, int] | None = None, timestep_map: torch.Tensor | None = None,
                 precond: str = "none", sigma_data: float = 0.5, consistency: bool = False,
                 boundary: float = 0.0, top: float = 0.0):
        super().__init__()
        # a consistency model (Song et al. 2023): its D is the consistency function f, f(x, boundary) = x, on the
        # levels boundary..top (0: the model's own range)
        self.consistency, self._boundary, self._top = bool(consistency), float(boundary), float(top)
        if precond not in ("none", "edm"):
            raise ValueError(f"unknown preconditioning {precond!r}; choose none or edm")
        self.precond, self.sigma_data = precond, float(sigma_data)
        self.net = net
        self.process = process
        self.output = Output(output)
        self.variance = Variance(variance)
        self.data_range = (float(data_range[0]), float(data_range[1]))
        self.image_shape = image_shape
        # For a respaced denoiser: level t of ``process`` is level timestep_map[t] of the trained one.
        self.timestep_map = timestep_map
        self._label_process = process
        self._nfe = [0]  # network evaluations (batched calls); shared with respaced views of this model
        self.guide = None  # (denoiser, x_t, t, eps) -> eps: classifier guidance, see scorekit.model.guidance

    @property
    def nfe(self) -> int:
        """Network evaluations (batched calls) so far, including those of respaced views."""
        return self._nfe[0]

    @nfe.setter
    def nfe(self, value: int) -> None:
        self._nfe[0] = value

    @property
    def device(self) -> torch.device:
        param = next(self.net.parameters(), None)
        return param.device if param is not None else self.process.device

    def to(self, *args, **kwargs) -> Denoiser:
        """Move the network as ``nn.Module.to`` does, and the process tables to the same device."""
        super().to(*args, **kwargs)
        device = self.device
        self.process.to(device)
        if self._label_process is not self.process:
            self._label_process.to(device)
        return self

    # ----- the network's input ------------------------------------------------------------------------

    def net_label(self, t: torch.Tensor) -> torch.Tensor:
        """Conditioning input of the network at level t (float; fractional between levels)."""
        t = t.to(self.process.device)
        if self.timestep_map is not None:
            t = self.process._interp(self.timestep_map.to(self.process.sigmas), t.double())
        return self._label_process.net_label(t.double() if torch.is_floating_point(t) else t).float()

    def with_net(self, net: nn.Module) -> Denoiser:
        """The same model around another module computing the same function (e.g. a compiled one)."""
        d = Denoiser(net, self.process, output=self.output, variance=self.variance, data_range=self.data_range,
                     image_shape=self.image_shape, timestep_map=self.timestep_map, precond=self.precond,
                     sigma_data=self.sigma_data, consistency=self.consistency, boundary=self._boundary,
                     top=self._top)
        d._label_process, d._nfe, d.guide = self._label_process, self._nfe, self.guide
        for attr in ("config", "checkpoint_step", "uses_ema", "schedules"):
            if hasattr(self, attr):
                setattr(d, attr, getattr(self, attr))
        return d

    def respaced(self, timesteps: torch.Tensor) -> Denoiser:
        """This model on a subsequence of its levels (improved DDPM's respacing); shares the network."""
        timesteps = torch.as_tensor(timesteps, dtype=torch.long)
        if timesteps.numel() < 1 or bool((timesteps[1:] <= timesteps[:-1]).any()):
            raise ValueError("respaced timesteps must be strictly increasing")
        base = self.timestep_map[timesteps.to(self.timestep_map.device)] if self.timestep_map is not None else timesteps
        d = Denoiser(self.net, self.process.subset(timesteps).to(self.process.device), output=self.output,
                     variance=self.variance, data_range=self.data_range, image_shape=self.image_shape,
                     timestep_map=base.double(), precond=self.precond, sigma_data=self.sigma_data,
                     consistency=self.consistency, boundary=self.sigma_min, top=self._top)
        d._label_process = self._label_process
        d._nfe, d.guide = self._nfe, self.guide
        d.config = getattr(self, "config", None)
        return d

    def _call(self, x: torch.Tensor, label: torch.Tensor, y: torch.Tensor | None, aug: torch.Tensor | None):
        self._nfe[0] += 1
        kw = {} if aug is None else {"aug": aug}
        return self.net(x, label, **kw) if y is None else self.net(x, label, y, **kw)

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
            aug: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output at level t; ``y``: class labels of a class-conditional network; ``aug``: the
        augmentation parameters of a network trained with non-leaky augmentation (None = zero vector)."""
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        return self._call(x_t, self.net_label(t).to(x_t.device), y, aug)

    def edm(self, x_hat: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor | None = None,
            aug: torch.Tensor | None = None) -> torch.Tensor:
        """EDM's D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat; c_noise) (Eq. 7) at per-image sigma."""
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma.to(self.process.device), self.sigma_data)
        out = self._call(expand_like(c_in, x_hat) * x_hat, c_noise.to(x_hat.device, x_hat.dtype), y, aug)
        return expand_like(c_skip, x_hat) * x_hat + expand_like(c_out, x_hat) * out.to(x_hat.dtype)

    # ----- discrete view ------------------------------------------------------------------------------

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, *, clip: bool = False,
                raw: torch.Tensor | None = None, y: torch.Tensor | None = None,
                aug: torch.Tensor | None = None) -> Prediction:
        """Predict x0 and eps from x_t at level t; ``clip`` clips x0 to the data range (eps follows).

        ``raw`` reuses a network output computed elsewhere (e.g. with the mean detached); ``y`` are class
        labels (class-conditional networks); ``self.guide`` (classifier guidance) adjusts eps before clipping.
        A consistency model's x0 is its consistency function f(x_t / a_t, s_t / a_t).
        """
        if not self.consistency or raw is not None:
            return self._predict(x_t, t, clip=clip, raw=raw, y=y, aug=aug)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        p = self.process
        a, s = p.alpha_s(t)
        x0 = self.consistency_fn(x_t / expand_like(a, x_t), s / a, y).to(x_t.dtype)
        x0 = x0.clamp(*self.data_range) if clip else x0
        return Prediction(x0=x0, eps=p.eps_from_x0(x_t, t, x0), out=x0)

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, *, clip: bool = False, raw: torch.Tensor | None = None,
                 y: torch.Tensor | None = None, aug: torch.Tensor | None = None) -> Prediction:
        """:meth:`forward` through the network's own output (no consistency view)."""
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        p = self.process
        if self.precond == "edm" and raw is None:
            a, s = p.alpha_s(t)
            raw = self.edm(x_t / expand_like(a, x_t), s / a, y, aug)
        out = (self.raw(x_t, t, y, aug) if raw is None else raw).to(x_t.dtype)
        v = None
        if self.variance.is_learned:
            out, v = out.chunk(2, dim=1)
        if self.output is Output.EPS:
            eps = out
            x0 = p.x0_from_eps(x_t, t, eps)
        elif self.output is Output.X0:
            x0 = out
            eps = None
        elif self.output is Output.MEAN:
            tt = t.round().long() if torch.is_floating_point(t) else t
            x0 = p.x0_from_mean(x_t, tt, out)
            eps = None
        elif self.output is Output.SCORE:
            _, s = p.alpha_s(t)
            eps = -expand_like(s, x_t) * out
            x0 = p.x0_from_eps(x_t, t, eps)
        elif self.output is Output.V:  # EDM's preconditioning with sigma_data = 1 on x_hat = x_t / a, sigma = s / a
            a, s = p.alpha_s(t)
            sig = expand_like(s / a, x_t)
            x0 = x_t / (expand_like(a, x_t) * (1 + sig**2)) - sig / (1 + sig**2).sqrt() * out
            eps = None
        elif self.output is Output.VELOCITY:  # x_t = a x0 + s (u + x0), whatever the path
            a, s = p.alpha_s(t)
            x0 = (x_t - expand_like(s, x_t) * out) / expand_like(a + s, x_t)
            eps = out + x0
        else:  # SIGMA_SCORE
            eps = -out
            x0 = p.x0_from_eps(x_t, t, eps)
        if self.guide is not None:
            eps = self.guide(self, x_t, t, eps if eps is not None else p.eps_from_x0(x_t, t, x0))
            x0 = p.x0_from_eps(x_t, t, eps)
        if clip:
            x0 = x0.clamp(*self.data_range)
            eps = None
        if eps is None:
            eps = p.eps_from_x0(x_t, t, x0)
        return Prediction(x0=x0, eps=eps, out=out, v=v)

    def score(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """grad log p_t(x_t) = -eps / s_t."""
        _, s = self.process.alpha_s(t if t.ndim else t.expand(x_t.shape[0]))
        return -self(x_t, t, y=y).eps / expand_like(s, x_t)

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, *, clip: bool = False,
                        variance: Variance | str | None = None, raw: torch.Tensor | None = None,
                        y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-variance and predicted x0 of p(x_{t-1} | x_t) at integer t (DDPM Eq. 11 and code)."""
        t = t.long()
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        pred = self(x_t, t, clip=clip, raw=raw, y=y)
        p = self.process
        kind = Variance(variance) if variance is not None else self.variance
        if kind is Variance.LEARNED:
            if pred.v is None:
                raise ValueError("this network does not output a variance; use fixedlarge or fixedsmall")
            log_var = pred.v
        elif kind is Variance.LEARNED_RANGE:
            if pred.v is None:
                raise ValueError("this network does not output a variance; use fixedlarge or fixedsmall")
            frac = (pred.v + 1) / 2
            log_var = frac * expand_like(p.step_variance[t.to(p.device)].log(), x_t) + (1 - frac) * expand_like(
                p.posterior_log_variance_clipped[t.to(p.device)], x_t)
        elif kind is Variance.FIXEDLARGE:
            log_var = expand_like(p.large_log_variance[t.to(p.device)], x_t)
        else:
            log_var = expand_like(p.posterior_log_variance_clipped[t.to(p.device)], x_t)
        if self.output is Output.MEAN and self.guide is None:  # 'xprev': the mean is the output; clip touches x0
            mean = pred.out
        else:
            mean, _, _ = p.q_posterior(pred.x0, x_t, t)
        return mean, log_var.expand_as(x_t), pred.x0

    # ----- sigma-space view ---------------------------------------------------------------------------

    def denoise(self, x_hat: torch.Tensor, sigma: torch.Tensor | float, *, clip: bool = False) -> torch.Tensor:
        """EDM's D(x_hat; sigma) = E[x0 | x0 + sigma eps = x_hat], through the discrete network.

        The network is evaluated at the fractional level t(sigma) (log-sigma interpolation) on
        x_t = a(sigma) x_hat; sigma outside the trained range is clamped for the network's label only.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=self.process.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x_hat.shape[0])
        if self.consistency:
            x0 = self.consistency_fn(x_hat, sigma)
            return x0.clamp(*self.data_range) if clip else x0
        if self.precond == "edm" and self.guide is None:
            x0 = self.edm(x_hat, sigma)
            return x0.clamp(*self.data_range) if clip else x0
        a = self.process.scale_of_sigma(sigma)
        t = self.process.t_of_sigma(sigma)
        x_t = expand_like(a, x_hat) * x_hat
        pred = self(x_t, t, clip=clip)
        if self.output in (Output.X0, Output.MEAN) or clip:
            return pred.x0
        return x_hat - expand_like(sigma, x_hat) * pred.eps  # exact at sigma beyond the clamped range

    def consistency_fn(self, x_hat: torch.Tensor, sigma: torch.Tensor | float, y: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """The consistency function f(x_hat, sigma) with the boundary condition f(x, sigma_min) = x built in (Song
        et al. 2023, Eq. 5). EDM-preconditioned networks: f = c_skip x + c_out F(c_in x; ln(sigma)/4) with
        c_skip = sigma_d^2 / ((sigma - sigma_min)^2 + sigma_d^2), c_out = (sigma - sigma_min) sigma_d /
        sqrt(sigma^2 + sigma_d^2); any other denoiser (eps, x0 or score outputs, VP or VE): f = x + (1 - sigma_min /
        sigma)(D(x; sigma) - x), which for an eps-network is x - (sigma - sigma_min) eps. ``y``: class labels."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=self.process.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x_hat.shape[0])
        s_min = self.sigma_min
        if self.precond == "edm":
            c_skip, c_out = consistency_coefficients(sigma, self.sigma_data, s_min)
            _, _, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
            out = self._call(expand_like(c_in, x_hat) * x_hat, c_noise.to(x_hat.device, x_hat.dtype), y, None)
            return expand_like(c_skip, x_hat) * x_hat + expand_like(c_out, x_hat) * out.to(x_hat.dtype)
        d = self._plain_denoise(x_hat, sigma, y)
        return x_hat + expand_like(1 - s_min / sigma, x_hat) * (d - x_hat)

    def _plain_denoise(self, x_hat: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """D(x_hat; sigma) through the discrete network (no consistency view), as :meth:`denoise` computes it."""
        a = self.process.scale_of_sigma(sigma)
        t = self.process.t_of_sigma(sigma)
        pred = self._predict(expand_like(a, x_hat) * x_hat, t, y=y)
        if self.output in (Output.X0, Output.MEAN):
            return pred.x0
        return x_hat - expand_like(sigma, x_hat) * pred.eps

    @property
    def sigma_min(self) -> float:
        if self._boundary:
            return self._boundary
        return EDM_SIGMA_MIN if self.precond == "edm" else self.process.sigma_min

    @property
    def trained_top(self) -> float:
        """The largest level a few-step student was trained at (consistency or progressive distillation), or 0:
        the model's own range."""
        return self._top

    @property
    def sigma_max(self) -> float:
        if self._top:
            return self._top
        return EDM_SIGMA_MAX if self.precond == "edm" else self.process.sigma_max
