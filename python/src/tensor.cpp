// cudl.Tensor: numpy in and out (sharing memory on the CPU where the layout allows) and DLPack
// both ways (torch.from_dlpack(t), cudl.from_dlpack(x)).
//
// Copies, stated once: from_numpy(a) on the CPU shares a's memory (no copy; the tensor keeps a
// alive); to another device or dtype it copies. t.numpy() shares a host tensor's memory for
// float32, int32 and float16; a bfloat16 tensor (numpy has no such dtype) is widened into a new
// float32 array, and a CUDA tensor is copied to the host.
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "cudl/engine/device.hpp"
#include "python/src/common.hpp"
#include "python/src/dlpack.hpp"

namespace cudl::python {
namespace {

std::shared_ptr<void> hold(py::object o) {
  // Released from whatever thread drops the last reference: take the GIL to drop it.
  return std::shared_ptr<void>(new py::object(std::move(o)), [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
}

std::string dtype_python_name(DType t) {
  switch (t) {
    case DType::f32:
      return "float32";
    case DType::f16:
      return "float16";
    case DType::bf16:
      return "bfloat16";
    case DType::i32:
      return "int32";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "f32") return DType::f32;
  if (name == "int32" || name == "i32") return DType::i32;
  if (name == "float16" || name == "f16") return DType::f16;
  if (name == "bfloat16" || name == "bf16") return DType::bf16;
  bad_value("dtype '{}': expected float32, int32, float16 or bfloat16", name);
}

py::tuple shape_tuple(const Shape& s) {
  py::tuple t(s.rank());
  for (int i = 0; i < s.rank(); ++i) t[i] = s[i];
  return t;
}

PyTensor to_device(const PyTensor& t, Device device) {
  if (t.tensor.device() == device) return t;
  Context& ctx = device_context(device);
  return {t.tensor.to(ctx), nullptr};
}

PyTensor cast_to(const PyTensor& t, DType dtype) {
  if (t.tensor.dtype() == dtype) return t;
  if (!is_floating(t.tensor.dtype()) || !is_floating(dtype))
    bad_value("Tensor: cannot convert {} to {}: only between float32, float16 and bfloat16",
              dtype_python_name(t.tensor.dtype()), dtype_python_name(dtype));
  return {t.tensor.cast(device_context(t.tensor.device()), dtype), nullptr};
}

PyTensor in_format(const PyTensor& t, const std::string& format) {
  MemoryFormat f = MemoryFormat::contiguous;
  if (format == "channels_last") {
    f = MemoryFormat::channels_last;
    if (t.tensor.rank() != 4)
      bad_value("Tensor: channels_last needs a 4-D [N, C, H, W] tensor, this one has shape {}", t.tensor.shape());
  } else if (format != "contiguous") {
    bad_value("Tensor: unknown memory format '{}': expected contiguous or channels_last", format);
  }
  if (t.tensor.format() == f) return t;
  return {t.tensor.to_format(device_context(t.tensor.device()), f), nullptr};
}

PyTensor from_numpy(const py::array& a, const std::string& device, const std::optional<std::string>& dtype) {
  PyTensor t = borrow_array(a, "Tensor.from_numpy");
  t = to_device(t, parse_device(device));
  if (dtype) t = cast_to(t, parse_dtype(*dtype));
  return t;
}

py::array to_numpy(const PyTensor& t) {
  if (!t.tensor.device().is_cpu()) return to_numpy(to_device(t, Device::cpu()));
  if (t.tensor.dtype() == DType::bf16) return to_numpy(cast_to(t, DType::f32));
  return host_tensor_to_numpy(t.tensor, t.owner);
}

// The element strides of t's logical dims: row-major, or NHWC's for a channels_last tensor (so
// that NumPy and DLPack consumers read it in place, as PyTorch's channels_last tensors are read).
std::vector<std::int64_t> element_strides(const Tensor& t) {
  if (t.channels_last()) {
    const std::int64_t c = t.dim(1), w = t.dim(3);
    return {t.dim(2) * w * c, 1, w * c, c};
  }
  std::vector<std::int64_t> strides(static_cast<std::size_t>(t.rank()));
  std::int64_t stride = 1;
  for (int i = t.rank() - 1; i >= 0; --i) {
    strides[static_cast<std::size_t>(i)] = stride;
    stride *= t.dim(i);
  }
  return strides;
}

// ---- DLPack
// What a DLManagedTensor we export owns: the tensor (its storage) and the shape and stride arrays
// it points to.
struct Export {
  PyTensor t;
  std::vector<std::int64_t> shape, strides;
  dlpack::DLManagedTensor managed{};
};

py::object to_dlpack(const PyTensor& t, const py::object& /*stream*/) {
  // Producers must make the data ready for the consumer's stream; cudl's work is ordered on its
  // context's stream, so waiting for that stream covers any consumer stream.
  if (t.tensor.device().is_cuda()) device_context(t.tensor.device()).synchronize();
  auto* e = new Export{t, {}, {}};
  for (int i = 0; i < t.tensor.rank(); ++i) e->shape.push_back(t.tensor.dim(i));
  dlpack::DLTensor& d = e->managed.dl_tensor;
  d.data = t.tensor.raw();
  d.device = dlpack::device_of(t.tensor.device());
  d.ndim = t.tensor.rank();
  d.dtype = dlpack::dtype_of(t.tensor.dtype());
  d.shape = e->shape.data();
  if (t.tensor.channels_last()) {
    e->strides = element_strides(t.tensor);
    d.strides = e->strides.data();
  } else {
    d.strides = nullptr;  // compact row-major
  }
  d.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = [](dlpack::DLManagedTensor* m) { delete static_cast<Export*>(m->manager_ctx); };
  PyObject* capsule = PyCapsule_New(&e->managed, "dltensor", [](PyObject* cap) {
    // Not consumed (still named "dltensor"): the capsule owns the tensor and frees it.
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* m = static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      m->deleter(m);
    }
  });
  if (!capsule) {
    delete e;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(capsule);
}

PyTensor from_dlpack(const py::object& x) {
  py::object capsule = py::hasattr(x, "__dlpack__") ? x.attr("__dlpack__")() : x;
  if (!PyCapsule_IsValid(capsule.ptr(), "dltensor"))
    bad_value(
        "from_dlpack: expected an object with __dlpack__ (a torch tensor, a numpy array) or an unused DLPack "
        "capsule, got {}",
        std::string(py::str(py::type::of(x).attr("__name__"))));
  auto* m = static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  // From here the tensor is ours: the capsule must not free it too.
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");
  std::shared_ptr<void> owner(m, [](void* p) {
    auto* managed = static_cast<dlpack::DLManagedTensor*>(p);
    if (managed->deleter) {
      py::gil_scoped_acquire gil;
      managed->deleter(managed);
    }
  });
  const dlpack::DLTensor& d = m->dl_tensor;
  const Device device = dlpack::device_from(d.device);
  const DType dtype = dlpack::dtype_from(d.dtype);
  std::vector<std::int64_t> dims(d.shape, d.shape + d.ndim);
  if (d.strides) {
    std::int64_t expected = 1;
    for (int i = d.ndim - 1; i >= 0; --i) {
      if (dims[static_cast<std::size_t>(i)] != 1 && d.strides[i] != expected)
        bad_value(
            "from_dlpack: the tensor is not contiguous (dimension {} has stride {}, expected {}): pass "
            "x.contiguous() or a copy",
            i, d.strides[i], expected);
      expected *= dims[static_cast<std::size_t>(i)];
    }
  }
  void* data = static_cast<char*>(d.data) + d.byte_offset;
  return {Tensor::borrow(data, shape_from(dims, "from_dlpack"), dtype, device), owner};
}

std::string repr(const PyTensor& t) {
  return fmt::format("cudl.Tensor(shape={}, dtype={}, device={})", t.tensor.shape(),
                     dtype_python_name(t.tensor.dtype()), t.tensor.device());
}

}  // namespace

Device parse_device(const std::string& name) {
  Device d;
  try {
    d = Device::parse(name);
  } catch (const Error& e) {
    bad_value("device '{}': expected cpu, cuda, cuda:N or auto ({})", name, e.what());
  }
  if (d.is_cuda() && d.index >= cuda_device_count())
    bad_value("device '{}': {}", name,
              cuda_compiled() ? fmt::format("{} CUDA device(s) visible", cuda_device_count())
                              : std::string("this build of cudl has no CUDA backend"));
  return d;
}

Context& device_context(Device device) {
  // Never destroyed: CUDA contexts must not be torn down by static destructors after the driver
  // has begun to unload at interpreter exit.
  static auto* contexts = new std::map<std::pair<int, int>, std::unique_ptr<Context>>();
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  auto& slot = (*contexts)[{static_cast<int>(device.type), device.index}];
  if (!slot) slot = std::make_unique<Context>(device);
  return *slot;
}

std::string numpy_dtype_name(const py::dtype& dtype) { return py::cast<std::string>(py::str(py::handle(dtype))); }

void check_contiguous(const py::array& a, const std::string& what) {
  if (!(a.flags() & py::array::c_style))
    bad_value("{}: the array is not C-contiguous (strides {}): pass numpy.ascontiguousarray(a)", what,
              std::string(py::str(a.attr("strides"))));
}

PyTensor borrow_array(const py::array& a, const std::string& what) {
  const py::dtype dt = a.dtype();
  DType dtype;
  if (dt.is(py::dtype::of<float>()))
    dtype = DType::f32;
  else if (dt.is(py::dtype::of<std::int32_t>()))
    dtype = DType::i32;
  else if (dt.is(py::dtype("float16")))
    dtype = DType::f16;
  else
    bad_value("{}: dtype {} is not supported: expected float32, int32 or float16 (a.astype(numpy.float32))", what,
              numpy_dtype_name(dt));
  check_contiguous(a, what);
  std::vector<std::int64_t> dims(a.shape(), a.shape() + a.ndim());
  Tensor t = Tensor::borrow(const_cast<void*>(a.data()), shape_from(dims, what), dtype, Device::cpu());
  return {t, hold(a)};
}

py::array host_tensor_to_numpy(const Tensor& t, std::shared_ptr<void> owner) {
  py::dtype dt = t.dtype() == DType::f32   ? py::dtype::of<float>()
                 : t.dtype() == DType::i32 ? py::dtype::of<std::int32_t>()
                                           : py::dtype("float16");
  std::vector<py::ssize_t> shape, strides;
  for (int i = 0; i < t.rank(); ++i) shape.push_back(t.dim(i));
  for (std::int64_t s : element_strides(t))
    strides.push_back(static_cast<py::ssize_t>(s * static_cast<std::int64_t>(dtype_size(t.dtype()))));
  // The capsule keeps the storage (and whatever owns borrowed memory) alive as long as the array.
  auto* keep = new PyTensor{t, std::move(owner)};
  py::capsule base(keep, [](void* p) { delete static_cast<PyTensor*>(p); });
  return py::array(dt, shape, strides, t.raw(), base);
}

void bind_tensor(py::module_& m) {
  py::class_<PyTensor>(m, "Tensor",
                       "A dense row-major tensor on one device (cpu or cuda). from_numpy on the CPU and numpy() of "
                       "a float32/int32/float16 host tensor share memory; other conversions copy.")
      .def_static("from_numpy", &from_numpy, py::arg("array"), py::arg("device") = "cpu", py::arg("dtype") = py::none(),
                  "A tensor over a C-contiguous float32, int32 or float16 array: shared on the CPU, copied to "
                  "another device; dtype='bfloat16' or 'float16' converts (a copy).")
      .def("numpy", &to_numpy, "A numpy array: shared memory for a host float32/int32/float16 tensor, else a copy")
      .def(
          "__array__", [](const PyTensor& t, const py::object&) { return to_numpy(t); }, py::arg("dtype") = py::none())
      .def(
          "to", [](const PyTensor& t, const std::string& device) { return to_device(t, parse_device(device)); },
          py::arg("device"), "A copy on `device` (itself when already there)")
      .def(
          "astype", [](const PyTensor& t, const std::string& dtype) { return cast_to(t, parse_dtype(dtype)); },
          py::arg("dtype"), "float32, float16 or bfloat16 (a copy unless already so)")
      .def("to_memory_format", &in_format, py::arg("format"),
           "A copy stored 'channels_last' (NHWC, for a 4-D [N, C, H, W] tensor) or 'contiguous' (itself when it "
           "already is); numpy() and DLPack give a channels_last tensor NHWC strides")
      .def_property_readonly("memory_format",
                             [](const PyTensor& t) { return std::string(memory_format_name(t.tensor.format())); })
      .def_property_readonly("shape", [](const PyTensor& t) { return shape_tuple(t.tensor.shape()); })
      .def_property_readonly("dtype", [](const PyTensor& t) { return dtype_python_name(t.tensor.dtype()); })
      .def_property_readonly("device", [](const PyTensor& t) { return t.tensor.device().str(); })
      .def("__dlpack__", &to_dlpack, py::kw_only(), py::arg("stream") = py::none())
      .def("__dlpack_device__",
           [](const PyTensor& t) {
             const auto d = dlpack::device_of(t.tensor.device());
             return py::make_tuple(d.device_type, d.device_id);
           })
      .def("__repr__", &repr);
  m.def("from_dlpack", &from_dlpack, py::arg("x"),
        "A tensor sharing the memory of a DLPack producer (torch.Tensor, numpy array): float32, int32, float16 or "
        "bfloat16, contiguous, on the CPU or a CUDA device");
}

}  // namespace cudl::python
