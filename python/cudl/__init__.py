"""cudl from Python: numpy and DLPack tensors, Keras-like models, datasets, style transfer, bench.

    import cudl
    (x, y), (xt, yt) = cudl.datasets.mnist("data/mnist")
    m = cudl.model("mnist_cnn")
    history = m.fit(x, y, epochs=1, test_data=(xt, yt))
    print(m.evaluate(xt, yt))

Everything runs in the C++ engine (the same code as the `cudl` CLI) with the GIL released.
"""
import os as _os

# OpenMP threads that wait sleep instead of spinning (the CLI sets the same): libgomp reads the
# variable once, when the extension loads it, so it must be set before the import below.
_os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from ._cudl import (  # noqa: E402
    bench,
    Error, ValueError, FileError, OutOfMemoryError,
    Tensor, from_dlpack, Model, model, load, datasets, style_transfer,
    set_threads, threads, cuda_device_count, __version__,
)
from . import _cudl  # noqa: E402


class History(dict):
    """Per-epoch metrics, a dict of lists (loss, accuracy, val_*, test_*, lr, seconds).

    `history.history` is the dict itself, as in Keras."""

    @property
    def history(self):
        return self

    @property
    def epoch(self):
        return list(range(len(self.get("loss", []))))


_fit = Model.fit


def _fit_with_history(self, x, y, **options):
    return History(_fit(self, x, y, **options))


_fit_with_history.__doc__ = _fit.__doc__
Model.fit = _fit_with_history
