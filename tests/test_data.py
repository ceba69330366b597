import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from scorekit.config import load_config
from scorekit.data import (
    BatchStream,
    EpochOrder,
    Files,
    build_source,
    cifar10,
    digits,
    micro_batch_slice,
    preprocess,
)
from scorekit.errors import DataError


def test_digits_split_is_fixed_and_disjoint():
    tr, te = digits("train"), digits("test")
    assert (len(tr), len(te)) == (1497, 300)
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (1, 8, 8)
    assert int(tr.images.max()) == 255 and int(tr.images.min()) == 0
    rows = {bytes(x.numpy()) for x in tr.images}
    # sklearn's digits contain a few exact duplicates; the split itself must not repeat indices
    assert sum(bytes(x.numpy()) in rows for x in te.images) < 10
    assert torch.equal(digits("train").images, tr.images)


def _cifar_batch(path, n, seed):
    rs = np.random.RandomState(seed)
    batch = {b"data": rs.randint(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rs.randint(0, 10, n)),
             b"batch_label": b"fake"}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


def test_cifar10_python_batches(tmp_path):
    batches = [_cifar_batch(tmp_path / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    _cifar_batch(tmp_path / "test_batch", 3, 9)
    train = cifar10(tmp_path, "train")
    assert train.images.shape == (20, 3, 32, 32) and len(cifar10(tmp_path, "test")) == 3
    assert torch.equal(train.images[4].flatten(), torch.from_numpy(batches[1][b"data"][0]))


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_cifar_batch_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", 2, i)
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        cifar10(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def _png(path, size, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_folder_is_recursive_and_resized(tmp_path):
    _png(tmp_path / "a.png", (40, 30), (255, 0, 0))
    _png(tmp_path / "sub" / "b.jpg", (16, 16), (0, 255, 0))
    _png(tmp_path / "sub" / "deeper" / "c.webp", (64, 80), (0, 0, 255))
    (tmp_path / "notes.txt").write_text("not an image")
    src = Files(tmp_path, 16, 3)
    assert len(src) == 3
    imgs = torch.stack([src[i] for i in range(3)])
    assert imgs.shape == (3, 3, 16, 16) and imgs.dtype == torch.uint8
    assert imgs[0, 0].float().mean() > 250 and imgs[1, 1].float().mean() > 240 and imgs[2, 2].float().mean() > 250


def test_zip_and_centre_crop(tmp_path):
    img = Image.new("L", (100, 100), 0)
    img.paste(255, (30, 30, 70, 70))  # a white 40x40 centre square
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.writestr("x/one.png", buf.getvalue())
        z.writestr("readme.md", "hi")
    src = Files(tmp_path / "d.zip", 8, 1, centre_crop=40)
    assert len(src) == 1 and src[0].shape == (1, 8, 8) and int(src[0].min()) == 255


def test_bad_inputs_name_the_culprit(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        Files(tmp_path / "missing", 8, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        Files(tmp_path / "empty", 8, 1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png: cannot read the image"):
        Files(tmp_path / "bad", 8, 1)[0]
    with pytest.raises(DataError, match="needs a local path"):
        build_source(load_config("ddpm-cifar10").data)
    with pytest.raises(DataError, match="missing CIFAR-10 batch file"):
        cifar10(tmp_path / "empty")


def test_lsun_lmdb(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "church"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (20, 12), (i * 100, 0, 0)).save(buf, format="WEBP")
            txn.put(f"img{i}".encode(), buf.getvalue())
    env.close()
    cfg = load_config("ddpm-lsun-church", ["data.path=" + str(tmp_path / "church"), "data.resolution=8",
                                               "model.ch_mult=[1,2]"]).data
    src = build_source(cfg)
    assert len(src) == 3 and src[2].shape == (3, 8, 8) and abs(int(src[2][0, 4, 4]) - 200) < 8


def test_epoch_order_is_a_permutation_per_epoch_and_resumable():
    order = EpochOrder(10, seed=3)
    stream = order.indices(0, 30)
    for e in range(3):
        assert sorted(stream[e * 10:(e + 1) * 10].tolist()) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    assert np.array_equal(EpochOrder(10, seed=3).indices(7, 9), stream[7:16])


def test_micro_batches_partition_the_global_batch():
    covered = []
    for micro in range(2):
        for rank in range(2):
            s = micro_batch_slice(16, 2, rank, 2, micro)
            covered += list(range(16))[s]
    assert sorted(covered) == list(range(16))


def test_batch_stream_in_memory_and_from_files_agree(tmp_path):
    d = digits("test")
    for i in range(20):
        Image.fromarray(d.images[i, 0].numpy()).save(tmp_path / f"{i:02d}.png")
    files = Files(tmp_path, 8, 1)
    from scorekit.data import InMemory

    mem = InMemory("same", torch.stack([files[i] for i in range(20)]))
    a = BatchStream(mem, seed=1, global_batch=8).batches(3)
    b = BatchStream(files, seed=1, global_batch=8, num_workers=0).batches(3)
    for _ in range(4):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and ya is None and yb is None


def test_preprocess_scaling_flip_and_dequantization():
    u8 = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert preprocess(u8, (-1, 1)).tolist() == [[[[-1.0, 1.0]]]]
    assert preprocess(u8, (0, 1), flip=torch.tensor([True])).tolist() == [[[[1.0, 0.0]]]]
    x = preprocess(u8, (0, 1), dequant_noise=torch.full((1, 1, 1, 2), 0.5))
    assert torch.allclose(x, torch.tensor([[[[0.5 / 256, 255.5 / 256]]]]))
