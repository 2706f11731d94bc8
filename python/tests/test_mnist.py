"""Real MNIST through numpy: mnist_cnn learns it in one epoch, and Python's losses are the CLI's."""
import ast
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np

import cudl
from conftest import SOURCE_DIR


def write_idx(folder, prefix, x, y):
    """MNIST's IDX files from float images in [0, 1] (exact: they came from bytes / 255)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.rint(x[:, 0] * 255).astype(np.uint8)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, *pixels.shape) + pixels.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes())


def test_datasets_mnist_arrays(mnist_dir):
    (x, y), (xt, yt) = cudl.datasets.mnist(mnist_dir)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int32
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(np.unique(y)) == list(range(10))


def test_missing_dataset_is_a_file_error(tmp_path):
    try:
        cudl.datasets.mnist(str(tmp_path / "nothing"))
    except cudl.FileError as e:
        assert "nothing" in str(e)
        assert isinstance(e, OSError)
    else:
        raise AssertionError("no error for a missing MNIST folder")


def readme_example():
    """The ```python block of the README's "From Python" section."""
    text = (SOURCE_DIR / "README.md").read_text()
    section = text[text.index("## From Python"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_readme_example_runs_as_shown_and_reaches_95_percent(mnist_dir, tmp_path):
    """mnist_cnn, one epoch on 18000 real MNIST images through numpy, >= 95% on the 10000 test images."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_dir)
    (tmp_path / "runs").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    print("\n".join(lines))
    assert lines[0].startswith("0 ") and float(lines[0].split()[1]) >= 0.95  # the callback: val accuracy
    result = ast.literal_eval(lines[1])
    assert set(result) == {"loss", "accuracy"} and result["accuracy"] >= 0.95
    assert lines[2] == "[7 2 1] [7 2 1]"
    _, (xt, yt) = cudl.datasets.mnist(mnist_dir)
    again = cudl.load(str(tmp_path / "runs" / "mnist_py.safetensors")).evaluate(xt, yt)
    assert again["accuracy"] == result["accuracy"]
    assert abs(again["loss"] - result["loss"]) <= 1e-6 * result["loss"]  # sums may group by thread count


def test_same_seed_same_losses_as_the_cli(mnist_dir, cli, tmp_path):
    (x, y), (xt, yt) = cudl.datasets.mnist(mnist_dir)
    data = tmp_path / "mnist"
    write_idx(data, "train", x[:1000], y[:1000])
    write_idx(data, "t10k", xt[:300], yt[:300])
    metrics = tmp_path / "metrics.json"
    # One host thread on both sides: the CLI's --threads auto resizes its team between epochs with
    # the machine's load, and evaluation's sums are not bit-identical across team sizes.
    subprocess.run([cli, "train", "--model", "mnist_cnn", "--data", str(data), "--epochs", "2", "--batch-size", "50",
                    "--seed", "7", "--device", "cpu", "--threads", "1", "--metrics-json", str(metrics)],
                   check=True, capture_output=True, timeout=600)
    cli_epochs = json.loads(metrics.read_text())["epochs"]
    # The same files, read back by the same reader the CLI used.
    (x2, y2), (xt2, yt2) = cudl.datasets.mnist(str(data))
    threads = cudl.threads()
    cudl.set_threads(1)
    try:
        h = cudl.model("mnist_cnn", seed=7).fit(x2, y2, epochs=2, batch_size=50, test_data=(xt2, yt2))
    finally:
        cudl.set_threads(threads)
    assert h["loss"] == [e["train_loss"] for e in cli_epochs]
    assert h["test_loss"] == [e["test_loss"] for e in cli_epochs]
    assert h["accuracy"] == [e["train_accuracy"] for e in cli_epochs]
