"""Shared fixtures: where the checkout, the CLI and real MNIST are (CTest sets the variables)."""
import os
import pathlib

import numpy as np
import pytest

SOURCE_DIR = pathlib.Path(os.environ.get("CUDL_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))


@pytest.fixture
def cli():
    path = os.environ.get("CUDL_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("CUDL_CLI does not name the built cudl binary (run through ctest)")
    return path


@pytest.fixture(scope="session")
def mnist_dir():
    d = SOURCE_DIR / "data" / "mnist"
    if not (d / "train-images-idx3-ubyte").exists() and not (d / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {d} (run tools/fetch-mnist.sh)")
    return str(d)


def synthetic(n=256, seed=0):
    """Images the MLP and CNN take, with labels that depend on them (so a model can learn)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.int32)
    x = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.2
    for i, label in enumerate(y):  # a bright 2x2 block whose position is the class
        x[i, 0, 2 * label:2 * label + 2, 4:6] = 1.0
    return x, y
