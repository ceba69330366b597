"""Power-function EMA and post-hoc EMA reconstruction (EDM2 Sec. 3, App. C) against closed forms."""

import numpy as np
import pytest
import torch
from torch import nn

from scorekit.ema.power import (
    PowerEMA,
    gamma_to_sigma_rel,
    posthoc_weights,
    profile,
    profile_dot,
    reconstruct,
    save_snapshot,
    sigma_rel_to_gamma,
)


def test_sigma_rel_and_gamma_are_edm2s_pairs():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2's two stored EMAs
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for r in (0.01, 0.05, 0.075, 0.2):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(r)) == pytest.approx(r, rel=1e-10)
    tau = np.linspace(0, 1, 400_001)  # sigma_rel is the profile's standard deviation relative to its length
    p = profile(1.0, sigma_rel_to_gamma(0.075), tau)
    mean = np.trapezoid(tau * p, tau)
    assert np.sqrt(np.trapezoid((tau - mean) ** 2 * p, tau)) == pytest.approx(0.075, rel=1e-4)


def _scalar_net(value: float) -> nn.Module:
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def test_power_ema_matches_its_closed_form_on_a_step():
    """theta = a for tau < s, b after: the EMA after t updates is b + (a - b) ((s - 1) / t)^(gamma + 1)."""
    a, b, s = 1.0, 3.0, 40
    for r in (0.05, 0.10):
        net = _scalar_net(a)
        ema = PowerEMA(net, r)
        for t in range(1, 201):
            with torch.no_grad():
                net.weight.fill_(a if t < s else b)
            ema.update(net, t)
            expected = b + (a - b) * ((s - 1) / t) ** (ema.gamma + 1) if t >= s else a
            assert float(ema.module.weight) == pytest.approx(expected, rel=1e-5), (r, t)


def test_profile_inner_products_match_quadrature():
    tau = np.linspace(0, 1000, 2_000_001)
    g1, g2 = sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10)
    for (ta, ga, tb, gb) in [(700, g1, 1000, g2), (1000, g2, 1000, g2), (300, g1, 250, g1)]:
        numeric = np.trapezoid(profile(ta, ga, tau) * profile(tb, gb, tau), tau)
        assert profile_dot(ta, ga, tb, gb) == pytest.approx(numeric, rel=1e-3)


def test_reconstructed_profile_is_close_to_the_exact_one():
    """sigma_rel = 0.075 at t = 1000 from the 0.05 and 0.10 EMAs saved every 100 steps: L1 distance of the
    profiles (each integrates to one, so L1 is at most 2) 0.8%; every 50 steps 0.2%."""
    tau = np.linspace(0, 1000, 1_000_001)
    g1, g2, gr = sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10), sigma_rel_to_gamma(0.075)
    target = profile(1000, gr, tau)
    for every, bound in ((100, 0.01), (50, 0.003)):
        steps = [t for t in range(every, 1001, every) for _ in (0, 1)]
        gammas = [g for _ in range(every, 1001, every) for g in (g1, g2)]
        x = posthoc_weights(steps, gammas, 1000, gr)
        rebuilt = sum(w * profile(t, g, tau) for w, t, g in zip(x, steps, gammas))
        assert np.trapezoid(np.abs(rebuilt - target), tau) < bound


def test_on_a_random_walk_the_reconstruction_beats_both_stored_emas(tmp_path):
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(50, 40, bias=False)
    emas = [PowerEMA(net, r) for r in (0.05, 0.10)]
    direct = PowerEMA(net, 0.075)
    folder = tmp_path / "phema"
    for t in range(1, 1001):
        with torch.no_grad():
            net.weight.add_(torch.randn(net.weight.shape, generator=g))
        for e in (*emas, direct):
            e.update(net, t)
        if t % 100 == 0:
            save_snapshot(folder, t, emas)
    state, info = reconstruct(folder, 0.075)
    assert info["step"] == 1000 and info["snapshots"] == 10
    truth = direct.module.weight
    err = float((state["weight"] - truth).norm())
    stored = [float((e.module.weight - truth).norm()) for e in emas]
    assert err < 0.25 * min(stored), (err, stored)
    # a stored profile is reconstructed as itself
    again, _ = reconstruct(folder, 0.05)
    torch.testing.assert_close(again["weight"], emas[0].module.weight, rtol=1e-4, atol=1e-4)


def test_training_keeps_snapshots_and_scorekit_ema_builds_a_run(tmp_path, capsys):
    from scorekit.cli import main
    from scorekit.run import load
    from scorekit.training import train_run

    tiny = ["model.ch=8", "model.ch_mult=[1,2]", "model.attn_resolutions=[]", "model.norm_groups=4",
            "training.batch_size=8", "training.steps=6", "training.snapshot_every=2", "training.checkpoint_every=3",
            "training.test_every=0", "training.warmup=1"]
    train_run("ddpm-digits", tmp_path / "a", tiny, device="cpu", progress=False, evaluate=False)
    snaps = sorted(p.name for p in (tmp_path / "a" / "checkpoints" / "phema").iterdir())
    assert snaps == ["phema_000000002.safetensors", "phema_000000004.safetensors", "phema_000000006.safetensors"]
    assert main(["ema", str(tmp_path / "a"), "--sigma-rel", "0.1", "--out", str(tmp_path / "b")]) == 0
    d, ref = load(tmp_path / "b"), reconstruct(tmp_path / "a" / "checkpoints" / "phema", 0.1)[0]
    for k, v in d.net.state_dict().items():
        torch.testing.assert_close(v, ref[k])
    assert main(["ema", str(tmp_path / "a"), "--sigma-rel", "0.1", "--out", str(tmp_path / "b")]) == 2  # no clobber
    assert "already holds a run" in capsys.readouterr().err
    train_run("ddpm-digits", tmp_path / "c", [*tiny, "training.snapshot_every=0"], device="cpu", progress=False,
              evaluate=False)
    assert main(["ema", str(tmp_path / "c"), "--sweep"]) == 2
    assert "no post-hoc EMA snapshots" in capsys.readouterr().err
