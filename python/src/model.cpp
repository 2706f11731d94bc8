// cudl.model(), cudl.load() and the model's evaluate/predict/save/summary (fit lives in fit.cpp).
#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "cudl/engine/io/files.hpp"
#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/checkpoint/saved_run.hpp"
#include "cudl/models/onnx/onnx.hpp"
#include "cudl/models/train/trainer.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "python/src/common.hpp"

namespace cudl::python {
namespace {

std::string shape_text(const Shape& s) {
  std::string text = "(None";
  for (int i = 1; i < s.rank(); ++i) text += fmt::format(", {}", s[i]);
  return text + ")";
}

// Builds `name` (a zoo name or a model file) on `device`, initialised from `seed`.
std::unique_ptr<PyModel> build_model(const std::string& name, const std::string& device, std::uint64_t seed,
                                     const std::string& precision) {
  auto m = std::make_unique<PyModel>();
  m->ctx = std::make_unique<Context>(parse_device(device));
  try {
    m->ctx->set_precision(parse_precision(precision));
  } catch (const Error& e) {
    throw ValueError(e.what());
  }
  std::optional<OnnxModel> onnx;
  if (is_model_file(name)) {
    check_input_file("model", name);
    ModelFile file = reading_file([&] { return read_model_file(name); });
    m->spec = std::move(file.spec);
    m->net = std::move(file.model);
  } else if (is_onnx_file(name)) {
    check_input_file("model", name);
    onnx = reading_file([&] { return read_onnx(name); });
    m->spec = onnx->file.spec;
    m->net = std::move(onnx->file.model);
  } else {
    try {
      m->spec = model_spec(name);
    } catch (const Error& e) {
      throw ValueError(e.what());
    }
    m->net = make_model(name);
  }
  m->name = name;
  m->seed = seed;
  {
    py::gil_scoped_release release;
    m->net.build(*m->ctx, seed);
    // An ONNX file brings its weights (as `cudl predict --model NAME.onnx` reads them), not the seed's.
    if (onnx)
      reading_file([&] {
        load_onnx_weights(*onnx, *m->ctx, m->net);
        return 0;
      });
  }
  return m;
}

std::string summary(const PyModel& m) {
  const Shape input{1, m.spec.input[0], m.spec.input[1], m.spec.input[2]};
  const auto rows = m.net.summary(input, m.ctx->autocast_dtype());
  std::size_t name_w = 16, type_w = 40;
  for (const auto& r : rows) {
    name_w = std::max(name_w, r.name.size() + 1);
    type_w = std::max(type_w, r.description.size() + 1);
  }
  std::string out = fmt::format("Model: \"{}\"  ({})\n", m.spec.name, m.spec.description);
  out += fmt::format("{:<{}} {:<{}} {:<20} {:>12}\n", "Layer", name_w, "Type", type_w, "Output Shape", "Param #");
  out += std::string(name_w + type_w + 35, '=') + "\n";
  for (const auto& r : rows)
    out += fmt::format("{:<{}} {:<{}} {:<20} {:>12}\n", r.name, name_w, r.description, type_w,
                       shape_text(r.output_shape), r.params);
  out += fmt::format("Total params: {}\n", m.net.parameter_count());
  return out;
}

py::dict evaluate(PyModel& m, const py::array& x, const py::array& y, std::int64_t batch_size) {
  if (batch_size < 1) bad_value("evaluate: batch_size {} must be >= 1", batch_size);
  ArrayDataset d = dataset_from_arrays(m, x, y, "evaluate");
  EvalResult r;
  {
    py::gil_scoped_release release;
    r = cudl::evaluate(*m.ctx, m.net, d.data, batch_size);
  }
  py::dict out;
  out["loss"] = r.loss;
  out["accuracy"] = r.accuracy;
  return out;
}

py::array predict(PyModel& m, const py::array& x, std::int64_t batch_size) {
  if (batch_size < 1) bad_value("predict: batch_size {} must be >= 1", batch_size);
  const Tensor images = images_from_array(m, x, "predict");
  const std::int64_t n = images.dim(0);
  const Shape out_shape = m.net.output_shape(Shape{1, m.spec.input[0], m.spec.input[1], m.spec.input[2]});
  std::int64_t per_sample = 1;
  for (int i = 1; i < out_shape.rank(); ++i) per_sample *= out_shape[i];
  std::vector<py::ssize_t> dims{static_cast<py::ssize_t>(n)};
  for (int i = 1; i < out_shape.rank(); ++i) dims.push_back(static_cast<py::ssize_t>(out_shape[i]));
  py::array_t<float> out(dims);
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    Context& ctx = *m.ctx;
    auto hold = m.net.hold_parameters_constant(ctx);
    for (std::int64_t begin = 0; begin < n; begin += batch_size) {
      const std::int64_t end = std::min(n, begin + batch_size);
      Tensor batch = images.slice(begin, end).to(ctx);
      const std::vector<float> y = m.net.forward(ctx, batch, false).cast(ctx, DType::f32).to_vector(ctx);
      std::copy(y.begin(), y.end(), dst + begin * per_sample);
    }
  }
  return out;
}

void save(PyModel& m, const std::string& path) {
  CheckpointInfo info;
  info.model = m.name;
  info.seed = m.seed;
  info.extra = model_metadata(m);
  info.extra["model_fingerprint"] = fmt::format("{:016x}", model_fingerprint(m.net));
  py::gil_scoped_release release;
  reading_file([&] {
    save_checkpoint(path, *m.ctx, m.net, nullptr, info);
    return 0;
  });
}

std::unique_ptr<PyModel> load(const std::string& path, const std::string& device, const std::string& precision) {
  check_input_file("load", path);
  const SavedRun saved = reading_file([&] { return read_saved_run(path); });
  const std::string name = reading_file([&] { return resolve_model("load", "", path, saved); });
  auto m = build_model(name, device, saved.seed ? saved.seed : 1, precision);
  py::gil_scoped_release release;
  reading_file([&] { return load_weights(path, *m->ctx, m->net, /*allow_unused=*/false); });
  return m;
}

}  // namespace

std::map<std::string, std::string> model_metadata(const PyModel& m) {
  std::map<std::string, std::string> meta = training_metadata(m.spec.input, {});
  if (is_model_file(m.name)) {
    const std::vector<std::uint8_t> bytes = reading_file([&] { return io::read_file(m.name, "Model.save"); });
    meta[kModelFileKey] = std::string(bytes.begin(), bytes.end());
  }
  return meta;
}

Tensor images_from_array(const PyModel& m, const py::array& x, const std::string& what) {
  if (!x.dtype().is(py::dtype::of<float>()))
    bad_value("{}: x has dtype {}: expected float32 images in [0, 1] (x.astype(numpy.float32))", what,
              numpy_dtype_name(x.dtype()));
  const Shape& in = m.spec.input;
  const bool ok = x.ndim() == 4 && x.shape(1) == in[0] && x.shape(2) == in[1] && x.shape(3) == in[2];
  if (!ok) {
    std::vector<py::ssize_t> dims(x.shape(), x.shape() + x.ndim());
    bad_value("{}: x has shape ({}): model {} expects (N, {}, {}, {})", what, fmt::join(dims, ", "), m.spec.name, in[0],
              in[1], in[2]);
  }
  if (x.shape(0) == 0) bad_value("{}: x holds no images", what);
  PyTensor t = borrow_array(x, what);
  return t.tensor;  // the caller keeps x alive for the call
}

ArrayDataset dataset_from_arrays(const PyModel& m, const py::array& x, const py::array& y, const std::string& what) {
  ArrayDataset d;
  d.data.images = images_from_array(m, x, what);
  const std::int64_t n = d.data.images.dim(0);
  if (y.ndim() != 1 || y.shape(0) != n)
    bad_value("{}: y has shape ({}): expected ({},), one class index per image of x", what,
              fmt::join(std::vector<py::ssize_t>(y.shape(), y.shape() + y.ndim()), ", "), n);
  check_contiguous(y, what + ": y");
  auto labels = std::make_shared<std::vector<std::int32_t>>(static_cast<std::size_t>(n));
  const int classes = m.spec.num_classes;
  auto copy = [&](auto* src) {
    for (std::int64_t i = 0; i < n; ++i) {
      const auto v = src[i];
      if (v < 0 || (classes > 0 && v >= classes))
        bad_value("{}: y[{}] = {} is outside [0, {}) (model {} has {} classes)", what, i, static_cast<long long>(v),
                  classes, m.spec.name, classes);
      (*labels)[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
    }
  };
  if (y.dtype().is(py::dtype::of<std::int32_t>()))
    copy(static_cast<const std::int32_t*>(y.data()));
  else if (y.dtype().is(py::dtype::of<std::int64_t>()))
    copy(static_cast<const std::int64_t*>(y.data()));
  else
    bad_value("{}: y has dtype {}: expected int32 or int64 class indices", what, numpy_dtype_name(y.dtype()));
  d.data.labels = Tensor::borrow(labels->data(), Shape{n}, DType::i32, Device::cpu());
  d.data.num_classes = classes;
  d.data.name = "arrays";
  d.keep = labels;
  return d;
}

void bind_model(py::module_& m) {
  auto model = py::class_<PyModel>(m, "Model", "A network built on its own device; cudl.model() makes one.");
  model.def_property_readonly("name", [](const PyModel& p) { return p.name; })
      .def_property_readonly("parameter_count", [](const PyModel& p) { return p.net.parameter_count(); })
      .def_property_readonly(
          "input_shape",
          [](const PyModel& p) { return py::make_tuple(p.spec.input[0], p.spec.input[1], p.spec.input[2]); })
      .def_property_readonly("num_classes", [](const PyModel& p) { return p.spec.num_classes; })
      .def_property_readonly("device", [](const PyModel& p) { return p.ctx->device().str(); })
      .def("summary", &summary, "The layers, their output shapes and parameter counts, as text")
      .def("evaluate", &evaluate, py::arg("x"), py::arg("y"), py::arg("batch_size") = 128,
           "Loss and accuracy on (x, y): {'loss': ..., 'accuracy': ...}")
      .def("predict", &predict, py::arg("x"), py::arg("batch_size") = 128,
           "The network's outputs (a classifier's logits) for float32 images x of shape (N, C, H, W)")
      .def("save", &save, py::arg("path"), "A checkpoint (safetensors) that cudl.load and the CLI read")
      .def("__repr__", [](const PyModel& p) {
        return fmt::format("cudl.Model('{}', parameters={}, device={})", p.name, p.net.parameter_count(),
                           p.ctx->device());
      });
  bind_fit(model);
  m.def("model", &build_model, py::arg("name"), py::arg("device") = "cpu", py::arg("seed") = 1,
        py::arg("precision") = "fp32",
        "A model from the zoo ('mnist_cnn', 'mlp', 'vgg16', ...) or a JSON model file, initialised from seed, or an "
        "ONNX file with its own weights");
  m.def("load", &load, py::arg("path"), py::arg("device") = "cpu", py::arg("precision") = "fp32",
        "The model a checkpoint (Model.save, cudl train --save) holds, with its weights");
}

}  // namespace cudl::python
