#pragma once
// Shared by the binding files of the Python module `cudl` (python/src/*.cpp): the error kinds
// Python sees, the checks numpy arrays go through, and the model object.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cudl/engine/context.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/tensor.hpp"
#include "cudl/models/network/sequential.hpp"
#include "cudl/models/zoo/zoo.hpp"

namespace cudl::python {

namespace py = pybind11;

// C++ sides of cudl.ValueError and cudl.FileError (errors.cpp maps them, and cudl::Error to
// cudl.Error). Both are cudl::Error, so code shared with the library may throw either.
class ValueError : public Error {
 public:
  using Error::Error;
};
class FileError : public Error {
 public:
  using Error::Error;
};

// Throws cudl::python::ValueError with a fmt message (no file:line: the message is for Python users).
template <class... Args>
[[noreturn]] void bad_value(fmt::format_string<Args...> format, Args&&... args) {
  throw ValueError(fmt::format(format, std::forward<Args>(args)...));
}
// Runs `load`, turning a cudl::Error into a FileError (a reader's errors are about its file).
template <class F>
auto reading_file(F&& load) {
  try {
    return load();
  } catch (const ValueError&) {
    throw;
  } catch (const FileError&) {
    throw;
  } catch (const OutOfMemoryError&) {
    throw;
  } catch (const Error& e) {
    throw FileError(e.what());
  }
}
// A Shape of up to Shape::kMaxRank dimensions (Shape is built from a brace list only).
inline Shape shape_from(const std::vector<std::int64_t>& d, const std::string& what) {
  switch (d.size()) {
    case 0:
      return Shape{};
    case 1:
      return {d[0]};
    case 2:
      return {d[0], d[1]};
    case 3:
      return {d[0], d[1], d[2]};
    case 4:
      return {d[0], d[1], d[2], d[3]};
    case 5:
      return {d[0], d[1], d[2], d[3], d[4]};
    case 6:
      return {d[0], d[1], d[2], d[3], d[4], d[5]};
    default:
      bad_value("{}: {} dimensions: cudl tensors have at most {}", what, d.size(), Shape::kMaxRank);
  }
}

// Throws FileError when `path` is not an existing regular file (`what` names the argument).
void check_input_file(const std::string& what, const std::string& path);

// "cpu", "cuda", "cuda:N" or "auto", checked: a CUDA device on a machine without one is an error.
Device parse_device(const std::string& name);
// One context per device for tensors' copies (a model keeps its own for training).
Context& device_context(Device device);

// The dtype name Python sees ("float32", "int32", "float16", "bfloat16") for error messages.
std::string numpy_dtype_name(const py::dtype& dtype);
// Checks that `a` is C-contiguous, naming `what` and the fix when it is not.
void check_contiguous(const py::array& a, const std::string& what);

// A cudl::Tensor seen from Python: its data may be a numpy array's or a DLPack producer's memory,
// which `owner` keeps alive as long as the tensor (and any numpy view or DLPack export of it).
struct PyTensor {
  Tensor tensor;
  std::shared_ptr<void> owner;
};
// The array's memory as a host tensor with no copy (float32, int32 or float16, C-contiguous).
PyTensor borrow_array(const py::array& a, const std::string& what);
// A numpy array over `t` (a host tensor of f32, i32 or f16), with no copy: `t`'s storage and
// `owner` stay alive while the array does.
py::array host_tensor_to_numpy(const Tensor& t, std::shared_ptr<void> owner = nullptr);

// A model built on its own context, as cudl.model() returns it.
struct PyModel {
  std::unique_ptr<Context> ctx;
  Sequential net;
  std::string name;  // the built-in name or the model file's path
  ModelSpec spec;
  std::uint64_t seed = 1;
};

// What a checkpoint of `m` records besides its weights: the preprocessing, and a model file's text.
std::map<std::string, std::string> model_metadata(const PyModel& m);

// A classification dataset over the caller's arrays (no copy): x float32 [N, C, H, W] matching the
// model's input, y int32 or int64 [N] in [0, classes). The arrays must outlive the dataset; the
// returned holder keeps what the conversion made.
struct ArrayDataset {
  Dataset data;
  std::shared_ptr<void> keep;
};
ArrayDataset dataset_from_arrays(const PyModel& model, const py::array& x, const py::array& y, const std::string& what);
// x alone (predict): float32 [N, C, H, W] matching the model's input.
Tensor images_from_array(const PyModel& model, const py::array& x, const std::string& what);

void bind_errors(py::module_& m);
void bind_tensor(py::module_& m);
void bind_model(py::module_& m);
void bind_fit(py::class_<PyModel>& model);
void bind_datasets(py::module_& m);
void bind_jobs(py::module_& m);

}  // namespace cudl::python
