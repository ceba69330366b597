"""The flow family against Meta's ``flow_matching`` library (Lipman et al. 2024; a dev-only dependency, as diffusers
is for the DDPM parts): the same path and regression target on the same inputs, and its ODE solvers on the same
velocity field land where scorekit's samplers do. flow_matching writes the path with t = 0 noise, t = 1 data;
scorekit's tau is 1 - t (spec/beyond.md)."""

import pytest
import torch

from scorekit.processes import FlowProcess
from scorekit.rng import ImageRNG
from scorekit.samplers.ode import sample_euler, sample_rk45
from scorekit.toy import GaussianMixture, exact_denoiser
from scorekit.training.losses import mse_target

fm_path = pytest.importorskip("flow_matching.path")
fm_solver = pytest.importorskip("flow_matching.solver")
fm_utils = pytest.importorskip("flow_matching.utils")

P = FlowProcess.from_levels(1000)
MIX = GaussianMixture([0.3, 0.7], [[-0.6] * 4, [0.5] * 4], 0.05)


def test_the_path_and_the_target_are_flow_matchings():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(64, 4, generator=g, dtype=torch.float64), torch.randn(64, 4, generator=g, dtype=torch.float64)
    s = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    theirs = fm_path.CondOTProbPath().sample(x_0=eps, x_1=x0, t=s)
    levels = P.t_of_tau(1 - s)
    assert torch.allclose(P.q_sample(x0, levels, eps), theirs.x_t, atol=1e-12)
    d = exact_denoiser(MIX, P, output="velocity")
    assert torch.allclose(mse_target(d, x0, theirs.x_t, levels, eps), -theirs.dx_t, atol=1e-12)


class _TheirVelocity(fm_utils.ModelWrapper):
    """scorekit's exact mixture velocity in flow_matching's orientation: u(x, s) = -v(x, tau = 1 - s)."""

    def __init__(self, denoiser):
        super().__init__(None)
        self.d = denoiser

    def forward(self, x, t, **extras):
        level = P.t_of_tau(torch.as_tensor(1 - t, dtype=torch.float64).expand(x.shape[0]))
        return -self.d.raw(x, level).to(x.dtype)


def test_flow_matchings_euler_solver_lands_where_scorekits_does():
    """Euler in t on x (flow_matching) and Euler in sigma on x / (1 - tau) (scorekit) are the same steps."""
    d = exact_denoiser(MIX, P, output="velocity")
    taus = torch.tensor([0.99, 0.8, 0.55, 0.3, 0.1, 0.02, 0.0], dtype=torch.float64)
    z = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theirs = fm_solver.ODESolver(velocity_model=_TheirVelocity(d)).sample(
        x_init=z, step_size=None, method="euler", time_grid=1 - taus)
    ours = sample_euler(d, (16, 4), ImageRNG(0, 16), sigmas=taus / (1 - taus), x_T=z / (1 - taus[0]))
    assert torch.allclose(ours, theirs, atol=1e-9), (ours - theirs).abs().max()


def test_flow_matchings_adaptive_solver_agrees_with_scorekits_rk45():
    """dopri5 (torchdiffeq, through flow_matching) and scorekit's RK45 from the top level to the data, tolerances
    1e-7: the same endpoints to 1e-4."""
    d = exact_denoiser(MIX, P, output="velocity")
    top = float(P.taus[-1])
    z = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    theirs = fm_solver.ODESolver(velocity_model=_TheirVelocity(d)).sample(
        x_init=z, step_size=None, method="dopri5", atol=1e-7, rtol=1e-7,
        time_grid=torch.tensor([1 - top, 1 - float(P.taus[0])], dtype=torch.float64))
    ours = sample_rk45(d, (16, 4), ImageRNG(0, 16), rtol=1e-7, atol=1e-7, x_T=z / (1 - top))
    # scorekit integrates on down to sigma = 0; flow_matching stops at the smallest level tau_0 = 1/1001: one more
    # Euler step of the exact velocity (x0 = x - tau v) closes the gap
    tau0 = float(P.taus[0])
    theirs = theirs - tau0 * d.raw(theirs, torch.zeros(16, dtype=torch.float64))
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
