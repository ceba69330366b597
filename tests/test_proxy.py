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


def test_the_trained_classifier_is_kept_on_disk_for_later_processes(tmp_path, monkeypatch):
    """A first call trains and writes the weights under $SCOREKIT_CACHE; a later process (a cleared in-memory cache)
    loads exactly those weights without training; a damaged file is trained again and replaced; an unwritable
    cache folder only costs the training."""
    import scorekit.metrics.proxy as proxy

    monkeypatch.setenv("SCOREKIT_CACHE", str(tmp_path / "cache"))
    proxy.trained_classifier.cache_clear()
    first = proxy.trained_classifier(seed=3, epochs=1)
    files = list((tmp_path / "cache").glob("digits-proxy-*.safetensors"))
    assert len(files) == 1
    proxy.trained_classifier.cache_clear()
    trained = proxy._train
    monkeypatch.setattr(proxy, "_train", lambda *a: (_ for _ in ()).throw(AssertionError("trained again")))
    second = proxy.trained_classifier(seed=3, epochs=1)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    files[0].write_bytes(b"not safetensors")
    monkeypatch.setattr(proxy, "_train", trained)
    proxy.trained_classifier.cache_clear()
    third = proxy.trained_classifier(seed=3, epochs=1)
    assert torch.equal(third.head.weight, first.head.weight) and files[0].stat().st_size > 1000
    (tmp_path / "ro").write_text("a file where the cache folder should be")
    monkeypatch.setenv("SCOREKIT_CACHE", str(tmp_path / "ro"))
    proxy.trained_classifier.cache_clear()
    assert torch.equal(proxy.trained_classifier(seed=3, epochs=1).head.weight, first.head.weight)
    proxy.trained_classifier.cache_clear()
