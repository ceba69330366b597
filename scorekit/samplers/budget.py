"""Sampler options that spend a given number of network evaluations (NFE), for comparisons at equal cost."""

from __future__ import annotations


def plan(name: str, nfe: int, levels: int) -> dict | None:
    """Options with which sampler ``name`` spends about ``nfe`` network evaluations per image on a model of
    ``levels`` noise levels (None: the budget does not fit the sampler). Second-order samplers (Heun, EDM's
    stochastic sampler) evaluate twice per step but once on the last; the multistep solvers (DPM-Solver++(2M) / (3M),
    iPNDM, UniPC) once per step; restart spends 2 N_restart K more; Langevin n_steps_each per level plus a final
    denoising step; DDIM's uniform skip (its code's) is counted as it spaces the levels."""
    if name == "ancestral":
        return {"steps": min(nfe, levels)}
    if name == "ddim":  # DDIM's uniform skip range(0, T, T // S) can give more than S levels: the most that fit
        from .ode import ddim_timesteps

        return {"steps": max(s for s in range(1, min(nfe, levels) + 1) if len(ddim_timesteps(levels, s)) <= nfe)}
    if name in ("euler", "dpm2m", "euler_ancestral", "dpm2m_sde", "ipndm", "unipc", "dpm3m_sde"):
        return {"steps": nfe}
    if name in ("heun", "edm_stochastic"):
        return {"steps": (nfe + 1) // 2} if nfe >= 3 else None
    if name == "pc":
        return {"steps": min(nfe // 2, levels)} if nfe >= 4 else None
    if name == "restart":  # the paper's (N_restart, K) = (3, 2) where it fits, smaller restarts below
        n_r, k = (3, 2) if nfe >= 35 else (2, 1) if nfe >= 15 else (1, 1)
        main = (nfe - 2 * n_r * k + 1) // 2
        return {"steps": main, "restart_nk": (n_r, k)} if main >= 2 else None
    if name == "langevin":
        return {"n_steps_each": max(1, (nfe - 1) // levels)} if nfe >= levels + 1 else None
    raise ValueError(f"no budget plan for sampler {name!r}")


def options_for(denoiser, opts: dict) -> dict:
    """A plan's options as the sampler takes them: restart's (N_restart, K) with the restart paper's interval
    (0.06, 0.30) in units of the data's half-range."""
    opts = dict(opts)
    if "restart_nk" in opts:
        n_r, k = opts.pop("restart_nk")
        scale = (denoiser.data_range[1] - denoiser.data_range[0]) / 2
        opts["restart"] = (n_r, k, 0.06 * scale, 0.30 * scale)
    return opts
