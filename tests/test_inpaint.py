"""Inpainting on the exact mixture denoiser: known pixels kept, unknown pixels from the conditional law."""

import math

import numpy as np
import pytest
import torch

from scorekit.errors import ScorekitError
from scorekit.processes import VEProcess, VPProcess
from scorekit.rng import ImageRNG
from scorekit.samplers.inpaint import inpaint_mask, repaint_schedule, sample_inpaint
from scorekit.samplers.langevin import sample_langevin_inpaint
from scorekit.toy import GaussianMixture, exact_denoiser

M, VAR = 1.0, 0.25
MIX = GaussianMixture([0.5, 0.5], [[-M] * 4, [M] * 4], VAR)  # the two modes tie all four dimensions together
MASK = torch.tensor([1.0, 1.0, 0.0, 0.0])  # dimensions 0, 1 known; 2, 3 to inpaint


def conditional_weight_of_plus(known: torch.Tensor) -> float:
    """p(component +M | x_known) of the mixture, by Bayes' rule (the unknown dims then follow that component)."""
    logw = torch.tensor([-((known.double() - mu[:2]) ** 2).sum() / (2 * VAR) for mu in MIX.means])
    return float(torch.softmax(logw, 0)[1])


def summary(x: torch.Tensor) -> tuple[float, float]:
    """Fraction of inpainted pairs in the + mode, and their per-axis std around their mode."""
    u = x[:, 2:].double()
    plus = u.sum(1) > 0
    mode = torch.where(plus[:, None], torch.tensor(M), torch.tensor(-M))
    return float(plus.double().mean()), float((u - mode).std())


def inpaint(method, known, n=2000, **kw):
    ref = torch.cat([known, torch.zeros(2)]).expand(n, 4).clone()
    if method == "langevin":
        d = exact_denoiser(MIX, VEProcess.from_ladder(5.0, 0.01, 30), data_range=(-3, 3))
        return ref, sample_langevin_inpaint(d, ref, MASK, ImageRNG(0, n, per_image=False), n_steps_each=20,
                                            step_lr=1e-4, denoise=True)
    process = VPProcess.from_schedule("linear", 50) if method == "vp" else VEProcess.from_ladder(5.0, 0.01, 50)
    d = exact_denoiser(MIX, process, data_range=(-3, 3))
    return ref, sample_inpaint(d, ref, MASK, ImageRNG(0, n, per_image=False), clip_denoised=False, **kw)


@pytest.mark.parametrize("method,kw", [("vp", {"jumps": 9, "jump_length": 5}), ("ve", {"jumps": 9, "jump_length": 5}),
                                       ("langevin", {})])
def test_known_pixels_are_kept_and_unknown_ones_follow_the_conditional(method, kw):
    known = torch.tensor([1.0, 1.0])  # clearly from the + component: p(+ | known) = 1 - 1e-7
    assert conditional_weight_of_plus(known) > 0.999
    ref, x = inpaint(method, known, **kw)
    assert torch.equal(x[:, :2], ref[:, :2])
    frac, std = summary(x)
    assert frac > 0.98
    assert std == pytest.approx(math.sqrt(VAR), rel=0.06)
    plus = x[x[:, 2:].sum(1) > 0, 2:]
    assert plus.mean().item() == pytest.approx(M, abs=0.04)


def test_repaint_resampling_moves_an_ambiguous_completion_towards_the_conditional():
    """Replacement is approximate: the known pixels enter the chain only through their noised copies, so with
    an ambiguous context it under-weights the likelier mode (0.52 for 0.60 here). RePaint's resampling reduces
    that error (to 0.55), by more than twice the standard error of the difference at this N (0.009)."""
    known = torch.tensor([0.1, -0.05])
    w = conditional_weight_of_plus(known)  # 0.599
    errors = [abs(summary(inpaint("vp", known, n=6000, jumps=j, jump_length=5)[1])[0] - w) for j in (0, 9)]
    assert errors[1] < errors[0] - 0.018


def test_repaint_schedule_goes_down_with_jumps_back_up():
    assert repaint_schedule(5) == [4, 3, 2, 1, 0, -1]
    seq = repaint_schedule(10, jump_length=2, jumps=1)
    assert seq[0] == 9 and seq[-1] == -1 and all(abs(a - b) == 1 for a, b in zip(seq, seq[1:]))
    ups = sum(b > a for a, b in zip(seq, seq[1:]))
    assert ups == 2 * len(range(0, 10 - 2, 2))  # every jump point climbs jump_length levels, once
    assert sum(b < a for a, b in zip(seq, seq[1:])) == 10 + ups


def test_masks(tmp_path):
    from PIL import Image

    half = inpaint_mask("half", (1, 8, 8))
    assert half[0, 0, :, :4].all() and not half[0, 0, :, 4:].any()
    box = inpaint_mask("box", (1, 8, 8))
    assert box.sum() == 64 - 16 and not box[0, 0, 2:6, 2:6].any()
    r1, r2 = inpaint_mask("random", (1, 8, 8), seed=3), inpaint_mask("random", (1, 8, 8), seed=3)
    assert torch.equal(r1, r2) and 10 < r1.sum() < 54
    img = np.zeros((16, 16), np.uint8)
    img[:, :8] = 255
    Image.fromarray(img).save(tmp_path / "m.png")
    assert torch.equal(inpaint_mask(str(tmp_path / "m.png"), (1, 8, 8)), half)
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "all.png")
    with pytest.raises(ScorekitError, match="must keep some pixels and hide some"):
        inpaint_mask(str(tmp_path / "all.png"), (1, 8, 8))


def test_inpaint_command_keeps_the_known_pixels(tmp_path, capsys):
    from scorekit.cli import main
    from scorekit.data import digits
    from scorekit.training import train_run

    run = tmp_path / "run"
    train_run("ddpm-digits", run, ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                   "training.batch_size=16", "training.steps=2", "process.num_timesteps=20",
                                   "sampling.steps=0"], device="cpu", progress=False, evaluate=False)
    assert main(["inpaint", str(run), "--data", "digits", "--mask", "half", "--n", "3", "--samples", "2",
                 "--jumps", "1", "--jump-length", "5", "--out", str(tmp_path / "fig.png"), "--no-progress"]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 1000
    with np.load(tmp_path / "fig_inpainted.npz") as f:
        samples, mask, originals = f["samples"], f["mask"], f["originals"]
    assert samples.shape == (6, 8, 8, 1) and originals.shape == (3, 8, 8, 1)
    assert np.array_equal(originals[:, :, :, 0], digits("test").images[:3, 0].numpy())
    kept = mask.astype(bool)
    assert np.array_equal(samples[:, kept], np.repeat(originals, 2, axis=0)[:, kept])
