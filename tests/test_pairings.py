"""Any network serves any process: a U-Net trained as an NCSN score model (VE, sigma-scaled output, DSM) and a
RefineNet trained as a DDPM eps-model (VP); the denoiser's conversions are right for every pairing."""

import pytest
import torch

from scorekit.config import load_config
from scorekit.model.denoiser import Denoiser
from scorekit.model.factory import build_denoiser, build_net
from scorekit.nets.refinenet import RefineNet
from scorekit.processes import VEProcess, VPProcess
from scorekit.training import train_run

PAIRINGS = {
    "unet-on-ve": ("ncsnv2-digits", ["model.arch=unet", "model.ch=8", "model.ch_mult=[1,2]",
                                     "model.attn_resolutions=[4]", "model.output=sigma_score", "training.loss=dsm"]),
    "ncsnv2-on-vp": ("ddpm-digits", ["model.arch=ncsnv2", "model.ngf=8", "model.output=eps"]),
    "ncsn-v1-on-vp": ("ddpm-digits", ["model.arch=ncsn", "model.ngf=8", "model.output=eps",
                                      "process.num_timesteps=50", "sampling.steps=0"]),
}


@pytest.mark.parametrize("name", list(PAIRINGS))
def test_cross_pairings_build_and_train(name, tmp_path):
    preset, overrides = PAIRINGS[name]
    cfg = load_config(preset, overrides)
    before = {k: v.clone() for k, v in build_denoiser(cfg).net.state_dict().items()}
    train_run(preset, tmp_path, overrides + ["training.steps=3", "training.batch_size=8", "training.log_every=1"],
              device="cpu", progress=False, evaluate=False)
    from scorekit.run import load

    d = load(tmp_path, ema=False)
    after = d.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    import json

    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_refinenet_on_centered_data_sees_the_same_input():
    """On a VP process the data is already in [-1, 1]: the network takes it as it is (the authors' 2x - 1 on
    [0, 1] data gives the same input)."""
    torch.manual_seed(0)
    a = RefineNet("ncsnv2", channels=1, ngf=8, resolution=8, centered=False)
    b = RefineNet("ncsnv2", channels=1, ngf=8, resolution=8, centered=True)
    b.load_state_dict(a.state_dict())
    x01 = torch.rand(2, 1, 8, 8)
    assert torch.allclose(a(x01), b(2 * x01 - 1), atol=1e-6)
    assert build_net(load_config("ddpm-digits", ["model.arch=ncsnv2", "model.ngf=8"])).centered
    assert not build_net(load_config("ncsnv2-digits")).centered


class Oracle(torch.nn.Module):
    """The exact answer for N(m, v) data in the convention of ``output``, as a network would give it."""

    def __init__(self, process, output, m, v):
        super().__init__()
        self.process, self.output, self.m, self.v = process, output, m, v
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, label):
        t = self.process.t_of_label(label.double())
        a, s = (u.reshape(-1, *[1] * (x.ndim - 1)) for u in self.process.alpha_s(t))
        var_t = a * a * self.v + s * s
        score = -(x.double() - a * self.m) / var_t
        x0 = self.m + a * self.v / var_t * (x.double() - a * self.m)
        eps = -s * score
        out = {"eps": eps, "x0": x0, "score": score, "sigma_score": -eps}[self.output]
        return out.to(x.dtype)


@pytest.mark.parametrize("kind", ["vp", "ve"])
@pytest.mark.parametrize("output", ["eps", "x0", "score", "sigma_score"])
def test_the_denoiser_converts_every_output_on_every_process(kind, output):
    m, v = 0.3, 0.05
    p = VPProcess.from_schedule("linear", 100) if kind == "vp" else VEProcess.from_ladder(5.0, 0.01, 30)
    d = Denoiser(Oracle(p, output, m, v), p, output=output, data_range=(-1, 1))
    x = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    for t in (0, 7, p.num_levels - 1):
        tt = torch.full((6,), t)
        a, s = (float(u) for u in p.alpha_s(torch.tensor([t])))
        truth = -(x - a * m) / (a * a * v + s * s)
        assert torch.allclose(d.score(x, tt), truth, rtol=1e-6, atol=1e-8), (output, kind, t)
        sigma = s / a  # sigma-space: D(x_hat; sigma) is E[x0 | x0 + sigma eps = x_hat]
        x_hat = x / a
        assert torch.allclose(d.denoise(x_hat, sigma), m + v / (v + sigma**2) * (x_hat - m), rtol=1e-6, atol=1e-8)
