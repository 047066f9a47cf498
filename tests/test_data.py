"""velora_ens.data: protein CSV, CIFAR-10 layouts (tiny generated files), augmentation and
synthetic sets."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import tarfile

import numpy as np
import pytest
import torch

from velora_ens.data import (
    DataNotFoundError,
    Normalize,
    four_quadrants,
    load_cifar10,
    load_protein,
    protein_splits,
    quadrant_field,
    random_crop_flip,
    sine_1d,
    two_regime,
)

HEADER = "RMSD,F1,F2,F3,F4,F5,F6,F7,F8,F9"


def write_protein(folder, rows, gz=True, header=HEADER):
    (folder / "protein").mkdir(parents=True, exist_ok=True)
    text = "\r\n".join([header] + [",".join(str(v) for v in r) for r in rows]) + "\r\n"
    if gz:
        path = folder / "protein" / "CASP.csv.gz"
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path = folder / "protein" / "CASP.csv"
        path.write_text(text)
    return path


def protein_rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(size=(n, 10)) * 3 + 5, 4)


@pytest.mark.parametrize("gz", [True, False])
def test_protein_loader_reads_the_csv(tmp_path, gz):
    rows = protein_rows()
    write_protein(tmp_path, rows, gz=gz)
    X, y = load_protein(tmp_path)
    np.testing.assert_array_equal(X, rows[:, 1:])
    np.testing.assert_array_equal(y, rows[:, 0])


def test_protein_splits_standardise_on_the_training_part(tmp_path):
    rows = protein_rows(50)
    X, y = rows[:, 1:], rows[:, 0]
    splits = list(protein_splits(X, y, n_splits=3, seed=4))
    assert [s.index for s in splits] == [0, 1, 2]
    for s in splits:
        assert len(s.x_test) == 5 and len(s.x_train) == 45
        torch.testing.assert_close(s.x_train.mean(0), torch.zeros(9), atol=1e-5, rtol=0)
        torch.testing.assert_close(s.x_train.std(0, unbiased=False), torch.ones(9))
        # test rows are the training statistics applied to rows of the original data
        orig = s.y_test_original.squeeze(1).double().numpy()
        assert all(np.isclose(v, y).any() for v in orig)
        train_y = s.y_train.squeeze(1).double() * s.y_std + s.y_mean
        assert not set(np.round(orig, 3)) & set(np.round(train_y.numpy(), 3))
        m, v = s.to_original(torch.zeros(2, 1), torch.ones(2, 1))
        assert float(m[0]) == pytest.approx(s.y_mean) and float(v[0]) == pytest.approx(
            s.y_std ** 2)
    # the split depends on the seed only
    again = next(protein_splits(X, y, n_splits=1, seed=4))
    assert torch.equal(again.x_test, splits[0].x_test)
    assert not torch.equal(splits[0].x_test, splits[1].x_test)


def test_protein_bad_files_are_named(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_protein(tmp_path)
    assert str(tmp_path / "protein" / "CASP.csv") in str(err.value) and "UCI" in str(err.value)
    rows = protein_rows(5).astype(object)
    rows[3, 4] = "nan"
    write_protein(tmp_path / "a", rows)
    with pytest.raises(ValueError, match="line 5: NaN or infinite"):
        load_protein(tmp_path / "a")
    rows[3, 4] = "abc"
    write_protein(tmp_path / "b", rows)
    with pytest.raises(ValueError, match="line 5: not a number"):
        load_protein(tmp_path / "b")
    write_protein(tmp_path / "c", protein_rows(5), header="RMSD,F1,F2")
    with pytest.raises(ValueError, match="expected the header RMSD,F1"):
        load_protein(tmp_path / "c")
    write_protein(tmp_path / "d", [[1, 2, 3]])
    with pytest.raises(ValueError, match="line 2: expected 10 values, got 3"):
        load_protein(tmp_path / "d")


# --- CIFAR-10 ------------------------------------------------------------------------------
def images(n, seed):
    rng = np.random.default_rng(seed)
    # smooth images: JPEG keeps them close
    base = rng.integers(40, 215, size=(n, 1, 1, 3))
    ramp = np.linspace(-30, 30, 32)
    ramp = ramp[None, :, None, None] + 0.5 * ramp[None, None, :, None]
    return np.clip(base + ramp, 0, 255).astype(np.uint8)  # (n, 32, 32, 3)


def encode(arr, fmt):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=95) if fmt == "JPEG" else \
        Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def image_tree(classes=("cat", "ant", "dog"), n=3, fmt="PNG"):
    """{(split, class): (n, 32, 32, 3)} and the files' bytes."""
    files, truth = {}, {}
    for s, split in enumerate(("train", "test")):
        for c, cls in enumerate(classes):
            arr = images(n, seed=10 * s + c)
            truth[(split, cls)] = arr
            for k in range(n):
                ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
                files[f"{split}/{cls}/{k:04d}.{ext}"] = encode(arr[k], fmt)
    return files, truth


def check_tree(data, truth, classes, exact):
    assert data.classes == tuple(sorted(classes))
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        for label, cls in enumerate(sorted(classes)):
            got = x[y == label].permute(0, 2, 3, 1).numpy().astype(int)
            want = truth[(split, cls)].astype(int)
            if exact:
                np.testing.assert_array_equal(got, want)
            else:
                assert np.abs(got - want).mean() < 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_cifar_from_a_tarball(tmp_path, fmt):
    files, truth = image_tree(fmt=fmt)
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "tiny.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    check_tree(data, truth, ("cat", "ant", "dog"), exact=fmt == "PNG")
    assert list((tmp_path / "cache").glob("cifar10-*.npz"))


def test_cifar_from_a_folder_and_the_cache_is_reused(tmp_path, monkeypatch):
    files, truth = image_tree()
    for name, data in files.items():
        path = tmp_path / "cifar10" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    first = load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    check_tree(first, truth, ("cat", "ant", "dog"), exact=True)
    import velora_ens.data.cifar10 as mod

    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(mod, "_decode", boom)
    second = load_cifar10(tmp_path, cache_dir=tmp_path / "cache")
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test,
                                                                       second.y_test)


def write_batches(folder, n=4, label_fix=None):
    folder.mkdir(parents=True)
    truth = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        arr = images(n, seed=k).transpose(0, 3, 1, 2).reshape(n, -1)
        labels = [(k + i) % 10 for i in range(n)]
        if label_fix and name == label_fix[0]:
            labels[0] = label_fix[1]
        truth[name] = (arr, labels)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": arr,
                         b"filenames": [b"f"] * n}, fh, protocol=2)
    return truth


def test_cifar_from_canonical_batches(tmp_path):
    truth = write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    data = load_cifar10(tmp_path, use_cache=False)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    want = np.concatenate([truth[f"data_batch_{i}"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(data.x_train.reshape(20, -1).numpy(), want)
    assert data.y_test.tolist() == truth["test_batch"][1]
    assert data.classes[0] == "airplane" and len(data.classes) == 10


def test_cifar_label_out_of_range_is_refused(tmp_path):
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py", label_fix=("data_batch_3", 12))
    with pytest.raises(ValueError, match=r"train label is out of range: found \[0, 12\], "
                                         r"expected \[0, 9\]"):
        load_cifar10(tmp_path, use_cache=False)


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil()}, fh)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_cifar10(tmp_path, use_cache=False)


def test_cifar_missing_or_malformed(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_cifar10(tmp_path, use_cache=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in msg and "cifar.html" in msg
    (tmp_path / "x" / "cifar10" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "x" / "cifar10" / "test" / "cat").mkdir(parents=True)
    (tmp_path / "x" / "cifar10" / "train" / "cat" / "0.png").write_bytes(b"not an image")
    (tmp_path / "x" / "cifar10" / "test" / "cat" / "0.png").write_bytes(
        encode(images(1, 0)[0], "PNG"))
    with pytest.raises(ValueError, match="cannot decode image .*0.png"):
        load_cifar10(tmp_path / "x", use_cache=False)


# --- augmentation ---------------------------------------------------------------------------
def test_random_crop_flip_worked_examples():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    same = random_crop_flip(x, padding=2, offsets=torch.full((2, 2), 2),
                            flips=torch.tensor([False, False]))
    assert torch.equal(same, x)
    out = random_crop_flip(x, padding=2, offsets=torch.tensor([[0, 0], [2, 4]]),
                           flips=torch.tensor([False, True]))
    # image 0 moved down-right by 2 with zeros in the border
    assert torch.equal(out[0, :, 2:, 2:], x[0, :, :3, :3]) and out[0, :, :2].abs().sum() == 0
    # image 1 shifted left by 2 then mirrored
    shifted = torch.zeros_like(x[1])
    shifted[:, :, :3] = x[1, :, :, 2:]
    assert torch.equal(out[1], shifted.flip(-1))
    # random draws: every output is a window of the padded image, possibly mirrored
    imgs = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    aug = random_crop_flip(imgs, padding=4, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(imgs, (4, 4, 4, 4))
    for i in range(16):
        windows = [padded[i, :, r:r + 8, c:c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(aug[i], w) or torch.equal(aug[i], w.flip(-1)) for w in windows)


def test_normalize_matches_the_formula():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 1.0))(x)
    torch.testing.assert_close(out[:, 1], (x[:, 1].float() / 255 - 0.25) / 0.5)


# --- synthetic -----------------------------------------------------------------------------
def test_two_regime_and_sine_formulas():
    x, y = two_regime(500, noise_std=0.0, seed=3)
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(y, torch.sin(math.pi * x) + torch.sign(x))
    x2, y2 = two_regime(500, seed=3)
    assert torch.equal(x, x2)
    assert float((y2 - y).std()) == pytest.approx(0.05, rel=0.15)
    xs, ys = sine_1d(400, noise_std=0.0, seed=1)
    torch.testing.assert_close(ys, xs.sin())
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        two_regime(0)


def test_four_quadrants_labels_follow_the_field():
    x, label = four_quadrants(3000, seed=0)
    assert x.shape == (3000, 2) and set(label.tolist()) == {0, 1, 2}
    z, quad = quadrant_field(x.double())
    for q in range(4):
        m = quad == q
        counts = torch.bincount(label[m], minlength=3).double() / m.sum()
        assert bool((counts > 0.25).all())  # tertiles: about a third each
        # a higher class means a larger field value
        means = [float(z[m & (label == c)].mean()) for c in range(3)]
        assert means == sorted(means)
    assert torch.equal(quad[(x[:, 0] < 0) & (x[:, 1] > 0)], torch.zeros_like(
        quad[(x[:, 0] < 0) & (x[:, 1] > 0)]))
    x2, label2 = four_quadrants(3000, seed=0)
    assert torch.equal(label, label2)
