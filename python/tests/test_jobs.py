"""cudl.style_transfer, cudl.bench and cudl.datasets.image_folder."""
import shutil

import numpy as np
import pytest

import cudl
from conftest import SOURCE_DIR

CHELSEA = str(SOURCE_DIR / "tests" / "data" / "chelsea.png")
BRICK = str(SOURCE_DIR / "tests" / "data" / "brick.png")


def test_style_transfer_returns_an_image():
    style = np.full((40, 40, 3), 0.5, dtype=np.float32)
    style[::4] = 1.0  # stripes
    out = cudl.style_transfer(CHELSEA, style, weights="random:1", size=32, iters=3, optimizer="adam")
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
    assert max(out.shape[:2]) == 32
    assert 0.0 <= out.min() and out.max() <= 1.0
    again = cudl.style_transfer(CHELSEA, [style], weights="random:1", size=32, iters=3, optimizer="adam")
    np.testing.assert_array_equal(out, again)  # deterministic


def test_style_transfer_bad_input():
    with pytest.raises(cudl.ValueError, match="weights: give a VGG19"):
        cudl.style_transfer(CHELSEA, BRICK)
    with pytest.raises(cudl.ValueError, match=r"unknown option\(s\) itters"):
        cudl.style_transfer(CHELSEA, BRICK, weights="random:1", itters=3)
    with pytest.raises(cudl.ValueError, match=r"shape \(8, 8\): expected \(H, W, 3\)"):
        cudl.style_transfer(np.zeros((8, 8), dtype=np.float32), BRICK, weights="random:1")
    with pytest.raises(cudl.ValueError, match="dtype uint8"):
        cudl.style_transfer(np.zeros((8, 8, 3), dtype=np.uint8), BRICK, weights="random:1")
    with pytest.raises(cudl.FileError, match="does not exist"):
        cudl.style_transfer("no-such.png", BRICK, weights="random:1")
    with pytest.raises(cudl.ValueError):
        cudl.style_transfer(CHELSEA, BRICK, weights="random:1", size=8)


def test_bench_returns_rows():
    rows = cudl.bench(models=["mlp"], batch_sizes=[8, 16], repeat=2)
    assert [(r["op"], r["batch"]) for r in rows] == [("train_step", 8), ("inference", 8), ("train_step", 16),
                                                     ("inference", 16)]
    for r in rows:
        assert r["model"] == "mlp" and r["backend"] == "cpu" and r["rate_unit"] == "img/s"
        assert r["median_ms"] > 0 and r["rate"] > 0 and r["samples"] >= 1
    with pytest.raises(cudl.ValueError, match="unknown 'nope'"):
        cudl.bench(models=["nope"])


def test_image_folder(tmp_path):
    for split in ("train", "test"):
        for cls, src in (("brick", BRICK), ("cat", CHELSEA)):
            (tmp_path / split / cls).mkdir(parents=True)
            shutil.copy(src, tmp_path / split / cls / "a.png")
    (x, y), (xt, yt), names = cudl.datasets.image_folder(str(tmp_path), 32)
    assert names == ["brick", "cat"]
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert list(y) == [0, 1] and list(yt) == [0, 1]
    with pytest.raises(cudl.FileError):
        cudl.datasets.image_folder(str(tmp_path / "missing"), 32)


def test_cifar10_arrays(tmp_path):
    rng = np.random.default_rng(0)

    def batch(name, n):
        labels = (np.arange(n) % 10).astype(np.uint8)
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        (tmp_path / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        return labels, pixels

    train = [batch(f"data_batch_{i}.bin", 4) for i in range(1, 6)]
    test_labels, test_pixels = batch("test_batch.bin", 3)
    (x, y), (xt, yt) = cudl.datasets.cifar10(str(tmp_path))
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int32
    assert xt.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(yt, test_labels)
    np.testing.assert_array_equal(np.rint(xt.reshape(3, 3072) * 255).astype(np.uint8), test_pixels)
    np.testing.assert_array_equal(y[:4], train[0][0])
