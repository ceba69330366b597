"""Shared interface of the discrete noise processes.

Every process in scorekit corrupts data at discrete levels t = 0..N-1, ordered from the least to the
most noise (DDPM's code convention), as

    x_t = a_t * x0 + s_t * eps,        eps ~ N(0, I),

and is described by float64 tables indexed by t. The EDM "sigma-space" view divides by a_t:
x_t / a_t = x0 + sigma_t * eps with sigma_t = s_t / a_t, so VP (DDPM) and VE (NCSN) processes differ only
in how a depends on sigma. Between levels, log sigma is interpolated linearly in t (the convention of
k-diffusion's discrete schedules); integer t always gives the table values exactly.

The posterior of the previous (less noisy) level, q(x_{t-1} | x_t, x0) = N(coef1 * x0 + coef2 * x_t, var),
has the same form for both families; level -1 is the data itself (sigma_{-1} = 0).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """Cast a per-image vector ``v`` (shape (B,) or ()) to ``x``'s dtype/device, shaped to broadcast."""
    v = v.to(device=x.device, dtype=x.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


class DiscreteProcess:
    """Tables of a discrete Gaussian noise process (see the module docstring).

    Subclasses fill: ``a`` (signal scale), ``s`` (noise std), ``posterior_mean_coef1`` (on x0),
    ``posterior_mean_coef2`` (on x_t), ``posterior_variance`` and ``step_variance`` (the variance the
    forward process adds going from level t-1 to t; DDPM's beta_t). All are float64, shape (N,).
    """

    kind: str = "?"
    prior_std: float = 1.0  # std of the prior p(x_{N-1}) in x-space
    prior_data_variance: float = 0.0  # in sigma-space the prior of x0 + sigma eps is N(0, sigma^2 + this)

    def __init__(self, *, a: Tensor, s: Tensor, posterior_mean_coef1: Tensor, posterior_mean_coef2: Tensor,
                 posterior_variance: Tensor, step_variance: Tensor):
        tables = dict(a=a, s=s, posterior_mean_coef1=posterior_mean_coef1,
                      posterior_mean_coef2=posterior_mean_coef2, posterior_variance=posterior_variance,
                      step_variance=step_variance)
        n = a.shape[0]
        for name, value in tables.items():
            if value.dtype != torch.float64 or value.shape != (n,):
                raise ValueError(f"process table {name!r} must be float64 of shape ({n},)")
            setattr(self, name, value)
        self.num_levels = n
        self.sigmas = s / a
        if not bool(torch.all(self.sigmas[1:] > self.sigmas[:-1])):
            raise ValueError("noise levels must increase strictly with t")
        self.log_sigmas = self.sigmas.log()
        # The code of both papers clips the log-variance at t = 0, where the posterior variance is 0,
        # by repeating the value at t = 1 (diffusion_utils_2.py: posterior_log_variance_clipped).
        pv = posterior_variance
        self.posterior_log_variance_clipped = torch.cat([pv[1:2], pv[1:]]).log() if n > 1 else pv.clamp_min(
            1e-20).log()
        # DDPM's 'fixedlarge' reverse variance is the step variance (beta_t), with the same clip at t = 0
        # "to get a better decoder log likelihood" (authors' p_mean_variance).
        self.large_log_variance = torch.cat([pv[1:2], step_variance[1:]]).log() if n > 1 else step_variance.log()
        # The score-SDE paper's discretised reverse SDE (its ReverseDiffusionPredictor) at level t:
        # x <- reverse_scale * x + step_variance * score + sqrt(step_variance) z; and its Langevin corrector's
        # alpha_t. VP: 2 - sqrt(1 - beta_t) and 1 - beta_t; VE: 1 and 1 (set by the subclasses).
        self.reverse_scale = torch.ones_like(step_variance)
        self.corrector_alpha = torch.ones_like(step_variance)

    def net_label(self, t: Tensor) -> Tensor:
        """The conditioning input a network of this process receives at level t (here: t itself)."""
        return t

    def t_of_label(self, label: Tensor) -> Tensor:
        """Inverse of :meth:`net_label`."""
        return label

    def subset(self, timesteps: Tensor) -> DiscreteProcess:
        """The process restricted to increasing levels ``timesteps`` (improved DDPM's respacing)."""
        raise NotImplementedError

    # ----- levels and sigma-space ------------------------------------------------------------------

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def scale_of_sigma(self, sigma: Tensor) -> Tensor:
        """a as a function of sigma (VP: 1/sqrt(1 + sigma^2); VE: 1)."""
        raise NotImplementedError

    def prior_var_hat(self, sigma: float) -> float:
        """Variance of the prior of x_hat = x_t / a at level sigma: sigma^2 + the data variance the prior assumes
        (VP: 1 + sigma^2, i.e. N(0, I) for x_t; VE: sigma^2)."""
        return sigma**2 + self.prior_data_variance

    def to(self, device: torch.device | str) -> DiscreteProcess:
        """Move every table to ``device`` (float64 is kept; MPS, which lacks it, gets float32)."""
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        for name, value in list(vars(self).items()):
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device=device, dtype=dtype))
        return self

    @property
    def device(self) -> torch.device:
        return self.sigmas.device

    def _interp(self, table: Tensor, t: Tensor) -> Tensor:
        """Linear interpolation of ``table`` at fractional ``t`` (exact gather for integer t)."""
        if not torch.is_floating_point(t):
            return table[t.long().to(table.device)]
        t = t.to(device=table.device, dtype=table.dtype).clamp(0, self.num_levels - 1)
        lo = t.floor().long().clamp(max=self.num_levels - 2) if self.num_levels > 1 else t.long()
        if self.num_levels == 1:
            return table[lo]
        w = t - lo
        return table[lo] * (1 - w) + table[lo + 1] * w

    def sigma(self, t: Tensor) -> Tensor:
        """sigma_t; for fractional t, log sigma is interpolated linearly between neighbouring levels."""
        if not torch.is_floating_point(t):
            return self.sigmas[t.long().to(self.device)]
        return self._interp(self.log_sigmas, t).exp()

    def _locate(self, table: Tensor, value: Tensor) -> Tensor:
        """The fractional level at which the increasing ``table``, interpolated linearly, takes ``value`` (inverse
        of :meth:`_interp`; ``value`` clamped to the table's range)."""
        value = value.clamp(table[0], table[-1])
        if self.num_levels == 1:
            return torch.zeros_like(value)
        hi = torch.searchsorted(table, value.reshape(-1)).clamp(1, self.num_levels - 1)
        lo = hi - 1
        w = (value.reshape(-1) - table[lo]) / (table[hi] - table[lo])
        return (lo + w).reshape(value.shape)

    def t_of_sigma(self, sigma: Tensor | float) -> Tensor:
        """The fractional level whose sigma is ``sigma`` (inverse of :meth:`sigma`, clamped to the range)."""
        sigma = torch.as_tensor(sigma, dtype=self.log_sigmas.dtype, device=self.device)
        return self._locate(self.log_sigmas, sigma.clamp_min(1e-30).log())

    def alpha_s(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, s_t) at integer or fractional t."""
        if not torch.is_floating_point(t):
            idx = t.long().to(self.device)
            return self.a[idx], self.s[idx]
        sigma = self.sigma(t)
        a = self.scale_of_sigma(sigma)
        return a, a * sigma

    # ----- forward process ---------------------------------------------------------------------------

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = a_t x0 + s_t eps (DDPM Eq. 4; NCSN's x + sigma z)."""
        a, s = self.alpha_s(t)
        return expand_like(a, x0) * x0 + expand_like(s, x0) * eps

    def q_mean_log_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        a, s = self.alpha_s(t)
        return expand_like(a, x0) * x0, expand_like((s * s).log(), x0)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0) (DDPM Eq. 6-7), integer t."""
        idx = t.long().to(self.device)
        mean = expand_like(self.posterior_mean_coef1[idx], x0) * x0 + expand_like(
            self.posterior_mean_coef2[idx], x0) * x_t
        return mean, expand_like(self.posterior_variance[idx], x0), expand_like(
            self.posterior_log_variance_clipped[idx], x0)

    def prior_kl_bpd(self, x0: Tensor) -> Tensor:
        """KL(q(x_{N-1} | x0) || N(0, prior_std^2 I)) per image, in bits/dim (DDPM's L_T)."""
        t = torch.full((x0.shape[0],), self.num_levels - 1, dtype=torch.long)
        mean, log_var = self.q_mean_log_variance(x0.double(), t)
        log_var_p = 2 * math.log(self.prior_std)
        kl = normal_kl(mean, log_var, torch.zeros_like(mean), torch.full_like(mean, log_var_p))
        return (kl.flatten(1).mean(1) / math.log(2.0)).to(x0.dtype)

    # ----- conversions (one place for eps <-> x0 <-> score <-> posterior mean) --------------------------

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        a, s = self.alpha_s(t)
        return (x_t - expand_like(s, x_t) * eps) / expand_like(a, x_t)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        a, s = self.alpha_s(t)
        return (x_t - expand_like(a, x_t) * x0) / expand_like(s, x_t)

    def x0_from_mean(self, x_t: Tensor, t: Tensor, mean: Tensor) -> Tensor:
        """Invert the posterior mean: x0 = (mu - coef2 x_t) / coef1 (DDPM's xprev parameterization)."""
        idx = t.long().to(self.device)
        c1 = expand_like(self.posterior_mean_coef1[idx], x_t)
        c2 = expand_like(self.posterior_mean_coef2[idx], x_t)
        return (mean - c2 * x_t) / c1


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))
