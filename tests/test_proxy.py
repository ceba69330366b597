import numpy as np
import pytest
import torch

from scorekit.data import digits
from scorekit.metrics.proxy import features_and_probs, proxy_metrics, trained_classifier
from scorekit.metrics.scores import inception_score


def test_classifier_is_accurate_and_deterministic():
    net = trained_classifier()
    test = digits("test")
    acc = (net(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.95
    f1, _ = features_and_probs(test.images[:10])
    f2, _ = features_and_probs(test.images[:10], trained_classifier.__wrapped__())
    assert np.allclose(f1, f2, atol=1e-5)


def test_proxy_fd_grows_with_noise_and_with_dropped_classes():
    train = digits("train")
    base = train.images[:600]
    g = torch.Generator().manual_seed(0)
    fds = []
    for std in (0, 25, 50, 100):
        noisy = (base.float() + std * torch.randn(base.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
        fds.append(proxy_metrics(noisy)["proxy_fd"])
    assert fds == sorted(fds) and fds[-1] > 2 * fds[0]
    fds = []
    for keep in (10, 7, 4, 1):
        imgs = train.images[train.labels < keep][:600]
        fds.append(proxy_metrics(imgs)["proxy_fd"])
    assert fds == sorted(fds) and fds[-1] > 5 * fds[0]


def test_inception_score_of_uniform_and_one_hot_predictions():
    assert inception_score(np.full((50, 10), 0.1), 1)[0] == pytest.approx(1.0)
    one_hot = np.eye(10)[np.arange(100) % 10]
    assert inception_score(one_hot, 1)[0] == pytest.approx(10.0)
    assert inception_score(one_hot, splits=10)[1] == pytest.approx(0.0)
