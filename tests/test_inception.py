"""The TF-compatible Inception-v3: architecture, resize, weight handling (real weights only if given)."""

import os

import pytest
import torch

from scorekit.errors import ScorekitError
from scorekit.metrics.inception import InceptionV3TF, load_inception, sha256, tf1_resize_bilinear, weights_path


def test_architecture_runs_on_a_hand_made_image_without_weights():
    torch.manual_seed(0)
    net = InceptionV3TF().eval()
    img = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    img[0, 0, 8:24, 8:24] = 255  # a red square
    img[1, 2, :, 16:] = 200
    with torch.no_grad():
        feats, logits = net(img)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert bool(torch.isfinite(feats).all()) and (feats[0] - feats[1]).abs().max() > 0
    assert bool((feats >= 0).all())  # pool3 of ReLU outputs
    with pytest.raises(ValueError, match="expected uint8"):
        net(img.float())


def test_tf1_bilinear_resize():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    out = tf1_resize_bilinear(x, 4)  # TF1 legacy: src = dst * in/out, the last row/column repeats
    assert out[0, 0].tolist() == [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]]
    y = torch.rand(1, 3, 7, 7)
    assert torch.equal(tf1_resize_bilinear(y, 7), y)
    assert tf1_resize_bilinear(torch.full((1, 1, 32, 32), 3.0), 299).unique().tolist() == [3.0]


def test_missing_and_wrong_weights_are_refused_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("SCOREKIT_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(ScorekitError, match="pt_inception-2015-12-05-6726825d.pth .* --inception-weights"):
        weights_path(None)
    with pytest.raises(ScorekitError, match="not found"):
        weights_path(tmp_path / "nope.pth")
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(InceptionV3TF().state_dict(), fake)
    digest = sha256(fake)
    with pytest.raises(ScorekitError, match=f"sha256 starts with {digest[:8]}, expected 6726825d.*"
                                            "--inception-unverified"):
        load_inception(fake)
    net, info = load_inception(fake, verify=False)
    assert info == {"weights_sha256": digest, "verified": False, "weights_file": fake.name}


def _published_layouts(tmp_path):
    """State dicts laid out as the two published files are: pytorch-fid's (a torchvision-style Inception
    saved with BatchNorm's num_batches_tracked, the legacy non-zip torch.save format) and torch-fidelity's
    (converted from the TF graph: no num_batches_tracked, zip format)."""
    torch.manual_seed(0)
    state = InceptionV3TF().state_dict()
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = torch.randn_like(v) * 0.05 + (1.0 if k.endswith(("running_var", "bn.weight")) else 0.0)
    pytorch_fid = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, pytorch_fid, _use_new_zipfile_serialization=False)
    torch_fidelity = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, torch_fidelity)
    return state, pytorch_fid, torch_fidelity


def test_both_published_layouts_load_and_verification_uses_the_sha256_prefix(tmp_path, monkeypatch):
    import scorekit.metrics.inception as inc

    state, pytorch_fid, torch_fidelity = _published_layouts(tmp_path)
    img = (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    outputs = []
    for path in (pytorch_fid, torch_fidelity):
        monkeypatch.setattr(inc, "SHA256_PREFIX", sha256(path)[:8])  # as if this were the published file
        net, info = load_inception(path)
        assert info["verified"] is True and info["weights_sha256"] == sha256(path)
        assert torch.equal(net.fc.weight, state["fc.weight"])
        with torch.no_grad():
            outputs.append(net(img))
    assert torch.equal(outputs[0][0], outputs[1][0])  # the same tensors give the same features


def test_eval_records_unverified_inception_weights(tmp_path, capsys):
    """Through the command line: refused without --inception-unverified (nothing written), recorded with it."""
    import json

    import numpy as np
    from PIL import Image

    from scorekit.cli import main
    from scorekit.training import train_run

    _, weights, _ = _published_layouts(tmp_path)
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.RandomState(i).rand(8, 8) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    train_run("ddpm-digits", run, ["model.ch=16", "model.ch_mult=[1,2]", "model.attn_resolutions=[4]",
                                   "training.batch_size=16", "training.steps=1", "process.num_timesteps=10",
                                   "sampling.steps=0"], device="cpu", progress=False, evaluate=False)
    args = ["eval", str(run), "--n", "2", "--ref", str(folder), "--extractor", "inception", "--metrics", "fid",
            "--inception-weights", str(weights), "--no-progress", "--out", str(tmp_path / "e.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "expected 6726825d" in err and "--inception-unverified" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.json").exists()
    assert main(args + ["--inception-unverified"]) == 0
    ext = json.loads((tmp_path / "e.json").read_text())["protocol"]["extractor"]
    assert ext["verified"] is False and ext["weights_sha256"] == sha256(weights) and len(ext["weights_sha256"]) == 64


REAL = os.environ.get("SCOREKIT_INCEPTION_WEIGHTS")


@pytest.mark.skipif(not REAL, reason="set SCOREKIT_INCEPTION_WEIGHTS to the real weights file")
def test_real_weights_match_torch_fidelity():
    net, info = load_inception(REAL)
    assert info["verified"] and info["weights_sha256"].startswith("6726825d")
    img = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    with torch.no_grad():
        feats, logits = net(img)
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    ref = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=REAL)
    with torch.no_grad():
        f2, l2 = ref(img)
    assert torch.allclose(feats, f2, atol=1e-4) and torch.allclose(logits, l2, atol=1e-3)
