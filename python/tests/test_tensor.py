"""cudl.Tensor: numpy round trips (shared memory on the CPU), dtypes, DLPack with numpy and torch."""
import numpy as np
import pytest

import cudl


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float16])
def test_numpy_round_trip_shares_memory(dtype):
    a = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    t = cudl.Tensor.from_numpy(a)
    assert t.shape == (2, 3, 4)
    assert t.dtype == np.dtype(dtype).name
    assert t.device == "cpu"
    b = t.numpy()
    assert b.dtype == dtype and b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    a[1, 2, 3] = 7  # one buffer: the tensor and both arrays see the write
    assert b[1, 2, 3] == 7
    assert np.shares_memory(a, b)


def test_numpy_outlives_tensor_and_source():
    t = cudl.Tensor.from_numpy(np.full((5,), 3.5, dtype=np.float32))
    b = t.numpy()
    del t  # the array keeps the storage alive
    np.testing.assert_array_equal(b, np.full((5,), 3.5, dtype=np.float32))


def test_bfloat16_rounds_and_widens():
    a = np.array([1.0, 0.5, 3.0, 1.0 + 2.0 ** -10], dtype=np.float32)
    t = cudl.Tensor.from_numpy(a, dtype="bfloat16")
    assert t.dtype == "bfloat16"
    b = t.numpy()  # numpy has no bfloat16: a float32 copy
    assert b.dtype == np.float32
    # bf16 keeps 8 significant bits: 1 + 2^-10 rounds to 1.
    np.testing.assert_array_equal(b, np.array([1.0, 0.5, 3.0, 1.0], dtype=np.float32))
    h = cudl.Tensor.from_numpy(a, dtype="float16").numpy()
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, a.astype(np.float16))


def test_wrong_dtype_names_what_was_expected():
    with pytest.raises(cudl.ValueError, match=r"dtype float64 is not supported: expected float32, int32 or float16"):
        cudl.Tensor.from_numpy(np.zeros(3))
    with pytest.raises(ValueError):  # a built-in ValueError too
        cudl.Tensor.from_numpy(np.zeros(3, dtype=np.int64))
    with pytest.raises(cudl.ValueError, match="expected float32, int32, float16 or bfloat16"):
        cudl.Tensor.from_numpy(np.zeros(3, dtype=np.float32), dtype="float64")
    with pytest.raises(cudl.ValueError, match="cannot convert int32 to bfloat16"):
        cudl.Tensor.from_numpy(np.zeros(3, dtype=np.int32), dtype="bfloat16")


def test_non_contiguous_array_is_refused():
    a = np.zeros((4, 6), dtype=np.float32)[:, ::2]
    with pytest.raises(cudl.ValueError, match=r"not C-contiguous .*numpy.ascontiguousarray"):
        cudl.Tensor.from_numpy(a)
    assert isinstance(cudl.ValueError("x"), cudl.Error)


def test_cuda_device():
    a = np.arange(6, dtype=np.float32)
    if cudl.cuda_device_count() == 0:
        with pytest.raises(cudl.ValueError, match="device 'cuda'"):
            cudl.Tensor.from_numpy(a, device="cuda")
        pytest.skip("no CUDA device: only the refusal was checked")
    t = cudl.Tensor.from_numpy(a, device="cuda")
    assert t.device == "cuda:0"
    np.testing.assert_array_equal(t.numpy(), a)
    np.testing.assert_array_equal(t.to("cpu").numpy(), a)


def test_dlpack_with_numpy_both_ways():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = cudl.from_dlpack(a)  # numpy exports through __dlpack__
    assert t.shape == (3, 4) and t.dtype == "float32"
    a[0, 0] = 42
    assert t.numpy()[0, 0] == 42
    b = np.from_dlpack(t)  # and imports ours
    assert np.shares_memory(b, t.numpy())
    np.testing.assert_array_equal(b, a)
    with pytest.raises(cudl.ValueError, match="not contiguous"):
        cudl.from_dlpack(a.T)
    with pytest.raises(cudl.ValueError, match="expected an object with __dlpack__"):
        cudl.from_dlpack([1, 2, 3])


def test_dlpack_with_torch():
    torch = pytest.importorskip("torch", reason="torch is not installed: the DLPack round trip with torch is skipped")
    t = cudl.Tensor.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    pt = torch.from_dlpack(t)
    assert pt.shape == (2, 3) and pt.dtype == torch.float32
    pt[0, 1] = -5  # shared memory
    assert t.numpy()[0, 1] == -5
    for dtype in (torch.float32, torch.int32, torch.float16, torch.bfloat16):
        src = torch.arange(8).to(dtype).reshape(2, 4)
        c = cudl.from_dlpack(src)
        assert c.shape == (2, 4)
        back = torch.from_dlpack(c)
        assert back.dtype == dtype
        assert torch.equal(back, src)
        assert back.data_ptr() == src.data_ptr()
    with pytest.raises(cudl.ValueError, match="not contiguous"):
        cudl.from_dlpack(torch.zeros(3, 4).t())
    with pytest.raises(cudl.ValueError, match="dtype .* is not supported"):
        cudl.from_dlpack(torch.zeros(3, dtype=torch.float64))


def test_channels_last_copy_reads_back_in_logical_order():
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    t = cudl.Tensor.from_numpy(a)
    assert t.memory_format == "contiguous"
    cl = t.to_memory_format("channels_last")
    assert cl.memory_format == "channels_last"
    assert cl.shape == (2, 3, 4, 5)
    view = cl.numpy()
    np.testing.assert_array_equal(view, a)
    # NHWC storage: the channel is the fastest-moving dimension.
    assert view.strides == (4 * 5 * 3 * 4, 4, 5 * 3 * 4, 3 * 4)
    np.testing.assert_array_equal(np.from_dlpack(cl), a)
    np.testing.assert_array_equal(cl.to_memory_format("contiguous").numpy(), a)
    with pytest.raises(ValueError, match="4-D"):
        cudl.Tensor.from_numpy(np.zeros((2, 3), np.float32)).to_memory_format("channels_last")
    with pytest.raises(ValueError, match="contiguous or channels_last"):
        t.to_memory_format("nhwc")
