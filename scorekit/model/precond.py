"""EDM's preconditioning (Karras et al. 2022, Table 1 and Eq. 7-8): a network F becomes the denoiser

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)),

with c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
c_in = 1 / sqrt(sigma^2 + sigma_data^2) and c_noise = ln(sigma) / 4, so that F's input and its training
target both have unit variance at every sigma. The loss weight lambda(sigma) = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2 = 1 / c_out^2 makes the effective weight on F's own error one (Eq. 8).
"""

from __future__ import annotations

import torch

EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # EDM's sampling range (Table 1)


def edm_coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) at ``sigma`` (EDM Table 1)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    var = sigma**2 + sigma_data**2
    return sigma_data**2 / var, sigma * sigma_data / var.sqrt(), 1 / var.sqrt(), sigma.log() / 4


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def consistency_coefficients(sigma: torch.Tensor, sigma_data: float, sigma_min: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out) of a consistency function with the boundary condition built in (Song et al. 2023, Appendix
    C; openai/consistency_models): c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2), c_out =
    (sigma - sigma_min) sigma_data / sqrt(sigma^2 + sigma_data^2); at sigma_min, c_skip = 1 and c_out = 0."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    return c_skip, c_out
