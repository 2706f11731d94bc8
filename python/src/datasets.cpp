// cudl.datasets: the library's readers (engine/io/datasets.hpp) as numpy arrays, with no copy:
// each array views the tensor the reader filled. Images are float32 (N, C, H, W) in [0, 1], labels
// int32 (N,), as Model.fit takes them.
#include "python/src/common.hpp"

namespace cudl::python {
namespace {

py::tuple arrays(const Dataset& d) {
  const Dataset& in_memory = d.listed() ? decode_all(d) : d;
  return py::make_tuple(host_tensor_to_numpy(in_memory.images), host_tensor_to_numpy(in_memory.labels));
}

// ((x_train, y_train), (x_test, y_test)) as Keras' load_data() returns them; a flat class folder
// (no train/ and test/) has no test split: (x_test, y_test) is None.
py::tuple splits(const std::string& dir, DataSplits (*load)(const std::string&)) {
  DataSplits s;
  {
    py::gil_scoped_release release;
    s = reading_file([&] { return load(dir); });
  }
  return py::make_tuple(arrays(s.train), s.test.size() > 0 ? py::object(arrays(s.test)) : py::object(py::none()));
}

}  // namespace

void bind_datasets(py::module_& m) {
  py::module_ d = m.def_submodule("datasets", "Datasets as numpy arrays: ((x_train, y_train), (x_test, y_test))");
  d.def(
      "mnist", [](const std::string& dir) { return splits(dir, &load_mnist_dir); }, py::arg("path"),
      "MNIST's four IDX files (optionally .gz) in `path` (tools/fetch-mnist.sh puts them in data/mnist)");
  d.def(
      "fashion_mnist", [](const std::string& dir) { return splits(dir, &load_mnist_dir); }, py::arg("path"),
      "Fashion-MNIST's IDX files in `path` (same names as MNIST's)");
  d.def(
      "cifar10", [](const std::string& dir) { return splits(dir, &load_cifar10_dir); }, py::arg("path"),
      "CIFAR-10's binary batches in `path` or its cifar-10-batches-bin folder");
  d.def(
      "image_folder",
      [](const std::string& dir, int size) {
        if (size < 1) bad_value("image_folder: size {} must be >= 1", size);
        DataSplits s;
        {
          py::gil_scoped_release release;
          s = reading_file([&] { return load_image_folder(dir, size); });
        }
        py::list names;
        for (const auto& n : s.train.class_names) names.append(n);
        return py::make_tuple(arrays(s.train), s.test.size() > 0 ? py::object(arrays(s.test)) : py::object(py::none()),
                              names);
      },
      py::arg("path"), py::arg("size"),
      "path/train/<class>/*.png|jpg and path/test/<class>/... (or a flat path/<class>/...), decoded to RGB, shorter "
      "side resized to `size` and centre-cropped: ((x_train, y_train), (x_test, y_test) or None, class_names)");
}

}  // namespace cudl::python
