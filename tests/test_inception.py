"""The TF-compatible Inception-v3: architecture, resize, weight handling (real weights only if given)."""

import os

import pytest
import torch

from scorekit.errors import ScorekitError
from scorekit.metrics.inception import InceptionV3TF, load_inception, tf1_resize_bilinear, weights_path


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
    with pytest.raises(ScorekitError, match="does not start with 6726825d"):
        load_inception(fake)


REAL = os.environ.get("SCOREKIT_INCEPTION_WEIGHTS")


@pytest.mark.skipif(not REAL, reason="set SCOREKIT_INCEPTION_WEIGHTS to the real weights file")
def test_real_weights_match_torch_fidelity():
    net, digest = load_inception(REAL)
    assert digest.startswith("6726825d")
    img = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    with torch.no_grad():
        feats, logits = net(img)
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    ref = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=REAL)
    with torch.no_grad():
        f2, l2 = ref(img)
    assert torch.allclose(feats, f2, atol=1e-4) and torch.allclose(logits, l2, atol=1e-3)
