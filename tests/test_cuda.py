"""The fast paths on the device they are for: every test here needs a CUDA GPU (marked ``cuda``; skipped, with the
reason, on a machine without one) and compares the GPU against an independent reference (the CPU's results,
fp32's, eager's, a counted CUDA graph). The same paths on the CPU are tested where they mean something there
(tests/test_fastpath.py: channels-last, bf16 autocast, compile; tests/test_sampler_reproducibility.py: batch
sizes; tests/test_train.py: resume), so nothing here compares the CPU with itself. `pytest -m cuda` runs these
alone (the GPU proof does, with SCOREKIT_TEST_TIMEOUT set).

What is exact and what is not: on the CPU a resumed run is bit-identical (tests/test_train.py); on CUDA it is
bit-identical when cuDNN is restricted to deterministic algorithms (torch.backends.cudnn.deterministic, as the
test below sets), which training does not do by default because the fastest convolution algorithms are not
deterministic; bf16 autocast changes results by design (tolerances stated per test)."""

import json

import pytest
import torch

from scorekit.checkpoint import load_checkpoint, save_checkpoint
from scorekit.config import CHOICES, load_config
from scorekit.evaluation.generate import generate
from scorekit.model.factory import build_denoiser
from scorekit.rng import ImageRNG
from scorekit.run import RunDir
from scorekit.samplers import sample
from scorekit.training import train_run

TINY = ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]", "model.num_res_blocks=1",
        "process.num_timesteps=20", "sampling.steps=0"]
TRAIN = TINY + ["training.batch_size=16", "training.warmup=2", "training.log_every=1", "training.ema_decay=0.9",
                "sampling.num_samples=4", "eval.bpd_images=0", "eval.proxy_samples=0"]


pytestmark = pytest.mark.cuda


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda")


def _denoiser(device, extra=()):
    cfg = load_config("ddpm-digits", [*TINY, *extra])
    torch.manual_seed(0)
    d = build_denoiser(cfg)
    for p in d.net.parameters():  # no zero-initialised layer: every layer must matter
        torch.nn.init.normal_(p, std=0.05)
    return d.to(device).eval()


def _batch(device, n=8):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    return x0.to(device), torch.randint(0, 20, (n,), generator=g).to(device), torch.randn(n, 1, 8, 8, generator=g).to(
        device)


def _loss_and_grads(d, x0, t, eps, bf16: bool):
    d.net.zero_grad(set_to_none=True)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = d.net(d.process.q_sample(x0, t, eps), t)
    loss = (out.float() - eps).pow(2).mean()
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in d.net.parameters()])


def test_a_bf16_training_step_stays_close_to_fp32(device):
    """Loss within 2% and the gradient's direction within cosine 0.99 of fp32's (bf16 keeps 8 bits of mantissa)."""
    d = _denoiser(device).train()
    x0, t, eps = _batch(device)
    loss32, g32 = _loss_and_grads(d, x0, t, eps, bf16=False)
    loss16, g16 = _loss_and_grads(d, x0, t, eps, bf16=True)
    assert abs(loss16 - loss32) <= 0.02 * loss32
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.99
    assert (g16.norm() / g32.norm() - 1).abs() < 0.05


def test_fused_adam_equals_foreach_adam(device):
    results = []
    for impl in ({"fused": True}, {"foreach": True}):
        d = _denoiser(device).train()
        opt = torch.optim.Adam(d.net.parameters(), lr=1e-3, **impl)
        x0, t, eps = _batch(device)
        for _ in range(3):
            opt.zero_grad()
            _loss_and_grads(d, x0, t, eps, bf16=False)
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in d.net.parameters()]))
    assert torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_channels_last_equals_the_plain_layout(device):
    d = _denoiser(device)
    x0, t, _ = _batch(device)
    with torch.no_grad():
        plain = d.net(x0, t)
        d.net.to(memory_format=torch.channels_last)
        fast = d.net(x0.contiguous(memory_format=torch.channels_last), t)
    assert torch.allclose(plain, fast, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in CHOICES["sampling.sampler"] if n != "meanflow"])  # meanflow: its own net
def test_every_sampler_on_the_device_draws_what_the_cpu_draws(device, name):
    """The same noise (per-image generators on the CPU, moved to the device) gives the same images on the device
    as on the CPU, up to float rounding."""
    extra = ["process.kind=ve", "family=ncsn", "model.output=sigma_score", "process.sigma_end=0.01",
             "process.sigma_begin=1", "process.num_levels=4", "sampling.n_steps_each=2"] if name == "langevin" else []
    ref = _denoiser("cpu", extra)
    x_cpu = sample(ref, name, (3, 1, 8, 8), ImageRNG(5, 3, "cpu"), steps=4)
    x_dev = sample(ref.to(device), name, (3, 1, 8, 8), ImageRNG(5, 3, "cpu"), steps=4)
    assert x_dev.device.type == device.type and torch.isfinite(x_dev).all()
    assert torch.allclose(x_dev.cpu(), x_cpu, atol=2e-3), (x_dev.cpu() - x_cpu).abs().max()


def test_per_image_generators_on_the_device_give_the_same_images_at_two_batch_sizes(device):
    d = _denoiser(device)
    a = generate(d, 5, seed=3, batch_size=5, sampler="dpm2m_sde", options={"steps": 4})
    b = generate(d, 5, seed=3, batch_size=2, sampler="dpm2m_sde", options={"steps": 4})
    assert torch.equal(a, b)


def test_a_checkpoint_written_on_the_device_loads_on_the_cpu_and_back(device, tmp_path):
    d = _denoiser(device)
    opt = torch.optim.Adam(d.net.parameters())
    x0, t, eps = _batch(device)
    _loss_and_grads(d, x0, t, eps, bf16=False)
    opt.step()
    path = save_checkpoint(tmp_path / "c.safetensors", config={"k": 1}, step=3, model=d.net.state_dict(),
                           optimizer=opt.state_dict())
    on_cpu = load_checkpoint(path, map_location="cpu")
    back = load_checkpoint(path, map_location=device)
    for k, v in d.net.state_dict().items():
        assert on_cpu.model[k].device.type == "cpu" and torch.equal(on_cpu.model[k], v.cpu())
        assert back.model[k].device.type == device.type and torch.equal(back.model[k], v)
    fresh = _denoiser("cpu")
    fresh.net.load_state_dict(on_cpu.model)
    torch.optim.Adam(fresh.net.parameters()).load_state_dict(on_cpu.optimizer)
    with torch.no_grad():
        assert torch.allclose(fresh.net(x0.cpu(), t.cpu()), d.net(x0, t).cpu(), atol=1e-5)


def test_resume_on_the_device_continues_exactly(device, tmp_path):
    """fp32 here (bf16 is covered above); cuDNN restricted to deterministic algorithms on CUDA."""
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        common = TRAIN + ["training.precision=fp32", "model.dropout=0.1", "training.checkpoint_every=100"]
        train_run("ddpm-digits", tmp_path / "a", common + ["training.steps=4"], device=str(device), progress=False,
                  evaluate=False)
        train_run("ddpm-digits", tmp_path / "b", common + ["training.steps=2"], device=str(device), progress=False,
                  evaluate=False)
        train_run(str(tmp_path / "b"), None, ["training.steps=4"], device=str(device), progress=False,
                  evaluate=False)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old
    a, b = (load_checkpoint(RunDir(tmp_path / r).latest()) for r in "ab")
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
        assert torch.equal(a.ema[k], b.ema[k]), k


def test_training_with_compile_follows_eager(tmp_path):
    curves = {}
    for name, extra in (("eager", []), ("compiled", ["training.compile=true"])):
        train_run("ddpm-digits", tmp_path / name, TRAIN + ["training.steps=6", "training.precision=fp32", *extra],
                  device="cuda", progress=False, evaluate=False)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        curves[name] = torch.tensor([row["loss"] for row in map(json.loads, lines) if "loss" in row])
    assert torch.allclose(curves["eager"], curves["compiled"], rtol=1e-3)


def test_sampling_with_bf16_and_cuda_graphs_follows_eager(monkeypatch):
    """generate(precision=bf16, compile=True): torch.compile(mode="reduce-overhead") records CUDA graphs on a
    padded static batch and replays them (both counted on torch.cuda.CUDAGraph, which Inductor's graph trees use);
    the images stay within a few grey levels of eager fp32's (8 of 255 on average)."""
    counts = {"capture": 0, "replay": 0}
    begin, replay = torch.cuda.CUDAGraph.capture_begin, torch.cuda.CUDAGraph.replay

    def counted_begin(self, *args, **kwargs):
        counts["capture"] += 1
        return begin(self, *args, **kwargs)

    def counted_replay(self, *args, **kwargs):
        counts["replay"] += 1
        return replay(self, *args, **kwargs)

    d = _denoiser("cuda")
    eager = generate(d, 6, seed=0, batch_size=4, sampler="ddim", options={"steps": 5}, precision="fp32")
    torch._dynamo.reset()
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", counted_begin)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counted_replay)
    fast = generate(d, 6, seed=0, batch_size=4, sampler="ddim", options={"steps": 5}, precision="bf16",
                    compile=True)
    graphs = generate(d, 6, seed=0, batch_size=4, sampler="ddim", options={"steps": 5}, precision="fp32",
                      compile=True)
    assert fast.shape == eager.shape == (6, 1, 8, 8)
    assert (fast.float() - eager.float()).abs().mean() < 8
    assert (graphs.int() - eager.int()).abs().max() <= 1  # the graphs replay the fp32 computation
    # 2 generate calls x 2 batches x 5 network calls = 20: after warm-up and recording, most of them are replays
    assert counts["capture"] >= 1 and counts["replay"] >= 10, counts


def test_the_main_job_end_to_end_on_cuda(tmp_path, capsys):
    from scorekit.cli import main

    run = tmp_path / "digits"
    assert main(["train", "ddpm-digits", "--out", str(run), "--no-progress", "training.steps=20",
                 "eval.bpd_images=4", "eval.proxy_samples=128"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["bpd"]["bpd"] < 20 and summary["proxy"]["proxy_fd"] is not None
    ck = load_checkpoint(RunDir(run).latest())
    assert ck.step == 20 and all(v.device.type == "cpu" for v in ck.model.values())
    assert main(["sample", str(run), "--n", "8", "--bf16", "--out", str(tmp_path / "s.png"), "--no-progress"]) == 0
