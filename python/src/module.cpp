// The extension module cudl._cudl; python/cudl/__init__.py re-exports it as `cudl`.
#include "cudl/engine/cpu_threads.hpp"
#include "cudl/engine/device.hpp"
#include "python/src/common.hpp"

PYBIND11_MODULE(_cudl, m) {
  namespace py = pybind11;
  using namespace cudl::python;
  m.doc() = "cudl: a lean C++20/CUDA deep-learning engine, from Python";
  m.attr("__version__") = cudl::build_info().cudl_version;
  bind_errors(m);
  bind_tensor(m);
  bind_model(m);
  bind_datasets(m);
  bind_jobs(m);
  m.def("set_threads", &cudl::set_cpu_threads, py::arg("threads"),
        "Host threads of the CPU backend (OpenMP and OpenBLAS), for the whole process.");
  m.def("threads", &cudl::cpu_threads, "The CPU backend's current host thread count.");
  m.def("cuda_device_count", &cudl::cuda_device_count, "CUDA devices visible (0 without a GPU or a CUDA build).");
}
